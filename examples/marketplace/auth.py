"""Tokens the app signs (HMAC-SHA256, standard library only) naming a user and a role.

A token is ``<payload>.<signature>``: the payload is ``{"sub": user, "role": role, "exp": seconds}``
as base64url JSON (``exp``: when it stops being accepted, in Unix seconds), the signature an HMAC of
the payload under the app's secret. The same token authenticates the HTTP API (``Authorization:
Bearer <token>``) and the Socket.IO connection (``auth={"token": ...}``); a socket is checked when it
connects, so one connected before the token expired stays connected. A real app would also rotate
its secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

__all__ = ["ROLES", "TOKEN_TTL", "Role", "Unauthorized", "User", "sign", "verify"]

TOKEN_TTL = timedelta(hours=12)
"""How long a token is accepted after it was signed, unless ``sign`` is told otherwise."""

Role = Literal["customer", "transporter"]
ROLES: tuple[Role, ...] = ("customer", "transporter")


class Unauthorized(Exception):
    """No token, or one this app did not sign: the request is refused (HTTP 401, connect refused)."""


@dataclass(frozen=True, slots=True)
class User:
    """Who a token names."""

    id: str
    role: Role

    @property
    def scope(self) -> str:
        """``customer:c-1``, ``transporter:t-2``: what the user's idempotency keys are prefixed with."""
        return f"{self.role}:{self.id}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signature(payload: str, secret: bytes) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def sign(user: User, secret: bytes, ttl: timedelta = TOKEN_TTL, now: float | None = None) -> str:
    """A token naming ``user``, signed with ``secret``, accepted for ``ttl`` from ``now`` (Unix seconds;
    the clock's time if not given)."""
    if ttl <= timedelta(0):
        raise ValueError(f"ttl must be positive, got {ttl}")
    expires = int((time.time() if now is None else now) + ttl.total_seconds())
    claims = {"sub": user.id, "role": user.role, "exp": expires}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_signature(payload, secret)}"


def verify(token: object, secret: bytes, now: float | None = None) -> User:
    """The user ``token`` names; ``Unauthorized`` when it is missing, malformed, not signed with
    ``secret`` or expired at ``now`` (Unix seconds; the clock's time if not given)."""
    if not isinstance(token, str) or not token:
        raise Unauthorized("missing token")
    payload, _, signature = token.partition(".")
    if not hmac.compare_digest(signature.encode(), _signature(payload, secret).encode()):
        raise Unauthorized("invalid token")
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError) as exc:  # signed by us, so only a bug lands here
        raise Unauthorized("invalid token") from exc
    if not isinstance(claims, dict):
        raise Unauthorized("invalid token")
    sub, role, expires = claims.get("sub"), claims.get("role"), claims.get("exp")
    if not isinstance(sub, str) or not sub or role not in ROLES or type(expires) is not int:
        raise Unauthorized("invalid token")
    if (time.time() if now is None else now) >= expires:
        raise Unauthorized("expired token: sign in again")
    return User(sub, role)
