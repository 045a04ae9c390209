"""Agents: tools a model may call, and later the run loop that calls them."""
