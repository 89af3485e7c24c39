"""Sub-commands (being written)."""


def register(subparsers) -> None:
    """Add this module's sub-commands."""
