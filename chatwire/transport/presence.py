"""Room presence changes from the connection lifecycle: a session that authenticates (at connect or with
`user-join`) and one that goes away tell `services.room_presence` (see services/room_presence.py)."""

from __future__ import annotations

from typing import Any

from chatwire.db.models import User
from chatwire.transport.context import Context, SessionState

ANNOUNCED = "presence_announced"


def register(ctx: Context) -> None:
    presence = ctx.services.room_presence

    async def started(sid: str) -> None:
        st = ctx.local.get(sid)
        if st is None or st.user is None or st.extra.get(ANNOUNCED):
            return
        st.extra[ANNOUNCED] = True
        await presence.session_started(sid, st.user)

    async def on_connect(sid: str, _environ: dict[str, Any], _auth: Any) -> None:
        await started(sid)

    async def on_join(sid: str, _user: User, _payload: Any) -> None:
        await started(sid)

    async def on_disconnect(_sid: str, st: SessionState | None) -> None:
        if st is not None and st.user is not None and st.extra.get(ANNOUNCED):
            await presence.session_ended(st.user.id, st.user.name)

    ctx.connect_hooks.append(on_connect)
    ctx.join_hooks.append(on_join)
    ctx.disconnect_hooks.append(on_disconnect)
