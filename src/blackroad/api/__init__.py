"""HTTP surfaces: the OpenAI API under /v1, error mapping, request recording."""
