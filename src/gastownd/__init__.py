"""gastownd: the daemon that owns a Gas Town's event log and agent sessions."""

from gastown_client import __version__

__all__ = ["__version__"]
