"""`chatwire serve --help` documents every setting, with its environment variable and default."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from chatwire import __version__
from chatwire.cli import app
from chatwire.config import Settings


def test_serve_help_lists_every_setting() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", result.output)
    assert Settings.model_fields, "no settings?"
    for name, field in Settings.model_fields.items():
        assert f"CHATWIRE_{name.upper()} (default:" in text, name
        assert field.description, f"setting {name} has no description"
        assert re.sub(r"\s+", " ", field.description) in text, name
    assert "CHATWIRE_PORT (default: 8080)" in text
    assert "CHATWIRE_TRANSPORTS (default: websocket)" in text
    assert "--port" in text and "--host" in text


def test_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__
