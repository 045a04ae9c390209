"""The ``blackroad`` command (Typer): one module per command group."""
