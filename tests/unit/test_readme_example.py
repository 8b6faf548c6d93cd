"""The README's "Use chatwire beside your app" section shows examples/beside_app.py verbatim."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_embeds_the_example_app_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "beside_app.py").read_text()
    section = readme.split("## Use chatwire beside your app", 1)[1]
    assert f"```python\n{example}```" in section
