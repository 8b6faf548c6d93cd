"""chatwire's own Engine.IO v4 / Socket.IO v5 server, written against ASGI only."""

from chatwire.engine.eio import EngineConfig, EngineServer, Session
from chatwire.engine.server import ConnectionRefused, Namespace, Socket, SocketServer
from chatwire.engine.state import IllegalTransition, ProtocolError

__all__ = [
    "ConnectionRefused",
    "EngineConfig",
    "EngineServer",
    "IllegalTransition",
    "Namespace",
    "ProtocolError",
    "Session",
    "Socket",
    "SocketServer",
]
