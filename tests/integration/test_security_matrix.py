"""Runs every case of the security matrix (tests/security_matrix.py) against a real server, checks that a
refusal changed no row, and that docs/SECURITY.md is the matrix rendered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chatwire.config import Settings
from tests.conftest import RunningServer, run_server
from tests.dbsnap import snapshot
from tests.security_matrix import ACTIONS, DOC, KEYS, OK, REGENERATE, USERS, build_world, case_count, render


@pytest.fixture
async def matrix_server(settings: Settings) -> AsyncIterator[RunningServer]:
    # The matrix opens a few hundred connections from one address in a few seconds, as the same few users.
    roomy = settings.model_copy(update={"rate_limit_ip_connect_burst": 5000, "max_connections_per_user": 0})
    async with run_server(roomy) as running:
        yield running


async def test_every_identity_against_every_event_and_route(matrix_server: RunningServer) -> None:
    server = matrix_server
    world = await build_world(server.url, server.services, server.settings.jwt_secret)
    db = server.services.db
    wrong: list[str] = []

    async def settled() -> object:
        await server.services.writer.flush()
        return await snapshot(db)

    ran = 0
    for action in ACTIONS:
        for who in USERS if action.kind != "server" else KEYS:
            expected = action.expect[who]
            world.snap = settled if action.check_unchanged and expected != OK else None
            world.before = None
            actual = await action.run(world, who)
            ran += 1
            if actual != expected:
                wrong.append(f"{action.kind} {action.name!r} as {who}: expected {expected}, got {actual}")
            elif world.before is not None and not actual.startswith(OK):
                if await settled() != world.before:
                    wrong.append(
                        f"{action.kind} {action.name!r} as {who}: refused ({actual}) but data changed"
                    )
    assert ran == case_count()
    assert not wrong, f"{len(wrong)} of {ran} cases wrong:\n" + "\n".join(wrong)


def test_security_doc_is_the_rendered_matrix() -> None:
    assert DOC.exists() and DOC.read_text() == render(), (
        f"docs/SECURITY.md is not the rendered security matrix; regenerate it: {REGENERATE}"
    )
