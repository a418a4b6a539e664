"""LLM providers behind one protocol: the built-in fake, and the provider chosen at render time."""
