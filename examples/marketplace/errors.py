"""Every error to one HTTP status, in one place: :data:`STATUS` and the handler Starlette calls.

| error | status | why |
|---|---|---|
| ``Unauthorized`` (no token, forged or expired token) | 401 | who is asking is unknown |
| ``Forbidden`` (not your broadcast, not offered to you) | 403 | known, but not allowed |
| ``BroadcastNotFound`` | 404 | no such booking or order |
| ``TransitionRefused``, ``InvalidTransition``, ``OpenBroadcastExists`` | 409 | the broadcast's state says no |
| ``DuplicateBroadcast`` | 409 | the id is taken |
| ``BadRequest`` (the app's checks of a body) | 422 | the request itself is wrong |
| ``InvalidArgument`` | 422 | the library refused an argument |
| ``IdempotencyKeyReused`` | 422 | the key was used for another request |
| ``ConcurrentUpdate`` | 503 (``Retry-After: 1``) | lost the race too often; retrying is safe |
| ``StoreError`` | 503 (``Retry-After: 1``) | the database failed; nothing was half written |
| ``CorruptState`` | 500 | a stored status no state knows: a bug or a bad migration |

A body is ``{"error": <class name>, "message": <text>}``, plus ``"reason"`` for a refusal. A 403 says
nothing about the broadcast's state, so a user cannot probe broadcasts that are not theirs.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from broadcast_lifecycle import (
    BroadcastError,
    BroadcastNotFound,
    ConcurrentUpdate,
    CorruptState,
    DuplicateBroadcast,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidTransition,
    OpenBroadcastExists,
    StoreError,
    TransitionRefused,
)

from .auth import Unauthorized

__all__ = ["STATUS", "BadRequest", "Forbidden", "error_response", "status_of"]


class Forbidden(Exception):
    """The user may not do this to this broadcast (another customer's, or not offered to them)."""


class BadRequest(Exception):
    """The request's body or path is not something the app can use; the message names the field."""


STATUS: dict[type[Exception], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    BroadcastNotFound: 404,
    TransitionRefused: 409,
    InvalidTransition: 409,
    OpenBroadcastExists: 409,
    DuplicateBroadcast: 409,
    BadRequest: 422,
    InvalidArgument: 422,
    IdempotencyKeyReused: 422,
    ConcurrentUpdate: 503,
    StoreError: 503,
    CorruptState: 500,
    BroadcastError: 500,
}
"""Status by error class; a subclass not listed takes its nearest listed base's."""

RETRY_LATER = {ConcurrentUpdate, StoreError}


def status_of(exc: Exception) -> int:
    """The HTTP status ``exc`` is answered with."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(exc: Exception) -> JSONResponse:
    """The JSON answer to ``exc``."""
    body: dict[str, object] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, TransitionRefused):
        body["reason"] = exc.reason
    headers = {"Retry-After": "1"} if any(isinstance(exc, cls) for cls in RETRY_LATER) else None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status_of(exc), headers=headers)


async def handle(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette's exception handler for every class in :data:`STATUS`."""
    return error_response(exc)
