"""The package's version: a leaf module, so that the client's own modules can name it without
importing ``gastown_client`` itself (whose ``__init__`` re-exports them: that was a circle)."""

__version__ = "0.1.0"
