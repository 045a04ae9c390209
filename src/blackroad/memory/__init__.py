"""Memory: conversations, long-term memories and knowledge bases."""
