"""`chatwire keys create | list | revoke` against the configured database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatwire.cli import app


def test_keys_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWIRE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CHATWIRE_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    created = runner.invoke(
        app, ["keys", "create", "--scope", "publish", "--scope", "presence", "--name", "ci"]
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("cwk_") and len(key) > 40
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (
        len(records) == 1 and records[0]["scopes"] == ["publish", "presence"] and records[0]["name"] == "ci"
    )
    assert key not in listed.stdout and records[0]["prefix"] == key[:12]
    assert runner.invoke(app, ["keys", "revoke", records[0]["id"]]).exit_code == 0
    again = runner.invoke(app, ["keys", "revoke", records[0]["id"]])
    assert again.exit_code == 1
    revoked = json.loads(runner.invoke(app, ["keys", "list"]).stdout)
    assert revoked["revoked_at"] is not None
    bad = runner.invoke(app, ["keys", "create", "--scope", "everything"])
    assert bad.exit_code == 2 and "scopes must be" in bad.output
