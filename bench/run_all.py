"""`make bench`: every benchmark, one after the other, and bench/RESULTS.md with the machine, date and command.

Each benchmark prints its own table of ratios against peers measured in the same run; this runner adds the
machine, the date, the exact commands, and the headline checks of issue 8 (fan-out at 100 members vs Node's
socket.io and stock python-socketio; memory per idle connection).

Run: python -m bench.run_all [--quick] [--only fanout,streaming,...] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO

FULL: dict[str, list[str]] = {
    "fanout": ["-m", "bench.fanout", "--sizes", "10,100,1000"],
    "streaming": ["-m", "bench.streaming", "--users", "200", "--tabs", "2", "--rate", "150"],
    "connections": ["-m", "bench.connections", "--n", "10000"],
    "fleet": ["-m", "bench.fleet"],
    "persistence": ["bench/persistence.py", "--tokens", "20000"],
    "collab": ["-m", "bench.collab_bench"],
    "connect-storm": ["-m", "bench.connect_storm", "--n", "5000"],
    "streaming-curve": ["-m", "bench.streaming", "--curve", "200,1000,2000", "--tokens", "300"],
    "small-rooms": ["-m", "bench.small_rooms", "--users", "10000", "--tabs", "2"],
    "idle": ["-m", "bench.idle", "--n", "50000", "--subjects", "chatwire,node,python-socketio"],
}
QUICK: dict[str, list[str]] = {
    "fanout": ["-m", "bench.fanout", "--sizes", "10,100"],
    "streaming": ["-m", "bench.streaming", "--users", "20", "--tokens", "150"],
    "connections": ["-m", "bench.connections", "--n", "1000"],
    "fleet": ["-m", "bench.fleet", "--events", "300", "--idle-events", "1000"],
    "persistence": ["bench/persistence.py", "--tokens", "2000"],
    "collab": ["-m", "bench.collab_bench", "--edits", "1000"],
    "connect-storm": ["-m", "bench.connect_storm", "--n", "500", "--users", "20"],
    "streaming-curve": [
        "-m",
        "bench.streaming",
        "--curve",
        "20,60",
        "--curve-rate",
        "3000",
        "--tokens",
        "100",
    ],
    "small-rooms": ["-m", "bench.small_rooms", "--users", "500", "--rounds", "5"],
    "idle": ["-m", "bench.idle", "--n", "1000", "--users", "20", "--window", "30"],
}
TITLES = {
    "fanout": "1. Fan-out: `events:channel` typing to rooms of 10, 100 and 1,000 members",
    "streaming": "2. Streaming: 200 users x 2 tabs, one demo generation each at 150 tokens/s",
    "connections": "3. Connections: 10,000 idle websocket sessions",
    "fleet": "4. Fleet: 3 processes sharing Redis",
    "persistence": "5. Persistence of one streamed answer",
    "collab": "6. Collaborative notes: ingest and cold join",
    "connect-storm": "9. Connect storm: 5,000 authenticated clients at once, vs the same JWT check in the peers",
    "streaming-curve": "10. Streaming curve: 200, 1,000 and 2,000 concurrent generations x 2 tabs, one offered load",
    "small-rooms": "11. Many small rooms: 10,000 users x 2 tabs, an event to each user's room, vs Node socket.io",
    "idle": "12. Idle: 50,000 connections in one server process, memory and CPU while idle",
    "baseline-fanout": "7. Before/after: fan-out at 100 members, this checkout vs the baseline source",
    "baseline-connections": "8. Before/after: idle connections, this checkout vs the baseline source",
}
BASELINE: dict[str, list[str]] = {
    "baseline-fanout": [
        "-m",
        "bench.fanout",
        "--sizes",
        "100",
        "--subjects",
        "chatwire,chatwire-baseline,python-socketio,node",
    ],
    "baseline-connections": [
        "-m",
        "bench.connections",
        "--n",
        "2000",
        "--subjects",
        "chatwire,chatwire-baseline,python-socketio",
    ],
}
JSON_CAPABLE = {
    "fanout",
    "streaming",
    "connections",
    "connect-storm",
    "streaming-curve",
    "small-rooms",
    "idle",
    "baseline-fanout",
    "baseline-connections",
}


def machine() -> list[str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[:3]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return [
        f"- CPU: {cpu}; `nproc`: {os.cpu_count()}",
        f"- Python {platform.python_version()}, Node {node}, {platform.platform()}",
        f"- load average before the run: {' '.join(load)} (the machine is shared with other jobs: compare ratios"
        " within one run, not absolute numbers across runs)",
        "- `free -h`:",
        "",
        "```",
        mem,
        "```",
    ]


def headline(data: dict[str, Any]) -> list[str]:
    """The checks issue 8 asks for, computed from this run's JSON results."""
    lines: list[str] = []
    fan = data.get("fanout")
    if fan:
        for size in ("100", "10", "1000"):
            try:
                cw = fan["chatwire"][size]["saturated"]["deliveriesPerSecond"]
                node = fan["node"][size]["saturated"]["deliveriesPerSecond"]
                stock = fan["python-socketio"][size]["saturated"]["deliveriesPerSecond"]
            except KeyError:
                continue
            lines.append(
                f"- fan-out, room of {size}: chatwire {cw:,.0f} deliveries/s = **{cw / node:.2f}x Node socket.io** "
                f"({node:,.0f}) and **{cw / stock:.1f}x stock python-socketio** ({stock:,.0f})"
            )
    conn = data.get("connections")
    if conn and "chatwire" in conn:
        cw = conn["chatwire"]
        parts = [f"chatwire {cw['per_connection'] / 1024:.1f} KiB"]
        for peer in ("python-socketio", "node"):
            if peer in conn:
                parts.append(f"{peer} {conn[peer]['per_connection'] / 1024:.1f} KiB")
        lines.append(f"- resident memory per idle connection: {', '.join(parts)}")
        lines.append(
            f"- connect rate: chatwire {cw['perSecond']:,.0f}/s"
            + "".join(
                f", {p} {conn[p]['perSecond']:,.0f}/s" for p in ("python-socketio", "node") if p in conn
            )
        )
    stream = data.get("streaming")
    if stream and "chatwire" in stream:
        s = stream["chatwire"]
        lines.append(
            f"- streaming: {s['cpu_us_per_token']:.0f} us server CPU per token, p99 token latency "
            f"{s['p99']:.0f} ms, {s['writes']:,.0f} database writes for {s['generated']:,} tokens"
        )
    storm = data.get("connect-storm")
    if storm and "chatwire" in storm:
        for phase in ("cold", "warm"):

            def rate(subject: str, phase: str = phase) -> str:
                r = storm[subject][phase]
                return f"{r['perSecond']:,.0f}/s and {r['cpu_ms_per_connect']:.2f} ms"

            peers = "".join(f", {p} {rate(p)}" for p in ("python-socketio", "node") if p in storm)
            same_work = (
                f" (in no channel, the peers' work: {rate('chatwire-no-channels')})"
                if "chatwire-no-channels" in storm
                else ""
            )
            no_auth = (
                f"; python-socketio checking no token {rate('python-socketio-no-auth')}"
                if "python-socketio-no-auth" in storm
                else ""
            )
            lines.append(
                f"- connect storm ({phase}): chatwire {rate('chatwire')} server CPU per authenticated connect"
                f"{same_work}{peers}{no_auth}"
            )
    points = data.get("streaming-curve")
    if points:
        ns = sorted(points, key=int)
        cpu = [points[n]["cpu_us_per_token"] for n in ns]
        lines.append(
            "- streaming curve: CPU per token "
            + ", ".join(f"{c:.1f} us at {int(n):,}" for n, c in zip(ns, cpu, strict=True))
            + f" generations ({cpu[-1] / cpu[0]:.2f}x from first to last; linear would be "
            f"{int(ns[-1]) / int(ns[0]):.0f}x); p99 " + ", ".join(f"{points[n]['p99']:.0f} ms" for n in ns)
        )
    rooms = data.get("small-rooms")
    if rooms and "chatwire" in rooms:
        cw = rooms["chatwire"]
        node = rooms.get("node")
        versus = (
            f" = **{cw['cpu_us_per_delivery'] / node['cpu_us_per_delivery']:.2f}x Node socket.io's** "
            f"({node['cpu_us_per_delivery']:.1f} us, {node['deliveriesPerSecond']:,.0f}/s)"
            if node and node["cpu_us_per_delivery"] > 0
            else ""
        )
        lines.append(
            f"- many small rooms: chatwire {cw['cpu_us_per_delivery']:.1f} us server CPU per delivery, "
            f"{cw['deliveriesPerSecond']:,.0f} deliveries/s{versus}"
        )
    idle = data.get("idle")
    if idle and "chatwire" in idle["results"]:
        for n, cw in idle["results"]["chatwire"].items():
            peers = "".join(
                f", {p} {r[n]['per_connection'] / 1024:.1f} KiB and {r[n]['idle_cpu_percent']:.2f}%"
                for p, r in idle["results"].items()
                if p != "chatwire" and n in r
            )
            lines.append(
                f"- idle connections: chatwire held {cw['held']:,} of {int(n):,} in one process, "
                f"{cw['per_connection'] / 1024:.1f} KiB each, idle CPU {cw['idle_cpu_percent']:.2f}% of a core{peers}"
            )
    base = data.get("baseline-fanout")
    if base and "chatwire-baseline" in base:
        cw = base["chatwire"]["100"]["saturated"]["deliveriesPerSecond"]
        old = base["chatwire-baseline"]["100"]["saturated"]["deliveriesPerSecond"]
        lines.append(
            f"- before/after, fan-out at 100: {old:,.0f} -> {cw:,.0f} deliveries/s ({cw / old:.2f}x)"
        )
    base = data.get("baseline-connections")
    if base and "chatwire-baseline" in base:
        cw, old = base["chatwire"], base["chatwire-baseline"]
        lines.append(
            f"- before/after, idle connection: {old['per_connection'] / 1024:.1f} -> "
            f"{cw['per_connection'] / 1024:.1f} KiB; connects/s {old['perSecond']:,.0f} -> {cw['perSecond']:,.0f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, minutes)")
    parser.add_argument("--only", default="", help="comma separated subset of: " + ",".join(FULL))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="source tree of an earlier chatwire (git archive REV chatwire | tar -x -C DIR): adds before/after runs",
    )
    parser.add_argument("--baseline-label", default="", help="what the baseline is (e.g. main at a0d3988)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.baseline:
        plan = {**plan, **BASELINE}
        os.environ["CHATWIRE_BENCH_BASELINE_SRC"] = str(args.baseline.resolve())
    names = [n for n in plan if not args.only or n in args.only.split(",")]
    started = datetime.datetime.now(datetime.UTC)
    sections: list[str] = []
    data: dict[str, Any] = {}
    commands: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    host = machine()  # the load average before the run, not at each write

    def write(done: bool) -> None:
        """RESULTS.md as it stands: written after every section, so an interrupted run keeps what it measured."""
        extra = " ".join(sys.argv[1:])
        command = f'make bench BENCH_ARGS="{extra}"' if extra else "make bench"
        doc = [
            "# chatwire benchmark results",
            "",
            f"Date: {started:%Y-%m-%d %H:%M} UTC. Command: `{command}` (from the repository root; every subject runs"
            " as a real process on this machine, driven by Node `socket.io-client` 4.8 processes).",
            *(
                [
                    "",
                    f"Baseline for the before/after sections: {args.baseline_label or args.baseline}, run from its own"
                    " source tree with the same virtualenv and the same load generator.",
                ]
                if args.baseline
                else []
            ),
            "",
            "## Machine",
            "",
            *host,
            "",
            "## Headline (this run)",
            "",
            *(headline(data) or ["- (no fan-out/connections results in this run)"]),
            "",
            "## Commands",
            "",
            *commands,
            "",
            *sections,
        ]
        if not done:
            doc[2:2] = [
                "",
                f"**Partial: {len(sections)} of {len(names)} sections so far (the run is still going or was interrupted).**",
            ]
        args.out.write_text("\n".join(doc))

    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            argv = list(plan[name])
            if name in JSON_CAPABLE:
                argv += ["--json", str(Path(tmp) / f"{name}.json")]
            shown = "python " + " ".join(a for a in plan[name])
            commands.append(f"- {name}: `{shown}`")
            print(f"== {name}: {shown}", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True)
            took = time.monotonic() - t0
            sys.stderr.write(proc.stderr[-3000:])
            body = proc.stdout.strip()
            if proc.returncode != 0:
                body += f"\n\nFAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-3000:]}\n```"
            sections.append(f"## {TITLES[name]}\n\n`{shown}` ({took:.0f} s)\n\n{body}\n")
            print(body, file=sys.stderr, flush=True)
            result = Path(tmp) / f"{name}.json"
            if result.exists():
                data[name] = json.loads(result.read_text())
            write(done=False)
    write(done=True)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
