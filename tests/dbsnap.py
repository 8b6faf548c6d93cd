"""A full dump of the database, to assert that refused requests change nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from chatwire.db.engine import Database
from chatwire.db.models import Base


async def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted, as plain tuples."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with db.read() as s:
        for table in Base.metadata.sorted_tables:
            rows = (await s.execute(select(table))).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out
