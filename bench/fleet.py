"""Fleet benchmark: chatwire's per-room routing vs python-socketio's stock Redis manager, same run, same machine.

Three processes share one Redis. Process 0 hosts the sender, processes 1 and 2 host receivers in one room:
  1. cross-process throughput and latency: the sender emits `events:channel` typing events; receivers on
     processes 1 and 2 record arrival times (k-th arrival matches the k-th send: order is preserved per room);
  2. CPU spent by a process with NO member of the room (process 2 after its receivers leave) while 10,000 events
     go to that room: with per-room topics it never receives them; with one shared channel it decodes each.

Run: python -m bench.fleet [--events 2000] [--idle-events 10000] [--receivers 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import socketio

from bench.common import (
    CLK_TCK,
    REDIS_URL,
    Proc,
    chatwire_argv,
    cpu_seconds,
    free_port,
    fresh_postgres,
    percentile,
    table,
)


@dataclass
class Receiver:
    client: socketio.AsyncClient
    arrivals: list[float] = field(default_factory=list)


@dataclass
class Result:
    subject: str
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    idle_cpu_s: float
    idle_events: int


async def connect(url: str, auth: dict[str, Any]) -> Receiver:
    client = socketio.AsyncClient(reconnection=False)
    rec = Receiver(client)

    @client.on("events:channel")
    async def on_event(payload: Any, *rest: Any) -> None:
        if payload.get("data", {}).get("type") == "typing":
            rec.arrivals.append(time.monotonic())

    await client.connect(url, auth=auth, socketio_path="ws/socket.io", transports=["websocket"])
    return rec


async def blast(
    sender: socketio.AsyncClient, channel_id: str, n: int, window: int = 200, rate: float | None = None
) -> list[float]:
    """Send n typing events, at most `window` unacknowledged at once (or paced at `rate`/s); returns send times."""
    sends: list[float] = []
    sem = asyncio.Semaphore(window)
    done = asyncio.Event()
    acked = 0

    def ack(*_: Any) -> None:
        nonlocal acked
        acked += 1
        sem.release()
        if acked == n:
            done.set()

    payload = {"channel_id": channel_id, "data": {"type": "typing", "data": {"typing": True}}}
    start = time.monotonic()
    for i in range(n):
        await sem.acquire()
        if rate is not None:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        sends.append(time.monotonic())
        await sender.emit("events:channel", payload, callback=ack)
    await asyncio.wait_for(done.wait(), 120)
    return sends


async def wait_arrivals(receivers: list[Receiver], n: int, timeout: float = 60) -> None:
    """Poll until every receiver has n arrivals (they are appended by socket.io client tasks)."""
    deadline = time.monotonic() + timeout
    while any(len(r.arrivals) < n for r in receivers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def measure(receivers: list[Receiver], sends: list[float]) -> tuple[float, float, float]:
    latencies = [(a - sends[i]) * 1000 for r in receivers for i, a in enumerate(r.arrivals[: len(sends)])]
    total = sum(min(len(r.arrivals), len(sends)) for r in receivers)
    last = max(r.arrivals[-1] for r in receivers if r.arrivals)
    return total / (last - sends[0]), percentile(latencies, 0.5), percentile(latencies, 0.99)


async def run_chatwire(args: argparse.Namespace, workdir: Path) -> Result:
    prefix = f"cwbench:{uuid.uuid4().hex[:8]}:"
    async with fresh_postgres() as db_url:
        env = {
            "CHATWIRE_REDIS_URL": REDIS_URL,
            "CHATWIRE_REDIS_PREFIX": prefix,
            "CHATWIRE_DATABASE_URL": db_url,
            "CHATWIRE_JWT_SECRET": "bench",
            "CHATWIRE_RATE_LIMIT_EVENTS": "1000000",
            "CHATWIRE_RATE_LIMIT_BURST": "1000000",
            # Every load-generator connection comes from one loopback address, as one user.
            "CHATWIRE_RATE_LIMIT_IP_CONNECTS": "0",
            "CHATWIRE_HTTP_MAX_PENDING_PER_IP": "0",
            "CHATWIRE_RATE_LIMIT_IP_EVENTS": "0",
            "CHATWIRE_MAX_CONNECTIONS_PER_USER": "0",
            "CHATWIRE_LOG_LEVEL": "WARNING",
        }
        procs: list[Proc] = []
        try:
            for i in range(3):
                port = free_port()
                procs.append(
                    Proc(chatwire_argv(), {**env, "CHATWIRE_PORT": str(port)}, port, workdir / f"cw{i}.log")
                )
                await procs[-1].ready()
            async with httpx.AsyncClient(base_url=procs[0].url, timeout=30) as http:

                async def signup(name: str) -> dict[str, Any]:
                    r = await http.post(
                        "/api/v1/auths/signup",
                        json={
                            "name": name,
                            "email": f"{name}-{uuid.uuid4().hex[:6]}@bench.io",
                            "password": "benchpass",
                        },
                    )
                    r.raise_for_status()
                    return r.json()  # type: ignore[no-any-return]

                admin = await signup("sender")
                users = [await signup(f"r{i}") for i in range(args.receivers)]
                r = await http.post(
                    "/api/v1/channels/create",
                    headers={"Authorization": f"Bearer {admin['token']}"},
                    json={"name": "bench", "type": "group", "user_ids": [u["id"] for u in users]},
                )
                r.raise_for_status()
                channel_id = r.json()["id"]

            async def join(proc: Proc, token: str) -> Receiver:
                rec = await connect(proc.url, {"token": token})
                await rec.client.call("user-join", {"auth": {"token": token}})
                return rec

            half = args.receivers // 2
            on_p1 = [await join(procs[1], u["token"]) for u in users[:half]]
            on_p2 = [await join(procs[2], u["token"]) for u in users[half:]]
            sender = await join(procs[0], admin["token"])
            return await measure_subject(
                "chatwire (per-room topics)", args, sender, on_p1, on_p2, procs[2].pid, channel_id
            )
        finally:
            for p in procs:
                p.stop()
            client = aioredis.Redis.from_url(REDIS_URL)
            keys = [k async for k in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def run_stock(args: argparse.Namespace, workdir: Path) -> Result:
    channel = f"sio-bench-{uuid.uuid4().hex[:8]}"
    procs: list[Proc] = []
    try:
        for i in range(3):
            port = free_port()
            argv = [sys.executable, "-m", "bench.stock_sio_server", str(port), REDIS_URL, channel]
            procs.append(Proc(argv, {}, port, workdir / f"stock{i}.log"))
            await procs[-1].ready("/ws/socket.io/?EIO=4&transport=polling")
        room = "channel:bench"
        half = args.receivers // 2
        on_p1 = [await connect(procs[1].url, {"room": room}) for _ in range(half)]
        on_p2 = [await connect(procs[2].url, {"room": room}) for _ in range(args.receivers - half)]
        sender = await connect(procs[0].url, {"room": room})
        return await measure_subject(
            "python-socketio AsyncRedisManager", args, sender, on_p1, on_p2, procs[2].pid, "bench"
        )
    finally:
        for p in procs:
            p.stop()


async def measure_subject(
    name: str,
    args: argparse.Namespace,
    sender: Receiver,
    on_p1: list[Receiver],
    on_p2: list[Receiver],
    idle_pid: int,
    channel_id: str,
) -> Result:
    receivers = on_p1 + on_p2
    await blast(sender.client, channel_id, 50)  # warm-up
    await wait_arrivals(receivers, 50)
    for r in receivers:
        r.arrivals.clear()
    sends = await blast(sender.client, channel_id, args.events)
    await wait_arrivals(receivers, args.events)
    rate, _, _ = measure(receivers, sends)
    for r in receivers:
        r.arrivals.clear()
    paced = min(args.events, 1000)
    sends = await blast(sender.client, channel_id, paced, rate=args.latency_rate)
    await wait_arrivals(receivers, paced)
    _, p50, p99 = measure(receivers, sends)
    for r in on_p2:
        await r.client.disconnect()
    await asyncio.sleep(1.0)
    before = cpu_seconds(idle_pid)
    await blast(sender.client, channel_id, args.idle_events)
    await wait_arrivals(on_p1, args.idle_events)
    idle_cpu = cpu_seconds(idle_pid) - before
    for r in [*on_p1, sender]:
        await r.client.disconnect()
    return Result(name, rate, p50, p99, idle_cpu, args.idle_events)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--idle-events", type=int, default=10000)
    parser.add_argument("--receivers", type=int, default=20)
    parser.add_argument("--latency-rate", type=float, default=200.0, help="events/s while measuring latency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [await run_chatwire(args, Path(tmp)), await run_stock(args, Path(tmp))]
    ours, stock = results
    rows = [
        [
            r.subject,
            f"{r.deliveries_per_s:,.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.idle_cpu_s * 1000:.0f} ms",
        ]
        for r in results
    ]
    print(
        f"\nFleet: 3 processes, one Redis; {args.receivers} receivers on processes 1-2, sender on process 0; "
        f"{args.events} events; then {args.idle_events} events while process 2 has no member.\n"
    )
    print(
        table(
            [
                "subject",
                "cross-process deliveries/s (saturated)",
                f"p50 ms at {args.latency_rate:.0f} events/s",
                f"p99 ms at {args.latency_rate:.0f} events/s",
                f"CPU of non-member process for {args.idle_events} events",
            ],
            rows,
        )
    )
    # CPU time is counted in clock ticks: a process that used less than one tick reads 0, so the ratio is then a
    # lower bound taken against one tick.
    tick = 1 / CLK_TCK
    if ours.idle_cpu_s >= tick:
        ratio_text = f"{stock.idle_cpu_s / ours.idle_cpu_s:.1f}x"
    else:
        ratio_text = (
            f">= {stock.idle_cpu_s / tick:.0f}x (chatwire used less than one {tick * 1000:.0f} ms clock tick)"
        )
    print(
        f"\nnon-member CPU, stock / chatwire: {ratio_text}; "
        f"deliveries/s, chatwire / stock: {ours.deliveries_per_s / stock.deliveries_per_s:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
