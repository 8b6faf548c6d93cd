"""docs/OPENWEBUI.md states the boundary the proxy enforces: every static route and every chatwire prefix."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.owui.proxy import CHATWIRE_PREFIXES, PINNED_VERSION, STATIC_ROUTES

DOC = Path(__file__).resolve().parents[3] / "docs" / "OPENWEBUI.md"


def test_the_doc_lists_every_route_the_proxy_answers_and_forwards() -> None:
    text = DOC.read_text()
    missing = [f"{m} {p}" for m, p in STATIC_ROUTES if f"`{m} {p}`" not in text]
    assert missing == [], f"add these static routes to docs/OPENWEBUI.md: {missing}"
    forwarded = [p for p in CHATWIRE_PREFIXES if p.rstrip("/") not in text]
    assert forwarded == [], f"add these chatwire paths to docs/OPENWEBUI.md: {forwarded}"
    assert f"Open WebUI {PINNED_VERSION}" in text
