"""chatwire: a real-time event server for AI chat applications."""

__version__ = "0.1.0"
