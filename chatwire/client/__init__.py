"""chatwire's Python SDK."""
