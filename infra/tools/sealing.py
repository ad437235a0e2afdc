"""Tool config secrets at rest: sealed when a tool is saved, masked when it is shown.

A tool's ``headers`` (and an MCP tool's ``env``) map names to values. A value sent
as ``{"value": ..., "secret": true}`` (and every env value, and the headers that carry
credentials: ``Authorization``, ``Cookie``, ``X-Api-Key``, ``Proxy-Authorization``,
marked or not) is stored as ``{"value": <ciphertext>, "secret": true}``; another plain
string is stored as it is. A URL's user-info (``https://user:pass@host``) is a
credential too: it moves into a sealed ``Authorization: Basic`` header.
Responses show a sealed value as ``{"value": "***", "secret": true}``, and a value
sent back as ``"***"`` keeps what is stored. ``common.reveal`` opens sealed values,
right before use.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from infra.secrets import encrypt

SECRET_MASK = "***"  # noqa: S105  (what a sealed value looks like in responses)

# Config maps whose values may be secret. MCP env values are always secret.
SECRET_MAPS = ("headers", "env")
ALWAYS_SECRET = ("env",)
# Headers that carry credentials: secret even when not marked so.
SECRET_HEADERS = frozenset({"authorization", "cookie", "x-api-key", "proxy-authorization"})
# What a tool connects to: changing any of it drops the stored secrets.
DESTINATION_FIELDS = ("url", "command", "args")


def destination(config: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(config.get(field) for field in DESTINATION_FIELDS)


def move_url_credentials(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with a URL's user-info moved into an ``Authorization: Basic`` header
    (sealed like any secret); ValueError if the config sets Authorization as well."""
    url = config.get("url")
    if not url:
        return config
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return config
    headers = dict(config.get("headers") or {})
    if any(name.lower() == "authorization" for name in headers):
        raise ValueError(
            "the url has user-info and the headers an Authorization header; keep one of them"
        )
    user_pass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    headers["Authorization"] = {
        "value": "Basic " + base64.b64encode(user_pass.encode()).decode(),
        "secret": True,
    }
    host = parts.netloc.rpartition("@")[2]
    return {**config, "url": urlunsplit(parts._replace(netloc=host)), "headers": headers}


class NoSecretToKeep(ValueError):
    """``***`` was sent for a value, but no sealed value is stored under that name."""

    def __init__(self, field: str, key: str) -> None:
        super().__init__(
            f'config.{field}.{key} is "***" but no secret is stored under that '
            "name; send the real value"
        )
        self.field = field
        self.key = key


def seal_config(
    config: dict[str, Any], stored: dict[str, Any] | None, secret_key: str
) -> dict[str, Any]:
    """``config`` (validated, as JSON) the way it is stored: secret values encrypted, and a
    value sent as ``***`` replaced by the sealed value of ``stored`` under the same name."""
    sealed_config = dict(config)
    for field in SECRET_MAPS:
        if field not in config:
            continue
        kept = (stored or {}).get(field, {})
        sealed: dict[str, Any] = {}
        for key, value in config[field].items():
            is_object = isinstance(value, dict)
            raw = value["value"] if is_object else value
            if raw == SECRET_MASK:
                # The mask as read back (even as a bare "***"): keep what is stored.
                if not isinstance(kept.get(key), dict):
                    raise NoSecretToKeep(field, key)
                sealed[key] = kept[key]
            elif (
                field in ALWAYS_SECRET
                or (is_object and value["secret"])
                or (field == "headers" and key.lower() in SECRET_HEADERS)
            ):
                sealed[key] = {"value": encrypt(raw, secret_key), "secret": True}
            else:
                sealed[key] = raw
        sealed_config[field] = sealed
    return sealed_config


def masked_config(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored config as responses show it: every sealed value replaced by the mask."""
    shown = dict(stored)
    for field in SECRET_MAPS:
        if field in shown:
            shown[field] = {
                k: {"value": SECRET_MASK, "secret": True} if isinstance(v, dict) else v
                for k, v in shown[field].items()
            }
    return shown


def masked_entries(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Where a config holds the mask instead of a sealed value: (field, name) pairs."""
    return [
        (field, key)
        for field in SECRET_MAPS
        for key, value in (config.get(field) or {}).items()
        if isinstance(value, dict) and value.get("value") == SECRET_MASK
    ]


class Repointed(ValueError):
    """The stored tool points elsewhere than the run's snapshot: its secrets stay home."""


def with_stored_secrets(config: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """A run's snapshot of a config (secret values masked: secrets never travel in
    workflow inputs) with each masked value filled from the config stored now, read by
    the activity right before the call. The stored tool must still point where the
    snapshot does (``Repointed`` otherwise: a secret is never sent to another host); a
    secret removed since the snapshot is left out."""
    masked = masked_entries(config)
    if not masked:
        return config  # no secrets, or a run from before they stayed out (ciphertext)
    if stored is None or destination(stored) != destination(config):
        raise Repointed(
            "the tool was deleted or now points elsewhere since the run "
            "started; its secrets are not sent to the old destination"
        )
    filled = {field: dict(config.get(field) or {}) for field in SECRET_MAPS if field in config}
    for field, key in masked:
        value = (stored.get(field) or {}).get(key)
        if isinstance(value, dict):
            filled[field][key] = value
        else:
            del filled[field][key]
    return {**config, **filled}
