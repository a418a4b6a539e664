"""Who is calling: credentials, their verification, and the principal they resolve to."""
