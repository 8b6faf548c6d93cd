"""A private PostgreSQL cluster for fault tests: initdb into a temp dir, pg_ctl start/stop on a free port.

The machine's shared PostgreSQL is never touched; this one belongs to one test, which may stop it at will.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time

from tests.conftest import free_port


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


class PostgresProcess:
    """One private cluster (trust auth, loopback only) that a test can stop and start mid-run."""

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chatwire-pg-")
        self.data = os.path.join(self.dir, "data")
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)

    def _run(self, args: list[str], timeout: float = 60) -> None:
        out = subprocess.run(_as_postgres(args), capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {out.stdout}\n{out.stderr}")

    def init(self) -> PostgresProcess:
        self._run([self.initdb, "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
        return self

    def start(self) -> PostgresProcess:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            [self.pg_ctl, "-D", self.data, "-l", os.path.join(self.dir, "log"), "-o", opts, "-w", "start"]
        )
        deadline = time.monotonic() + 20
        isready = _pg_bin("pg_isready")
        while isready and time.monotonic() < deadline:
            ready = subprocess.run(
                [isready, "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True, check=False
            )
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        return self

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast`: open connections are terminated, new ones refused, as in a restart."""
        self._run([self.pg_ctl, "-D", self.data, "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
