"""`chatwire serve` with Python's allocation tracer on: heap snapshots of the running server, for bench/soak.py.

Run: CHATWIRE_BENCH_TRACE_DIR=DIR python -m bench.traced_serve   (then the same settings as `chatwire serve`)
Optional: CHATWIRE_BENCH_TRACE_INTERVAL (seconds between snapshots, default 60), CHATWIRE_BENCH_TRACE_FRAMES
(stack frames kept per allocation, default 6; 0 = no tracer, only the object census: what a server that is busy
anyway can afford; a 2,000-tab soak under the tracer fell behind within 30 s and timed out its database pool).

Tracing starts when the process gets SIGUSR1 (bench/soak.py sends it once every tab is connected), not at start:
under the tracer, importing the app alone takes 4x (1 frame) to 20x (8 frames) longer. Allocations made before
then are not traced, which is what a growth profile wants (what the running server keeps adding). From then on a
daemon thread writes DIR/snap-<unix ms>.tracemalloc (tracemalloc.Snapshot.dump) and DIR/snap-<unix ms>.json
(traced bytes now and at peak, the count of every object type with at least 20 live instances, from the garbage
collector, the collector's runs and collections per generation, and the pending asyncio tasks counted by the
line they wait at) every interval, and once more on each SIGUSR2 (bench/churn.py asks for its snapshots that way).
Tracing costs memory (a trace per live block) and CPU (every allocation records its stack), and a snapshot holds
the GIL while it is taken: RSS and latency of a traced run are not those of a normal one. chatwire itself is not
changed: this module starts the tracer, then runs chatwire's own command line.

Each census also says where the memory outside the tracer's view sits (`native`, see native_memory()): RSS split
into anonymous and file pages, glibc malloc's bytes in use, free-but-kept and mmapped (mallinfo2) and how they
split between its main arena and the other threads' arenas (malloc_info), pymalloc's arenas, SQLite's own
allocations (sqlite3_memory_used) and the tracer's own overhead. With
CHATWIRE_BENCH_MALLOC_TRIM=1 every snapshot ends with glibc's malloc_trim(0) and records RSS before and after it:
how much of RSS was free heap that glibc had kept.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path


class _MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (glibc 2.33+): every field a size_t, summed over all malloc arenas."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
        )
    ]  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None


def _libsqlite() -> ctypes.CDLL | None:
    """The SQLite library the sqlite3 module is linked to (the same loaded copy, so its counters are ours)."""
    try:
        import sqlite3  # noqa: F401  (loads the library first)

        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        lib.sqlite3_memory_highwater.restype = ctypes.c_int64
        lib.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
        return lib
    except (OSError, AttributeError):
        return None


LIBC = _libc()
LIBSQLITE = _libsqlite()
MALLOC_TRIM = os.environ.get("CHATWIRE_BENCH_MALLOC_TRIM", "") == "1"


def _status_kib() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process, in KiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def _pymalloc() -> dict[str, int]:
    """pymalloc's arena bytes and the bytes of its allocated and free blocks, parsed from sys._debugmallocstats
    (which writes to C stderr: fd 2 is pointed at a file for the call; other writers' lines meanwhile go there)."""
    with tempfile.TemporaryFile("w+") as f:
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read()
    out = {}
    for line in text.splitlines():
        left, _, right = line.partition("=")
        value = right.strip().replace(",", "")
        if not value.isdigit():
            continue
        if "bytes/arena" in left:
            out["arena_bytes"] = int(value)
        elif "bytes in allocated blocks" in left:
            out["allocated_bytes"] = int(value)
        elif "bytes in available blocks" in left:
            out["available_bytes"] = int(value)
        elif "unused pools" in left:
            out["unused_pool_bytes"] = int(value)
    return out


def _malloc_arenas() -> dict[str, int]:
    """How glibc's heap splits between its main arena (the event loop's thread) and the arenas it gives other
    threads (SQLite connections' threads, executors): their count, their bytes from the system and their free
    bytes, from malloc_info's XML."""
    if LIBC is None:
        return {}
    import xml.etree.ElementTree as ET

    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        stream = LIBC.fopen(out.name.encode(), b"w")
        if not stream:
            return {}
        try:
            LIBC.malloc_info(0, stream)
        finally:
            LIBC.fclose(stream)
        root = ET.parse(out.name).getroot()
    totals = {"main": [0, 0], "threads": [0, 0]}
    arenas = 0
    for heap in root.findall("heap"):
        arenas += 1
        side = totals["main" if heap.get("nr") == "0" else "threads"]
        side[0] += sum(int(s.get("size", 0)) for s in heap.findall("system") if s.get("type") == "current")
        side[1] += sum(
            int(t.get("size", 0)) for t in heap.findall("total") if t.get("type") in ("fast", "rest")
        )
    return {
        "malloc_arenas": arenas,
        "malloc_main_system": totals["main"][0],
        "malloc_main_free": totals["main"][1],
        "malloc_threads_system": totals["threads"][0],
        "malloc_threads_free": totals["threads"][1],
    }


def native_memory() -> dict[str, int]:
    """Where the process's memory sits, in bytes: RSS (anonymous and file pages), glibc malloc's heap (in use, free
    but kept, mmapped blocks), pymalloc's arenas (mmapped, outside malloc), SQLite's own allocations, the tracer's
    overhead. Python objects of 512 bytes or less live in pymalloc's arenas, larger ones in malloc."""
    status = _status_kib()
    out = {
        "rss": status.get("VmRSS", 0) * 1024,
        "rss_anon": status.get("RssAnon", 0) * 1024,
        "rss_file": status.get("RssFile", 0) * 1024,
        "tracer_overhead": tracemalloc.get_tracemalloc_memory(),
    }
    if LIBC is not None:
        info = LIBC.mallinfo2()
        out.update(
            malloc_in_use=info.uordblks,
            malloc_free=info.fordblks,
            malloc_mmapped=info.hblkhd,
            malloc_heap=info.arena,
            malloc_releasable=info.keepcost,
        )
    if LIBSQLITE is not None:
        out["sqlite_used"] = LIBSQLITE.sqlite3_memory_used()
        out["sqlite_highwater"] = LIBSQLITE.sqlite3_memory_highwater(0)
    out.update({f"pymalloc_{k}": v for k, v in _pymalloc().items()})
    out.update(_malloc_arenas())
    return out


def snapshot(directory: Path) -> None:
    """One heap snapshot and the object-type census beside it."""
    stamp = int(time.time() * 1000)
    current = peak = 0
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(directory / f"snap-{stamp}.tracemalloc"))
        current, peak = tracemalloc.get_traced_memory()
    objects = gc.get_objects()
    types = Counter(type(o).__qualname__ for o in objects)
    waiting = Counter(wait_point(o) for o in objects if isinstance(o, asyncio.Task) and not o.done())
    del objects
    census = {
        "unix_ms": stamp,
        "traced_bytes": current,
        "peak_bytes": peak,
        "types": [(n, c) for n, c in types.most_common() if c >= 20],
        "tasks": sum(waiting.values()),
        "task_wait_points": waiting.most_common(30),
        "gc": [{"collections": g["collections"], "collected": g["collected"]} for g in gc.get_stats()],
        "native": native_memory(),
    }
    if MALLOC_TRIM and LIBC is not None:
        LIBC.malloc_trim(0)
        census["rss_after_trim"] = _status_kib().get("VmRSS", 0) * 1024
    (directory / f"snap-{stamp}.json").write_text(json.dumps(census))


def wait_point(task: asyncio.Task[object]) -> str:
    """Where a pending task waits: the innermost frame of its chain of awaited coroutines that is not asyncio's
    own (file:line function), and the innermost one's function when that is asyncio's (`-> wait`, `-> sleep`)."""
    where = f"<{type(task.get_coro()).__name__}>"
    innermost = ""
    awaited: object = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            path = Path(frame.f_code.co_filename)
            innermost = frame.f_code.co_name
            if path.parent.name != "asyncio":
                where, innermost = f"{path.parent.name}/{path.name}:{frame.f_lineno} {innermost}", ""
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return f"{where} -> {innermost}" if innermost else where


def run_snapshots(directory: Path, interval: float, started: threading.Event) -> None:
    started.wait()
    while True:
        time.sleep(interval)
        try:
            snapshot(directory)
        except Exception as exc:  # a failed snapshot must not take the server down
            print(f"traced_serve: snapshot failed: {exc!r}", file=sys.stderr, flush=True)


def main() -> None:
    directory = Path(os.environ["CHATWIRE_BENCH_TRACE_DIR"])
    interval = float(os.environ.get("CHATWIRE_BENCH_TRACE_INTERVAL", "60"))
    frames = int(os.environ.get("CHATWIRE_BENCH_TRACE_FRAMES", "6"))
    if interval <= 0 or frames < 0:
        raise SystemExit("traced_serve: CHATWIRE_BENCH_TRACE_INTERVAL must be positive, _FRAMES at least 0")
    directory.mkdir(parents=True, exist_ok=True)
    started = threading.Event()

    def start_tracing(_signum: int, _frame: object) -> None:
        if not started.is_set():
            if frames:
                tracemalloc.start(frames)
            started.set()

    def snapshot_now(_signum: int, _frame: object) -> None:
        if started.is_set():
            threading.Thread(target=snapshot, args=(directory,), name="heap-snapshot").start()

    signal.signal(signal.SIGUSR1, start_tracing)
    signal.signal(signal.SIGUSR2, snapshot_now)
    threading.Thread(
        target=run_snapshots, args=(directory, interval, started), daemon=True, name="heap-snapshots"
    ).start()
    from chatwire.cli import main as chatwire_main

    sys.argv = ["chatwire", "serve"]
    chatwire_main()


if __name__ == "__main__":
    main()
