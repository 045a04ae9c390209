"""Inference engines: the ``Engine`` contract and its adapters."""
