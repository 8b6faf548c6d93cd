"""Explicit per-connection state machines: every transition is checked against a table, never assigned ad hoc."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

S = TypeVar("S", bound=enum.Enum)


class IllegalTransition(RuntimeError):
    """A connection was asked to move between two states its machine does not connect."""

    def __init__(self, machine: str, source: enum.Enum, target: enum.Enum) -> None:
        super().__init__(f"{machine}: illegal transition {source.name} -> {target.name}")
        self.source = source
        self.target = target


class ProtocolError(ValueError):
    """The peer sent something the protocol does not allow; the connection is closed because of it."""


class EioState(enum.Enum):
    """Where an Engine.IO session is: which transport carries it, or closed."""

    POLLING = "polling"
    UPGRADING = "upgrading"
    WEBSOCKET = "websocket"
    CLOSED = "closed"


class SioState(enum.Enum):
    """Where a Socket.IO connection is: waiting for its first CONNECT, serving namespaces, or gone."""

    AWAITING_CONNECT = "awaiting_connect"
    ACTIVE = "active"
    CLOSED = "closed"


class ReadState(enum.Enum):
    """Whether the next Engine.IO message is a packet or a binary attachment of the packet before it."""

    PACKET = "packet"
    ATTACHMENTS = "attachments"


EIO_TRANSITIONS: Mapping[EioState, frozenset[EioState]] = {
    EioState.POLLING: frozenset({EioState.UPGRADING, EioState.CLOSED}),
    EioState.UPGRADING: frozenset({EioState.POLLING, EioState.WEBSOCKET, EioState.CLOSED}),
    EioState.WEBSOCKET: frozenset({EioState.CLOSED}),
    EioState.CLOSED: frozenset(),
}

SIO_TRANSITIONS: Mapping[SioState, frozenset[SioState]] = {
    SioState.AWAITING_CONNECT: frozenset({SioState.ACTIVE, SioState.CLOSED}),
    SioState.ACTIVE: frozenset({SioState.CLOSED}),
    SioState.CLOSED: frozenset(),
}

READ_TRANSITIONS: Mapping[ReadState, frozenset[ReadState]] = {
    ReadState.PACKET: frozenset({ReadState.ATTACHMENTS}),
    ReadState.ATTACHMENTS: frozenset({ReadState.PACKET}),
}


def check(machine: str, table: Mapping[S, frozenset[S]], source: S, target: S) -> None:
    """Raise IllegalTransition unless `table` allows `source -> target`."""
    if target not in table.get(source, frozenset()):
        raise IllegalTransition(machine, source, target)
