"""Waiting for a started server process to answer `/health`: one helper for every test that starts one.

A process that exits while it is awaited fails the wait at once, one that never answers after `timeout` seconds;
either way with the tail of its log when one is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx

# The process's exit code, or None while it runs (`Popen.poll`, or `lambda: proc.returncode` for asyncio's).
ExitCode = Callable[[], int | None]


def _failure(url: str, code: int | None, timeout: float, log: Callable[[], str] | None) -> RuntimeError:
    what = f"exited with {code}" if code is not None else f"did not answer /health within {timeout:g} s"
    return RuntimeError(f"server at {url} {what}" + (f":\n{log()[-3000:]}" if log is not None else ""))


def wait_healthy_sync(
    url: str, exit_code: ExitCode, *, timeout: float = 30, log: Callable[[], str] | None = None
) -> None:
    """Block until `GET {url}/health` answers 200; raise RuntimeError (with the log's tail) if the process exits
    first or time runs out."""
    deadline = time.monotonic() + timeout
    while (code := exit_code()) is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise _failure(url, code, timeout, log)


async def wait_healthy(
    url: str, exit_code: ExitCode, *, timeout: float = 30, log: Callable[[], str] | None = None
) -> None:
    """`wait_healthy_sync` for async tests: the event loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1) as client:
        while (code := exit_code()) is None:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    raise _failure(url, code, timeout, log)
