"""Model files: GGUF metadata, chat templates, the catalog and the bundled models."""
