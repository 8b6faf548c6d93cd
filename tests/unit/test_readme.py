"""The README's tables match the code: every REST route and every socket event handler is documented."""

from __future__ import annotations

import re
from pathlib import Path

from chatwire.app import create_app
from chatwire.config import Settings

README = Path(__file__).parents[2] / "README.md"


def _normalise(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_rest_route_and_socket_event_is_in_the_readme(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, jwt_secret="s" * 32, _env_file=None))  # type: ignore[call-arg]
    text = _normalise(README.read_text())
    api = app.other_app.app  # the engine -> BodyLimit -> FastAPI
    paths = api.openapi()["paths"]
    routes = [(method.upper(), path) for path, ops in paths.items() for method in ops]
    assert len(routes) > 20
    for method, path in routes:
        assert f"`{method} {_normalise(path)}`" in text, f"{method} {path} missing from README"
    # the app's registered socket events (connect, disconnect and the catch-all * are not events of the table)
    events = [e for e in app.state.hub.handlers if e not in ("connect", "disconnect", "*")]
    assert {"user-join", "events:channel"} <= set(events)
    for event in events:
        assert f"| `{event}` |" in text, f"socket event {event} missing from README"
