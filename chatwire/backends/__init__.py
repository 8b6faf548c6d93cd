"""Backend interfaces (typing.Protocol) and their implementations: memory (embedded) and Redis (fleet)."""
