"""Engine.IO v4 server over plain ASGI: long-polling and WebSocket transports, the upgrade, heartbeats and limits.

Nothing here reaches into a server's internals: HTTP requests and WebSocket connections arrive as ASGI scopes and
every byte leaves through the ASGI `send` callable. Each session owns one outbox; whichever transport currently
carries the session (a waiting GET, or the WebSocket writer) drains it, so every packet takes the same path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs

from chatwire.engine.state import EIO_TRANSITIONS, EioState, IllegalTransition, ProtocolError, check
from chatwire.engine.timers import Timer, TimerWheel

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Frame = str | bytes

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0123456"
RECORD_SEPARATOR = "\x1e"
# An ASGI extension of chatwire's own WebSocket protocol (chatwire/engine/wsprotocol.py): a list of frames in one
# message, written to the socket together ("flush": true writes them at once, so later frames take another write).
# Without it in the scope every frame is its own `websocket.send`.
SEND_BATCH = "chatwire.websocket.send_batch"
# Another extension of that protocol: `scope["extensions"][DIRECT]` is the connection itself, a DirectWebSocket.
# A session it carries writes on it synchronously at the end of the loop turn in which frames were queued (no
# writer task per session), and it hands the session each text message first (a pong never wakes the app's task).
DIRECT = "chatwire.websocket.direct"
# Seconds between a frame pushed `alone` (a CONNECT reply) and the write after it, so a client that reads one
# frame per listener (the protocol's compliance suite does) gets them in separate reads, as from Node's server.
ALONE_GAP = float(os.environ.get("CHATWIRE_ENGINE_ALONE_GAP", "0.01"))
NOOP_EVERY = 0.1  # seconds between noops that release a poll while an upgrade is under way
# The heartbeat wheel's buckets are this fraction of the shorter of pingInterval and pingTimeout wide (200 ms at the
# defaults, never under the general wheel's 5 ms): a ping leaves, and a late pong is judged, at most that much
# late. Idle, an event-loop wakeup per due bucket is the cost, not the precision: thousands of sockets whose pings
# fall into a few buckets a second are pinged a few dozen per wakeup, and their pongs come back together.
HEARTBEAT_SLACK = 0.01

# Engine.IO's own error codes for rejected HTTP requests (the reference server's numbering).
TRANSPORT_UNKNOWN = (0, "Transport unknown")
SESSION_UNKNOWN = (1, "Session ID unknown")
BAD_HANDSHAKE_METHOD = (2, "Bad handshake method")
BAD_REQUEST = (3, "Bad request")
FORBIDDEN = (4, "Forbidden")
UNSUPPORTED_VERSION = (5, "Unsupported protocol version")


@dataclass(frozen=True)
class EngineConfig:
    """Engine.IO settings; intervals are whole milliseconds, advertised to clients exactly as given."""

    ping_interval_ms: int = 25_000
    ping_timeout_ms: int = 20_000
    upgrade_timeout_ms: int = 10_000
    max_payload: int = 1_000_000
    # A peer that does not read is closed past this many unsent frames.
    max_buffered_frames: int = 10_000
    # Slow readers: when a session's unsent frames pass either bound, they are dropped and replaced by what the
    # server's `on_backlog_overflow` gives (pings and pongs stay). The oldest frame, when it is one frame as
    # sent, does not count against the byte bound (a large event waits its turn). None: no bound.
    # Both bounds judge only a peer that is behind (see Session.push), never a burst queued in one loop turn.
    backlog_frames: int | None = None
    backlog_bytes: int | None = None
    path: str = "/socket.io/"
    # None: no CORS headers at all; "*": any origin; a sequence: exactly those origins (others get 403).
    cors_allowed_origins: str | Sequence[str] | None = None
    allow_polling: bool = True
    allow_websocket: bool = True
    # Seconds a frame pushed with `linger=True` may wait for company before it is written (see Session.push_coalescing);
    # 0: written at the end of the loop turn like any other.
    linger: float = 0.0
    # A lingering burst past either bound is written at once.
    linger_max_frames: int = 64
    linger_max_bytes: int = 64 << 10


class WebSocketClosedError(OSError):
    """Writing on a WebSocket that is closed or closing (what a DirectWebSocket raises)."""


class DirectWebSocket(Protocol):
    """The connection behind the DIRECT extension (chatwire/engine/wsprotocol.py implements it)."""

    @property
    def writable(self) -> bool:
        """False while the transport's buffer is over its high-water mark, or once the connection is closing."""
        ...

    def write_frames(self, frames: Sequence[Frame], flush: bool = False) -> None:
        """Frame and buffer these (text for str, binary for bytes); `flush`: write the buffer now. Raises
        WebSocketClosedError once the connection is closing."""
        ...

    def close(self, code: int) -> None:
        """Start the closing handshake with `code` (nothing if it is already closing)."""
        ...

    def attach(self, consumer: DirectConsumer | None) -> None:
        """From now on hand text messages to `consumer.receive_now` first and tell it when writing may resume."""
        ...

    async def drain(self) -> None:
        """Return once the connection is writable again, or lost."""
        ...


class DirectConsumer(Protocol):
    def receive_now(self, text: str) -> bool:
        """Called in the connection's data path for each text message; True: handled, the app never sees it."""
        ...

    def on_writable(self) -> None:
        """Writing, paused by backpressure, may resume (or the connection was lost)."""
        ...


class EngineHandler(Protocol):
    """What the layer above (Socket.IO) is told about sessions."""

    def on_open(self, session: Session) -> None: ...

    async def on_message(self, session: Session, data: str | bytes) -> None: ...

    def on_close(self, session: Session, reason: str) -> None: ...


class Session:
    """One Engine.IO session: its state machine, its outbox of encoded frames, and its heartbeat timers."""

    __slots__ = (
        "_boundaries",
        "_direct",
        "_flush_pending",
        "_heartbeat",
        "_lingering",
        "_noop_timer",
        "_outbox",
        "_outbox_bytes",
        "_pong_deadline",
        "_probe_close",
        "_tail",
        "_upgrade_timer",
        "_waiter",
        "close_reason",
        "engine",
        "get_active",
        "handler_state",
        "post_active",
        "scope",
        "sending",
        "sid",
        "state",
    )

    def __init__(self, engine: EngineServer, sid: str, scope: Scope, state: EioState) -> None:
        self.engine = engine
        self.sid = sid
        self.scope = scope
        self.state = state
        self.handler_state: Any = None
        self.close_reason: str | None = None
        self._outbox: list[Frame] = []
        self._outbox_bytes = 0
        self._tail: Any = None  # the merge token of the last queued frame (see push_coalescing)
        self._lingering = (
            False  # every queued frame may wait for the engine's linger timer (see push_coalescing)
        )
        self.sending = False  # the WebSocket writer is waiting for the peer to take what it wrote
        self._boundaries: list[int] = []  # outbox positions after which a WebSocket write must end
        self._waiter: asyncio.Future[None] | None = None
        self._direct: DirectWebSocket | None = None  # the connection this session writes on itself (DIRECT)
        self._flush_pending = False  # a direct write is scheduled (end of this turn, or after ALONE_GAP)
        # One timer for the heartbeat, moved for each ping and each pong; `_pong_deadline` is set while a ping waits.
        self._heartbeat: Timer | None = None
        self._pong_deadline: float | None = None
        self._upgrade_timer: Timer | None = None
        self._noop_timer: Timer | None = None
        self._probe_close: Callable[[], None] | None = None
        self.get_active = False
        self.post_active = False

    # --- state machine -------------------------------------------------------------------------------------------
    def transition(self, target: EioState) -> None:
        """Move to `target`, raising IllegalTransition (naming both states) when the protocol forbids it."""
        check("engine.io session " + self.sid, EIO_TRANSITIONS, self.state, target)
        self.state = target
        self._wake()

    @property
    def transport(self) -> str:
        """The transport carrying packets right now ("polling" until an upgrade completes)."""
        return "websocket" if self.state is EioState.WEBSOCKET else "polling"

    # --- outbox --------------------------------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self._direct is not None and not self._flush_pending:
            self._flush_pending = True
            self.engine.flush_soon(self)

    def push(self, frame: Frame) -> None:
        """Queue one encoded Engine.IO frame (a text packet, or a binary message); it takes any lingering ones
        with it, in order."""
        state = self.state
        if state is EioState.CLOSED:
            return
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._tail = None
        self._lingering = False
        # (a WebSocket peer whose writer is not waiting is not behind: the bounds are not even looked at)
        if (self.sending or state is not EioState.WEBSOCKET) and self._over_limits():
            return
        if not self._flush_pending or self._waiter is not None:
            self._wake()

    def push_many(self, frames: Sequence[Frame], *, alone: bool = False) -> None:
        """Queue several frames that belong together (a packet and its binary attachments).

        `alone`: on a WebSocket these frames end a write of their own, so what follows them starts a new one (used
        for handshake replies, which some clients read one listener at a time, as Node's server sends them)."""
        if len(frames) == 1 and not alone:
            self.push(frames[0])
            return
        if self.state is EioState.CLOSED:
            return
        self._outbox.extend(frames)
        self._outbox_bytes += sum(map(len, frames))
        self._tail = None
        self._lingering = False
        if alone:
            self._boundaries.append(len(self._outbox))
        if self._over_limits():
            return
        self._wake()

    def push_coalescing(self, frame: Frame, token: Any, *, linger: bool = False) -> None:
        """Queue a frame that may merge into the one before it while the peer is not reading: `token.key` names
        what may merge, `tail.merge(token)` gives the merged frame and its token (chat deltas of one message).

        `linger`: the frame may also wait up to `config.linger` for others to share its write (many small frames
        cost one write, not one each). Any other push takes it along at once, in order; so does a burst past
        `config.linger_max_*`, the session's close, and `release_linger()`."""
        tail = self._tail
        if tail is not None and self.sending and self._outbox and tail.key == token.key:
            merged_frame, merged = tail.merge(token)
            self._outbox_bytes += len(merged_frame) - len(self._outbox[-1])
            self._outbox[-1] = merged_frame
            self._tail = merged
            self._over_limits()
            return
        if not linger or self.engine.config.linger <= 0:
            self.push(frame)
            if self._outbox and self._outbox[-1] is frame:
                self._tail = token
            return
        if self.state is EioState.CLOSED:
            return
        outbox = self._outbox
        outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._tail = None
        if self._over_limits():
            return
        if outbox and outbox[-1] is frame:
            self._tail = token
        cfg = self.engine.config
        if len(outbox) == 1:  # nothing else waits to be written: this frame starts a lingering group
            self._lingering = True
            self.engine.linger_soon(self)
        elif not self._lingering:
            return  # frames that do not wait are queued, their write is already on its way
        if len(outbox) >= cfg.linger_max_frames or self._outbox_bytes >= cfg.linger_max_bytes:
            self.release_linger()

    def release_linger(self) -> None:
        """Write the lingering frames now (the engine's linger timer, the end of a burst or of a turn)."""
        if self._lingering:
            self._lingering = False
            if self._outbox:
                self._wake()

    def backlog(self) -> tuple[int, int]:
        """Frames and bytes queued and not yet handed to the transport."""
        return len(self._outbox), self._outbox_bytes

    def _behind(self) -> bool:
        """Whether the peer is not keeping up, the only case the outbox bounds judge: on a WebSocket, its writer
        waits for the peer to take what was written (`sending`); on polling, no request waits to carry the frames.
        Frames queued during one loop turn for a peer that reads leave at the end of that turn, however many:
        a burst (a batch published at once, an app emitting in a loop) is no slow reader."""
        if self.state is EioState.WEBSOCKET:
            return self.sending
        return self._waiter is None

    def _over_limits(self) -> bool:
        """Apply the outbox bounds; True when the session was closed for them."""
        if not self._behind():
            return False
        cfg = self.engine.config
        outbox = self._outbox
        if len(outbox) > cfg.max_buffered_frames:
            self.close("send buffer full")
            return True
        if cfg.backlog_frames is None and cfg.backlog_bytes is None:
            return False
        exempt = len(outbox[0]) if outbox and not (len(outbox) == 1 and self._tail is not None) else 0
        if (cfg.backlog_frames is not None and len(outbox) > cfg.backlog_frames) or (
            cfg.backlog_bytes is not None and self._outbox_bytes - exempt > cfg.backlog_bytes
        ):
            kept = [f for f in outbox if f == PING or f == PONG]
            outbox.clear()
            self._boundaries.clear()
            self._tail = None
            outbox.extend(kept)
            self._outbox_bytes = sum(map(len, kept))
            self.engine.backlog_overflows += 1
            replace = self.engine.on_backlog_overflow
            if replace is not None:
                for f in replace(self):
                    outbox.append(f)
                    self._outbox_bytes += len(f)
        return False

    def send_message(self, data: str | bytes) -> None:
        """Send one Engine.IO MESSAGE: text gets the `4` prefix, bytes travel as a binary message."""
        self.push(MESSAGE + data if isinstance(data, str) else data)

    async def wait_output(self) -> None:
        """Return once the outbox has frames that do not linger, or the state has changed (only one consumer
        waits at a time)."""
        if (self._outbox and not self._lingering) or self.state is EioState.CLOSED:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def has_output(self) -> bool:
        return bool(self._outbox)

    def take(self) -> list[Frame]:
        """Hand over everything queued so far."""
        out, self._outbox = self._outbox, []
        self._outbox_bytes = 0
        self._tail = None
        self._lingering = False
        self._boundaries.clear()
        return out

    def take_writes(self) -> list[list[Frame]]:
        """Everything queued so far, cut into the WebSocket writes it must take (one, unless `alone` frames)."""
        if not self._boundaries:
            return [self.take()] if self._outbox else []
        cuts = [0, *self._boundaries]
        out = self.take()
        writes = [out[a:b] for a, b in itertools.pairwise(cuts) if b > a]
        if cuts[-1] < len(out):
            writes.append(out[cuts[-1] :])
        return writes

    def _take_write(self) -> tuple[list[Frame], bool]:
        """The frames of the next WebSocket write, and whether more frames wait behind an `alone` boundary."""
        bounds = self._boundaries
        if not bounds or bounds[0] >= len(self._outbox):
            return self.take(), False
        cut = bounds[0]
        out = self._outbox[:cut]
        del self._outbox[:cut]
        self._boundaries = [b - cut for b in bounds[1:] if b > cut]
        self._outbox_bytes -= sum(map(len, out))
        return out, True

    # --- direct writes (the DIRECT extension) ----------------------------------------------------------------------
    def attach_direct(self, connection: DirectWebSocket) -> None:
        self._direct = connection
        connection.attach(self)
        if self._outbox or self.state is EioState.CLOSED:
            self._wake()

    def detach_direct(self) -> None:
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.attach(None)

    def receive_now(self, text: str) -> bool:
        """DirectConsumer: a pong is handled in the connection's data path; everything else goes to the app."""
        if text == PONG:
            self.on_pong()
            return True
        return False

    def on_writable(self) -> None:
        """DirectConsumer: the transport drained (or was lost); write what waits."""
        if self._direct is not None and not self._flush_pending:
            self._flush_pending = True
            self.engine.flush_soon(self)

    def flush_direct(self, final: bool = False) -> None:
        """Write everything queued on the direct connection: one write, or one per `alone` group ALONE_GAP apart
        (`final`: all at once); once the session is closed and its outbox empty, close the connection."""
        self._flush_pending = False
        direct = self._direct
        if direct is None:
            return
        if not direct.writable:
            self.sending = bool(self._outbox)  # the peer is not reading: on_writable brings us back
            return
        self.sending = False
        try:
            while self._outbox:
                if not self._boundaries:  # the common case, all of it in one write: the outbox is reused
                    outbox = self._outbox
                    n = len(outbox)
                    try:
                        direct.write_frames(outbox, True)
                    finally:  # taken, written or not; what a write pushed meanwhile (nothing today) stays queued
                        del outbox[:n]
                    self._outbox_bytes = sum(map(len, outbox)) if outbox else 0
                    self._tail = None
                    self._lingering = False
                    more = False
                else:
                    frames, more = self._take_write()
                    direct.write_frames(frames, True)
                if more and not final:
                    self._flush_pending = True
                    asyncio.get_running_loop().call_later(ALONE_GAP, self.flush_direct)
                    return
                if not direct.writable:
                    self.sending = bool(self._outbox)
                    return
            if self.state is EioState.CLOSED:
                self._direct = None
                direct.close(1009 if self.close_reason == "payload too large" else 1000)
        except OSError:  # closing or lost: nothing more reaches the peer
            log.debug("direct websocket writes for %s stopped", self.sid, exc_info=True)
            self._direct = None

    # --- heartbeat -----------------------------------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        self._heartbeat = self.engine.heartbeats.call_later(
            self.engine.config.ping_interval_ms / 1000, self._beat
        )

    def _beat(self) -> None:
        """The heartbeat timer: a ping is due (send it, wait pingTimeout for the pong), or its pong is late."""
        timer = self._heartbeat
        if self.state is EioState.CLOSED or timer is None:
            return
        if self._pong_deadline is not None:
            # A pong that reached the socket before the deadline may still be one loop turn from being read:
            # decide on that turn, not this one.
            asyncio.get_running_loop().call_soon(self._ping_timed_out_now)
            return
        wheel = self.engine.heartbeats
        timeout = self.engine.config.ping_timeout_ms / 1000
        # Two clocks: the client gets the whole pingTimeout from the moment the ping actually leaves (a busy server
        # is not the client's fault), while a poll that arrives instead of a pong is judged against the moment the
        # ping was due (see overdue()).
        self._pong_deadline = timer.deadline + timeout
        wheel.move(timer, wheel.now() + timeout)
        direct = self._direct
        if direct is not None and not self._outbox and direct.writable:
            try:  # straight onto the socket: nothing queued that it could overtake
                direct.write_frames((PING,), True)
                return
            except OSError:
                pass  # closing: the receiving side ends the session
        self.push(PING)

    def _ping_timed_out_now(self) -> None:
        if self._pong_deadline is not None and self.state is not EioState.CLOSED:
            self.close("ping timeout")

    def on_pong(self) -> None:
        timer = self._heartbeat
        if self._pong_deadline is None or timer is None:
            return  # a pong nobody asked for changes nothing
        self._pong_deadline = None
        wheel = self.engine.heartbeats
        wheel.move(timer, wheel.now() + self.engine.config.ping_interval_ms / 1000)

    def overdue(self) -> bool:
        """True when a ping is unanswered pingTimeout after it was due, even if the timer has not run yet."""
        deadline = self._pong_deadline
        return deadline is not None and self.engine.heartbeats.now() > deadline

    # --- upgrade -------------------------------------------------------------------------------------------------
    @property
    def upgrade_candidate(self) -> bool:
        """True while a WebSocket holds the claim to take this session over."""
        return self._probe_close is not None

    def claim_probe(self, close_probe: Callable[[], None]) -> bool:
        """A WebSocket arrived for this polling session: it becomes the one upgrade candidate, with a deadline.

        False when the session is not on polling any more or another WebSocket already holds the claim."""
        if self.state is not EioState.POLLING or self._probe_close is not None:
            return False
        self._probe_close = close_probe
        self._upgrade_timer = self.engine.wheel.call_later(
            self.engine.config.upgrade_timeout_ms / 1000, self._upgrade_timed_out
        )
        return True

    def begin_upgrade(self) -> None:
        """The candidate sent its probe: from now on a waiting poll is released so the client can pause polling."""
        self.transition(EioState.UPGRADING)
        self._noop_timer = self.engine.wheel.call_later(NOOP_EVERY, self._release_poll)

    def _release_poll(self) -> None:
        """While upgrading, a waiting GET is answered with a noop every 100 ms (never at once, never in a loop)."""
        if self.state is not EioState.UPGRADING:
            return
        if self._waiter is not None and not self._outbox:
            self._outbox.append(NOOP)
            self._wake()
        self._noop_timer = self.engine.wheel.call_later(NOOP_EVERY, self._release_poll)

    def _upgrade_timed_out(self) -> None:
        close = self._probe_close
        if close is not None and self.state is not EioState.CLOSED:
            self.abandon_upgrade()
            close()

    def abandon_upgrade(self, candidate: Callable[[], None] | None = None) -> None:
        """The probe WebSocket went away or timed out: polling carries the session again.

        `candidate` (the caller's own close callback) keeps a socket that lost its claim from ending a newer one."""
        if candidate is not None and self._probe_close is not candidate:
            return
        if self.state is EioState.UPGRADING:
            self.transition(EioState.POLLING)
        self._clear_upgrade()

    def finish_upgrade(self) -> None:
        self.transition(EioState.WEBSOCKET)
        self._clear_upgrade()

    def _clear_upgrade(self) -> None:
        for timer in (self._upgrade_timer, self._noop_timer):
            if timer is not None:
                timer.cancel()
        self._upgrade_timer = self._noop_timer = None
        self._probe_close = None

    # --- closing -------------------------------------------------------------------------------------------------
    def close(self, reason: str) -> None:
        """End the session (idempotent): timers stop, the carrying transport flushes and closes, the layer above hears."""
        if self.state is EioState.CLOSED:
            return
        probe = self._probe_close
        self.transition(EioState.CLOSED)
        self.close_reason = reason
        for timer in (self._heartbeat, self._upgrade_timer):
            if timer is not None:
                timer.cancel()
        self._clear_upgrade()
        if probe is not None:
            probe()
        self.engine.session_closed(self, reason)


def _each(sessions: list[Session], action: Callable[[Session], None], failed: str) -> None:
    """Run `action` on every session; one session's failure is logged and must not leave the others undone."""
    for session in sessions:
        try:
            action(session)
        except Exception:
            log.exception(failed, session.sid)


def _json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    parsed = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def decode_payload(body: str) -> list[Frame]:
    """Split a long-polling payload into Engine.IO packets; `b`-prefixed records are base64 binary messages."""
    frames: list[Frame] = []
    for record in body.split(RECORD_SEPARATOR):
        if record.startswith("b"):
            try:
                frames.append(base64.b64decode(record[1:], validate=True))
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError("invalid base64 in polling payload") from exc
        else:
            frames.append(record)
    return frames


def encode_payload(frames: Sequence[Frame]) -> str:
    """Join packets for one long-polling response, base64-encoding binary messages."""
    return RECORD_SEPARATOR.join(
        f if isinstance(f, str) else "b" + base64.b64encode(f).decode("ascii") for f in frames
    )


class EngineServer:
    """The Engine.IO ASGI application; requests outside `config.path` go to `other_app` (or get 404)."""

    def __init__(
        self, handler: EngineHandler, config: EngineConfig | None = None, other_app: ASGIApp | None = None
    ) -> None:
        self.handler = handler
        self.config = config or EngineConfig()
        self.other_app = other_app
        self.sessions: dict[str, Session] = {}
        self.wheel = TimerWheel()  # connect, upgrade and noop timers
        cfg = self.config
        self.heartbeats = TimerWheel(
            max(0.005, HEARTBEAT_SLACK * min(cfg.ping_interval_ms, cfg.ping_timeout_ms) / 1000)
        )
        # Slow readers (see EngineConfig.backlog_*): what replaces a dropped backlog, and how often it happened.
        self.on_backlog_overflow: Callable[[Session], Sequence[Frame]] | None = None
        self.backlog_overflows = 0
        self._path = self.config.path.rstrip("/")
        self._dirty: list[Session] = []  # sessions whose direct write waits for the end of this loop turn
        self._lingering: list[Session] = []  # sessions whose frames wait for the linger timer
        self._linger_timer: asyncio.TimerHandle | None = None

    # --- direct writes -------------------------------------------------------------------------------------------
    def flush_soon(self, session: Session) -> None:
        """Have `session.flush_direct()` run at the end of this loop turn. One loop callback per turn for all the
        sessions written to in it, not one each: a token fanned out to many tabs schedules one, not one per tab.
        The session dedups itself (`_flush_pending`), so each is listed at most once per turn."""
        dirty = self._dirty
        if not dirty:
            asyncio.get_running_loop().call_soon(self._flush_dirty)
        dirty.append(session)

    def linger_soon(self, session: Session) -> None:
        """Have `session.release_linger()` run within `config.linger`. One loop timer for all the sessions whose
        frames linger, armed by the first of them: a frame waits at most the linger, and a token fanned out to many
        tabs costs no timer per tab."""
        self._lingering.append(session)
        if self._linger_timer is None:
            self._linger_timer = asyncio.get_running_loop().call_later(
                self.config.linger, self._release_lingering
            )

    def _release_lingering(self) -> None:
        self._linger_timer = None
        sessions, self._lingering = self._lingering, []
        _each(sessions, Session.release_linger, "releasing the lingering frames of %s failed")

    def _flush_dirty(self) -> None:
        # A session written to while these flush goes into the next turn's list.
        dirty, self._dirty = self._dirty, []
        _each(dirty, Session.flush_direct, "direct write of %s failed")

    # --- session bookkeeping -------------------------------------------------------------------------------------
    def _new_session(self, scope: Scope, state: EioState) -> Session:
        sid = secrets.token_urlsafe(15)
        session = Session(self, sid, scope, state)
        self.sessions[sid] = session
        return session

    def _open_packet(self, session: Session, upgrades: list[str]) -> str:
        cfg = self.config
        return OPEN + _json(
            {
                "sid": session.sid,
                "upgrades": upgrades,
                "pingInterval": cfg.ping_interval_ms,
                "pingTimeout": cfg.ping_timeout_ms,
                "maxPayload": cfg.max_payload,
            }
        )

    def _opened(self, session: Session) -> None:
        session.start_heartbeat()
        try:
            self.handler.on_open(session)
        except Exception:
            log.exception("engine.io open handler failed")
            session.close("server error")

    def session_closed(self, session: Session, reason: str) -> None:
        """Called once by Session.close: forget the session and tell the layer above."""
        self.sessions.pop(session.sid, None)
        try:
            self.handler.on_close(session, reason)
        except Exception:
            log.exception("engine.io close handler failed")

    # --- packets from the client ---------------------------------------------------------------------------------
    async def receive_frame(self, session: Session, frame: Frame) -> None:
        """Act on one Engine.IO packet from the client; a protocol violation closes the session."""
        try:
            if isinstance(frame, bytes):
                await self.handler.on_message(session, frame)
                return
            kind = frame[:1]
            if kind == MESSAGE:
                await self.handler.on_message(session, frame[1:])
            elif kind == PONG:
                session.on_pong()
            elif kind == PING:
                session.push(PONG + frame[1:])
            elif kind == CLOSE:
                session.close("client close")
            elif kind == NOOP:
                pass
            else:
                raise ProtocolError(f"unexpected engine.io packet {frame[:10]!r}")
        except ProtocolError as exc:
            log.info("closing engine.io session %s: %s", session.sid, exc)
            session.close("parse error")
        except IllegalTransition as exc:
            log.warning("closing engine.io session %s: %s", session.sid, exc)
            session.close("parse error")

    # --- ASGI entry point ----------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path = scope.get("path", "")
        mine = kind in ("http", "websocket") and (path == self._path or path.startswith(self._path + "/"))
        if not mine:
            if self.other_app is not None:
                await self.other_app(scope, receive, send)
            elif kind == "lifespan":
                await _lifespan(receive, send)
            elif kind == "http":
                await _respond(send, 404, b"Not Found", [])
            elif kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        if kind == "http":
            await self._http(scope, receive, send)
        else:
            await self._websocket(scope, receive, send)

    # --- HTTP long-polling ---------------------------------------------------------------------------------------
    def _cors(self, scope: Scope) -> list[tuple[bytes, bytes]] | None:
        """CORS headers for this request, or None when its origin is not allowed."""
        allowed = self.config.cors_allowed_origins
        origin = _header(scope, b"origin")
        if origin is None or allowed is None:
            return []
        if allowed == "*" or origin in allowed:
            return [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
                (b"vary", b"Origin"),
            ]
        return None

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        cors = self._cors(scope)
        if cors is None:
            await _error(send, FORBIDDEN, [], status=403)
            return
        method = scope.get("method", "GET")
        if method == "OPTIONS":
            requested = _header(scope, b"access-control-request-headers")
            extra = [(b"access-control-allow-methods", b"GET, POST, OPTIONS")]
            if requested:
                extra.append((b"access-control-allow-headers", requested.encode("latin-1")))
            await _respond(send, 204, b"", cors + extra)
            return
        query = _query(scope)
        if query.get("EIO") != "4":
            await _error(send, UNSUPPORTED_VERSION, cors)
            return
        transport = query.get("transport")
        if transport != "polling" or not self.config.allow_polling:
            await _error(send, TRANSPORT_UNKNOWN if transport != "websocket" else BAD_REQUEST, cors)
            return
        sid = query.get("sid")
        if sid is None:
            if method != "GET":
                await _error(send, BAD_HANDSHAKE_METHOD, cors)
                return
            session = self._new_session(scope, EioState.POLLING)
            upgrades = ["websocket"] if self.config.allow_websocket else []
            self._opened(session)  # the heartbeat clock starts before the client can see the handshake
            await _respond(send, 200, self._open_packet(session, upgrades).encode(), cors + _TEXT)
            return
        found = self.sessions.get(sid)
        if found is not None and method == "GET" and found.overdue():
            found.close("ping timeout")
            found = None
        if found is None:
            await _error(send, SESSION_UNKNOWN, cors)
            return
        if found.state not in (EioState.POLLING, EioState.UPGRADING):
            await _error(send, BAD_REQUEST, cors)  # this session moved to WebSocket (or is closing)
            return
        if method == "GET":
            await self._poll(found, send, cors)
        elif method == "POST":
            await self._post(found, receive, send, cors)
        else:
            await _error(send, BAD_REQUEST, cors)

    async def _poll(self, session: Session, send: Send, cors: list[tuple[bytes, bytes]]) -> None:
        if session.get_active:
            session.close("overlapping poll")
            await _error(send, BAD_REQUEST, cors)
            return
        session.get_active = True
        try:
            # a state change wakes the poll too; it only answers with packets, or when it can no longer wait
            while True:
                await session.wait_output()
                if session.has_output() or session.state not in (EioState.POLLING, EioState.UPGRADING):
                    break
        finally:
            session.get_active = False
        if session.state is EioState.WEBSOCKET:
            await _error(send, BAD_REQUEST, cors)  # the upgrade completed while this poll waited
            return
        frames = session.take()
        if session.state is EioState.CLOSED:
            if session.close_reason == "client close":
                frames.append(NOOP)
            elif not frames or frames[-1] != CLOSE:
                frames.append(CLOSE)
        await _respond(send, 200, encode_payload(frames).encode(), cors + _TEXT)

    async def _post(
        self, session: Session, receive: Receive, send: Send, cors: list[tuple[bytes, bytes]]
    ) -> None:
        if session.post_active:
            session.close("overlapping post")
            await _error(send, BAD_REQUEST, cors)
            return
        session.post_active = True
        try:
            body = await _read_body(receive, self.config.max_payload)
            if body is None:
                session.close("payload too large")
                await _respond(send, 413, b"Payload Too Large", cors + _TEXT)
                return
            try:
                frames = decode_payload(body.decode("utf-8"))
            except (UnicodeDecodeError, ProtocolError):
                session.close("parse error")
                await _error(send, BAD_REQUEST, cors)
                return
            for frame in frames:
                if session.state is EioState.CLOSED:
                    break
                await self.receive_frame(session, frame)
            if session.state is EioState.CLOSED and session.close_reason == "parse error":
                await _error(send, BAD_REQUEST, cors)
                return
            await _respond(send, 200, b"ok", cors + _TEXT)
        finally:
            session.post_active = False

    # --- WebSocket -----------------------------------------------------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        query = _query(scope)
        allowed = self.config.cors_allowed_origins
        origin = _header(scope, b"origin")
        # browsers always send Origin on a WebSocket handshake; a client without one is no cross-site page
        if allowed is not None and allowed != "*" and origin is not None and origin not in allowed:
            await _reject_ws(scope, send, FORBIDDEN, 403)
            return
        if query.get("EIO") != "4":
            await _reject_ws(scope, send, UNSUPPORTED_VERSION, 400)
            return
        if query.get("transport") != "websocket" or not self.config.allow_websocket:
            await _reject_ws(scope, send, TRANSPORT_UNKNOWN, 400)
            return
        sid = query.get("sid")
        if sid is not None:
            session = self.sessions.get(sid)
            if session is None:
                await _reject_ws(scope, send, SESSION_UNKNOWN, 400)
                return
            await send({"type": "websocket.accept"})
            if not await self._probe(session, receive, send):
                return
        else:
            await send({"type": "websocket.accept"})
            session = self._new_session(scope, EioState.WEBSOCKET)
            session.push(self._open_packet(session, []))
            self._opened(session)
        await self._run_websocket(session, receive, send)

    async def _probe(self, session: Session, receive: Receive, send: Send) -> bool:
        """Run the upgrade handshake (`2probe`/`3probe`, then `5`); True once the session belongs to this socket."""
        closed = False

        def close_probe() -> None:
            nonlocal closed
            if not closed:
                closed = True
                closing = asyncio.ensure_future(_close_ws(send, 1000))
                _closing.add(closing)
                closing.add_done_callback(_closing.discard)

        if not session.claim_probe(close_probe):
            # a second WebSocket for one session (or one after the upgrade): the protocol says close it
            await _close_ws(send, 1008)
            return False
        try:
            msg = await receive()
            if msg["type"] != "websocket.receive" or msg.get("text") != PING + "probe":
                session.abandon_upgrade(close_probe)
                if not closed:
                    await _close_ws(send, 1008)
                return False
            if session.state is not EioState.POLLING:
                return False  # the session ended meanwhile; closing it closed this socket
            await send({"type": "websocket.send", "text": PONG + "probe"})
            session.begin_upgrade()
            while True:
                msg = await receive()
                if msg["type"] != "websocket.receive" or session.state is not EioState.UPGRADING:
                    session.abandon_upgrade(close_probe)
                    if not closed and msg["type"] == "websocket.receive":
                        await _close_ws(send, 1008)
                    return False
                text = msg.get("text")
                if text == UPGRADE:
                    session.finish_upgrade()
                    return True
                if text == NOOP:
                    continue
                session.abandon_upgrade(close_probe)
                await _close_ws(send, 1008)
                return False
        except Exception:
            session.abandon_upgrade(close_probe)
            raise

    async def _run_websocket(self, session: Session, receive: Receive, send: Send) -> None:
        direct: DirectWebSocket | None = session.scope.get("extensions", {}).get(DIRECT)
        writer: asyncio.Future[None] | None = None
        if direct is not None:
            session.attach_direct(direct)
        else:
            writer = asyncio.ensure_future(self._ws_writer(session, send))
        limit = self.config.max_payload
        try:
            while session.state is not EioState.CLOSED:
                msg = await receive()
                if msg["type"] != "websocket.receive":
                    session.close("transport close")
                    break
                text = msg.get("text")
                frame: Frame
                if text is not None:
                    frame = text
                else:
                    frame = bytes(msg.get("bytes") or b"")
                if len(frame) > limit:
                    session.close("payload too large")
                    break
                if frame == "":  # a text message must carry a packet type; an empty binary one is data
                    session.close("parse error")
                    break
                await self.receive_frame(session, frame)
                # an idle session waits in `receive` for a long time: not with its last message in its locals
                msg = frame = text = None  # type: ignore[assignment]
        except Exception:
            session.close("transport error")
            raise
        finally:
            session.close("transport close")
            if writer is not None:
                await writer
            else:
                await _finish_direct(session, direct)

    async def _ws_writer(self, session: Session, send: Send) -> None:
        batch = SEND_BATCH in session.scope.get("extensions", {})
        try:
            while True:
                await session.wait_output()
                if batch:  # the server takes a whole list in one message (and one write)
                    writes = session.take_writes()
                    for n, frames in enumerate(writes, 1):
                        if n > 1:  # what follows a handshake reply waits a moment (see ALONE_GAP)
                            await asyncio.sleep(ALONE_GAP)
                        session.sending = True
                        try:
                            await send({"type": SEND_BATCH, "frames": frames, "flush": n < len(writes)})
                        finally:
                            session.sending = False
                    if session.state is EioState.CLOSED:
                        break
                    continue
                frames = session.take()
                session.sending = True
                try:
                    for frame in frames:
                        if isinstance(frame, str):
                            await send({"type": "websocket.send", "text": frame})
                        else:
                            await send({"type": "websocket.send", "bytes": frame})
                finally:
                    session.sending = False
                if session.state is EioState.CLOSED:
                    break
            code = 1009 if session.close_reason == "payload too large" else 1000
            await send({"type": "websocket.close", "code": code})
        except Exception:  # the peer is gone; nothing left to tell it
            log.debug("websocket writer for %s stopped", session.sid, exc_info=True)


_TEXT = [(b"content-type", b"text/plain; charset=UTF-8")]
_closing: set[asyncio.Future[None]] = set()  # probe closes under way, referenced until they finish


async def _finish_direct(session: Session, direct: DirectWebSocket | None) -> None:
    """Write what the closed session still holds, then its close frame, waiting out backpressure."""
    try:
        while direct is not None and session.has_output():
            session.flush_direct(final=True)
            if session.has_output():
                await direct.drain()
                if not direct.writable:
                    break  # lost
        session.flush_direct(final=True)
    finally:
        session.detach_direct()


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send, error: tuple[int, str], cors: list[tuple[bytes, bytes]], status: int = 400
) -> None:
    body = _json({"code": error[0], "message": error[1]}).encode()
    await _respond(send, status, body, [*cors, (b"content-type", b"application/json")])


async def _reject_ws(scope: Scope, send: Send, error: tuple[int, str], status: int) -> None:
    """Refuse a WebSocket handshake with a real HTTP status when the server offers the ASGI extension for it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = _json({"code": error[0], "message": error[1]}).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def _close_ws(send: Send, code: int) -> None:
    try:
        await send({"type": "websocket.close", "code": code})
    except Exception:
        log.debug("websocket already closed", exc_info=True)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return b"".join(chunks)
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
