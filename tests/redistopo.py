"""Private Redis topologies for tests, as child processes in temp dirs on free loopback ports.

- `SentinelSet`: one primary, one replica and three sentinels (Debian's redis-server / `redis-server --sentinel`).
- `ClusterSet`: a three-node Redis Cluster (no replicas) made with `redis-cli --cluster create`.

Each waits for its topology to be ready with deadlines (never a fixed sleep) and kills every process it started.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import free_port, requirement_missing

SERVICE = "cwmaster"


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        requirement_missing(f"{binary} not installed")
        raise AssertionError  # unreachable: requirement_missing skips or fails
    return path


def cli(port: int, *args: str, timeout: float = 5) -> str:
    out = subprocess.run(
        [_need("redis-cli"), "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout.strip()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


class _Procs:
    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"cw-{name}-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, port: int, conf: str, sentinel: bool = False) -> None:
        path = self.dir / f"{port}.conf"
        workdir = self.dir / str(port)
        workdir.mkdir(exist_ok=True)
        path.write_text(f'port {port}\nbind 127.0.0.1\ndir {workdir}\nsave ""\nappendonly no\n{conf}')
        argv = [_need("redis-server"), str(path)] + (["--sentinel"] if sentinel else [])
        log = (self.dir / f"{port}.log").open("ab")
        self.procs[port] = subprocess.Popen(argv, stdout=log, stderr=log)
        wait_for(f"redis on {port}", lambda: cli(port, "ping") == "PONG", timeout=15, every=0.05)

    def kill(self, port: int) -> None:
        proc = self.procs.get(port)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSet(_Procs):
    """Primary + replica + 3 sentinels (quorum 2, down after 1 s) watching service `cwmaster`."""

    def __init__(self) -> None:
        super().__init__("sentinel")
        self.primary = free_port()
        self.replica = free_port()
        self.sentinels = [free_port() for _ in range(3)]

    def start(self) -> SentinelSet:
        self.spawn(self.primary, "")
        self.spawn(self.replica, f"replicaof 127.0.0.1 {self.primary}\n")
        wait_for(
            "replica in sync", lambda: "master_link_status:up" in cli(self.replica, "info", "replication")
        )
        for port in self.sentinels:
            self.spawn(
                port,
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n",
                sentinel=True,
            )
        # Every sentinel knows the replica and the two other sentinels: a failover can be agreed on.
        wait_for(
            "sentinels to find each other and the replica",
            lambda: all(
                "num-other-sentinels\n2" in cli(p, "sentinel", "master", SERVICE)
                and "num-slaves\n1" in cli(p, "sentinel", "master", SERVICE)
                for p in self.sentinels
            ),
            timeout=30,
        )
        return self

    @property
    def hosts(self) -> str:
        """The value of CHATWIRE_REDIS_SENTINEL_HOSTS."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinels)

    def current_primary(self) -> int:
        out = cli(self.sentinels[0], "sentinel", "get-master-addr-by-name", SERVICE).splitlines()
        return int(out[1]) if len(out) == 2 else -1


class ClusterSet(_Procs):
    """Three primaries covering all 16384 slots, no replicas."""

    def __init__(self) -> None:
        super().__init__("cluster")
        self.ports = [free_port() for _ in range(3)]

    def start(self) -> ClusterSet:
        for port in self.ports:
            self.spawn(
                port,
                f"cluster-enabled yes\ncluster-config-file nodes-{port}.conf\ncluster-node-timeout 2000\n"
                f"cluster-port {free_port()}\n",
            )
        out = subprocess.run(
            [
                _need("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(
            "cluster state ok on every node",
            lambda: all("cluster_state:ok" in cli(p, "cluster", "info") for p in self.ports),
            timeout=30,
        )
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"
