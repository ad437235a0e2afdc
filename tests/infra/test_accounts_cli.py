"""The first credentials of a fresh installation, the account commands, and private
data files, through the real ``keel`` command."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from infra.settings import Settings
from tests.support.accounts import bearer
from tests.support.settings import app_client


def keel(
    *args: str, data_dir: Path, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    environment.update(KEEL_DATA_DIR=str(data_dir), KEEL_LOG_FORMAT="json", **env)
    return subprocess.run(
        [sys.executable, "-c", "from keel.cli import run; run()", *args],
        env=environment,
        cwd=data_dir.parent,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def credentials(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and line[0] != "#"]
    return dict(line.split("=", 1) for line in lines)


async def me(data_dir: Path, key: str) -> httpx.Response:
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,  # type: ignore[call-arg]
        secret_key=(data_dir / "secret_key").read_text().strip(),
        temporal_address="127.0.0.1:1",
    )
    async with app_client(settings) as client:
        return await client.get("/api/v1/Auth/me", headers=bearer(key))


def test_first_start_makes_the_owner_once_in_a_private_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = keel("migrate", "--bootstrap", data_dir=data_dir)
    assert first.returncode == 0, first.stderr
    saved = credentials(data_dir / "credentials")
    assert set(saved) == {"KEEL_OWNER_EMAIL", "KEEL_OWNER_PASSWORD", "KEEL_API_KEY"}
    for value in saved.values():
        assert value in first.stdout  # printed once...
        assert value not in first.stderr  # ...and never logged

    # Only the owner may read what Keel keeps: the dir 0700, files 0600.
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "credentials") == 0o600
    assert mode(data_dir / "secret_key") == 0o600
    assert mode(data_dir / "keel.db") == 0o600

    # Development made its own secret key, not the placeholder; the key works with it.
    assert len((data_dir / "secret_key").read_text().strip()) >= 32
    response = asyncio.run(me(data_dir, saved["KEEL_API_KEY"]))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["role"] == "owner"

    again = keel("migrate", "--bootstrap", data_dir=data_dir)
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert credentials(data_dir / "credentials") == saved


def test_migrate_without_bootstrap_makes_no_one(tmp_path: Path) -> None:
    result = keel("migrate", data_dir=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "data" / "credentials").exists()


def test_user_and_apikey_commands(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert keel("migrate", data_dir=data_dir).returncode == 0

    made = keel("user", "create", "Ops@Example.com", "--role", "owner", data_dir=data_dir)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("ops@example.com is owner of workspace 1\npassword: ")
    password = made.stdout.split("password: ")[1].strip()
    assert password not in made.stderr

    typed = keel(
        "user",
        "create",
        "dev@example.com",
        "--role",
        "editor",
        "--password-stdin",
        data_dir=data_dir,
        stdin="a long typed password\n",
    )
    assert typed.returncode == 0, typed.stderr
    assert "password" not in typed.stdout

    twice = keel("user", "create", "dev@example.com", data_dir=data_dir)
    assert twice.returncode == 1 and "already a member" in twice.stderr
    nowhere = keel("user", "create", "x@example.com", "--workspace", "9", data_dir=data_dir)
    assert nowhere.returncode == 1 and "workspace 9 does not exist" in nowhere.stderr

    key = keel(
        "apikey", "create", "ci", "--role", "editor", "--expires-days", "30", data_dir=data_dir
    )
    assert key.returncode == 0, key.stderr
    response = asyncio.run(me(data_dir, key.stdout.strip()))
    assert response.json()["data"]["role"] == "editor"
    assert response.json()["data"]["principal"]["name"] == "ci"
