"""Pydantic models at the edges of the service: what requests carry and responses return."""
