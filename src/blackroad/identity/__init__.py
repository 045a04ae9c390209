"""Identity: who is calling. For now, the shared secrets that guard an API."""
