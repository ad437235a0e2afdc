"""Files only their owner may read: the data dir (0700), keys and credentials (0600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) as 0700; tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write ``text`` to ``path`` created 0600 (never readable by others, not even
    for an instant). ``exclusive``: fail with FileExistsError if the file exists."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def create_private_once(path: Path, text: str) -> bool:
    """Create ``path`` (0600) holding ``text`` unless it exists; True if this call made it.

    The text is written to a temporary file first and linked into place, so a process
    racing this one sees either no file or the whole file, never a half-written one.
    """
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    write_private(temporary, text, exclusive=True)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    return True


def development_secret_key(data_dir: Path) -> str:
    """The secret key of a development installation: random, made on first start and
    kept in ``<data dir>/secret_key`` (0600), so sealed secrets and sessions survive
    restarts and no installation uses a published placeholder."""
    path = data_dir / "secret_key"
    create_private_once(path, secrets.token_urlsafe(48) + "\n")
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds no usable key; delete it to make a new one")
    return key
