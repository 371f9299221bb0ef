"""`crisis users issue-tokens` and the token store the API reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core.config import ROOT
from core.tokens import TokenStore, hash_token, read_hashes


def issue(tmp_path: Path) -> tuple[str, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "users", "issue-tokens",
         "--out", str(tmp_path / "demo-tokens.json"), "--hashes", str(tmp_path / "tokens.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return result.stdout, json.loads((tmp_path / "demo-tokens.json").read_text())


def test_issue_tokens_writes_plain_tokens_and_only_hashes(tmp_path: Path) -> None:
    table, demo = issue(tmp_path)
    users = demo["users"]
    assert isinstance(users, list)
    by_id = {u["id"]: u for u in users}
    assert by_id["ray-reporter"]["roles"] == ["reporter"]
    assert by_id["ada-admin"]["roles"] == ["reporter", "communicator", "admin"]
    assert set(by_id["cara-comms"]) == {"id", "name", "roles", "token"}
    assert by_id["cara-comms"]["token"] in table
    hashes = read_hashes(tmp_path / "tokens.json")
    assert hashes == {hash_token(u["token"]): u["id"] for u in users}
    assert not any(u["token"] in (tmp_path / "tokens.json").read_text() for u in users)
    assert (tmp_path / "tokens.json").stat().st_mode & 0o077 == 0

    _, again = issue(tmp_path)
    assert again == demo  # running it again (every `make run`) keeps the tokens


def test_token_store_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path)
    assert store.person_for("abc") is None
    path.write_text(json.dumps({"tokens": {hash_token("abc"): "cara-comms"}}))
    assert store.person_for("abc") == "cara-comms"
    assert store.person_for("abd") is None
    assert store.person_for("") is None
    path.write_text(json.dumps({"tokens": {}}) + "   ")
    assert store.person_for("abc") is None
