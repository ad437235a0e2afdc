"""Access tokens: short-lived JWTs (HS256 only) naming a user and one workspace.

The algorithm is pinned: a token whose header names another algorithm, or ``none``,
is refused before its signature is even looked at.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from infra.security.keys import purpose_key

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "ws", "jti"]


class InvalidToken(Exception):
    """The token is malformed, forged, of another algorithm, or expired."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    workspace_id: int
    token_id: str
    expires_at: datetime


def issue_access_token(
    secret_key: str, user_id: int, workspace_id: int, ttl: timedelta, now: datetime | None = None
) -> tuple[str, AccessClaims]:
    now = now or datetime.now(UTC)
    claims = AccessClaims(user_id, workspace_id, uuid.uuid4().hex, now + ttl)
    payload = {
        "sub": str(user_id),
        "ws": workspace_id,
        "jti": claims.token_id,
        "iat": int(now.timestamp()),
        "exp": int(claims.expires_at.timestamp()),
    }
    token = jwt.encode(payload, purpose_key(secret_key, "jwt"), algorithm=ALGORITHM)
    return token, claims


def read_access_token(secret_key: str, token: str) -> AccessClaims:
    try:
        payload = jwt.decode(
            token,
            purpose_key(secret_key, "jwt"),
            algorithms=[ALGORITHM],
            options={"require": REQUIRED_CLAIMS},
        )
        user_id, workspace_id = int(payload["sub"]), payload["ws"]
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("the access token has expired; sign in again") from exc
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise InvalidToken("the access token is not valid") from exc
    if not isinstance(workspace_id, int) or isinstance(workspace_id, bool):
        raise InvalidToken("the access token is not valid")
    return AccessClaims(
        user_id, workspace_id, str(payload["jti"]), datetime.fromtimestamp(payload["exp"], UTC)
    )
