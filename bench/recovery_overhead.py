"""Cost of recovery on the hot path: emitting to a room with offsets and logging, against python-socketio's plain
AsyncManager measured in the same run (same clients, same machine).

    .venv/bin/python bench/recovery_overhead.py [--clients 20] [--events 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time
from typing import Any

import socketio
import uvicorn

from chatwire.backends.eventlog_memory import MemoryEventLog
from chatwire.transport.recovery import RecoveringManager, RecoveringServer

ROOM = "user:bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(recovering: bool) -> socketio.AsyncServer:
    if recovering:
        manager = RecoveringManager()
        manager.eventlog = MemoryEventLog(10_000, 300)
        sio: socketio.AsyncServer = RecoveringServer(async_mode="asgi", client_manager=manager)
    else:
        sio = socketio.AsyncServer(async_mode="asgi")

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, ROOM)
        if recovering and isinstance(sio.manager, RecoveringManager):
            sio.manager.offset_sids.add(sid)  # what Recovery does for a client that uses offsets

    return sio


async def run(recovering: bool, clients: int, events: int) -> float:
    sio = build(recovering)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(socketio.ASGIApp(sio), host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    done = asyncio.Event()
    counts = [0] * clients
    conns: list[socketio.AsyncClient] = []
    for i in range(clients):
        c = socketio.AsyncClient()

        def handler(i: int = i) -> Any:
            async def on(data: Any, *_offset: str) -> None:
                counts[i] += 1
                if all(n >= events for n in counts):
                    done.set()

            return on

        c.on("events", handler())
        await c.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
        conns.append(c)
    start = time.perf_counter()
    for n in range(events):
        await sio.emit("events", {"n": n, "delta": "token "}, room=ROOM)
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    for c in conns:
        await c.disconnect()
    await asyncio.sleep(0.2)
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    plain: list[float] = []
    recovering: list[float] = []
    for i in range(args.rounds):
        # alternate which one goes first, so warm-up favours neither
        for recover in (False, True) if i % 2 == 0 else (True, False):
            elapsed = await run(recover, args.clients, args.events)
            (recovering if recover else plain).append(elapsed)
    p, r = min(plain), min(recovering)
    print(f"{args.clients} clients x {args.events} events, best of {args.rounds}")
    print(f"python-socketio AsyncManager: {p:.3f} s")
    print(f"chatwire RecoveringManager (log + offsets): {r:.3f} s")
    print(f"ratio recovering/plain: {r / p:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
