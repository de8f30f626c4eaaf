"""Tokens the app signs (HMAC-SHA256, standard library only) naming a user and a role.

A token is ``<payload>.<signature>``: the payload is ``{"sub": user, "role": role}`` as base64url
JSON, the signature an HMAC of the payload under the app's secret. The same token authenticates the
HTTP API (``Authorization: Bearer <token>``) and the Socket.IO connection (``auth={"token": ...}``).
There is no expiry: the example issues tokens to demo users; a real app would add one (and rotate
its secret).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

__all__ = ["ROLES", "Role", "Unauthorized", "User", "sign", "verify"]

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


def sign(user: User, secret: bytes) -> str:
    """A token naming ``user``, signed with ``secret``."""
    payload = _b64(json.dumps({"sub": user.id, "role": user.role}, separators=(",", ":")).encode())
    return f"{payload}.{_signature(payload, secret)}"


def verify(token: object, secret: bytes) -> User:
    """The user ``token`` names; ``Unauthorized`` when it is missing, malformed or not signed with ``secret``."""
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
    sub, role = claims.get("sub"), claims.get("role")
    if not isinstance(sub, str) or not sub or role not in ROLES:
        raise Unauthorized("invalid token")
    return User(sub, role)
