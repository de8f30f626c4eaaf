"""The HTTP JSON endpoints (Starlette routes). Every request needs ``Authorization: Bearer <token>``.

=====================================================  ==============================  ==========================
method and path                                        who                             does
=====================================================  ==============================  ==========================
``GET /api/me``                                        anyone                          the token's user and role
``POST /api/bookings``, ``POST /api/orders``           a customer                      create, offer, activate
``GET /api/bookings/{id}``, ``GET /api/orders/{id}``   its customer, its transporters  state, columns, actions,
                                                                                       history
``POST /api/{kind}s/{id}/accept`` ``{"slots": n}``     an offered transporter          take slots
``POST /api/{kind}s/{id}/release`` ``{"slots": n}``    a transporter holding slots     give slots back
``POST /api/{kind}s/{id}/start-trip``                  its customer                    the trip starts
``POST /api/{kind}s/{id}/complete``                    its customer                    the trip is done
``POST /api/{kind}s/{id}/cancel`` ``{"reason": ...}``  its customer                    cancel
``GET /api/offers``                                    a transporter                   open offers to them
``GET /api/broadcasts``                                a customer                      theirs, newest first
=====================================================  ==============================  ==========================

Commands answer with the broadcast's lifecycle fields (as the events carry them). An
``Idempotency-Key`` header makes a command safe to retry: the same user sending the same key for
the same request gets the first outcome again, marked ``Idempotent-Replayed: true``. Errors: see
:mod:`marketplace.errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broadcast_lifecycle import CommandResult

from .auth import User, verify
from .commands import Marketplace
from .errors import BadRequest
from .payloads import broadcast_json, parse_new, parse_slots

__all__ = ["routes"]

PLURAL = {"bookings": "booking", "orders": "order"}


def _marketplace(request: Request) -> Marketplace:
    market: Marketplace = request.app.state.marketplace
    return market


def _user(request: Request) -> User:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return verify(token if scheme.lower() == "bearer" else None, _marketplace(request).settings.secret)


def _kind(request: Request) -> str:
    kinds: str = request.path_params["kinds"]
    if kinds not in PLURAL:
        raise BadRequest(f"unknown kind {kinds!r}: bookings or orders")
    return PLURAL[kinds]


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return await request.json()
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc


def _reason(body: object) -> str | None:
    reason = body.get("reason") if isinstance(body, dict) else None
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise BadRequest("reason must be a string of at most 500 characters")
    return reason


def _key(request: Request) -> str | None:
    return request.headers.get("idempotency-key")


def _answer(result: CommandResult, status: int = 200) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(broadcast_json(result.snapshot), status_code=status, headers=headers)


async def me(request: Request) -> JSONResponse:
    """Who the token names."""
    user = _user(request)
    return JSONResponse({"id": user.id, "role": user.role})


async def create(request: Request) -> JSONResponse:
    """Create a booking or an order, offer it, open it."""
    user, kind = _user(request), _kind(request)
    new = parse_new(kind, await _body(request))
    created = await _marketplace(request).create(user, kind, new, _key(request))
    headers = {"Idempotent-Replayed": "true"} if created.replayed else None
    return JSONResponse(broadcast_json(created.snapshot), status_code=200 if created.replayed else 201,
                        headers=headers)


async def read(request: Request) -> JSONResponse:
    """One broadcast with its columns and history."""
    user, kind = _user(request), _kind(request)
    return JSONResponse(await _marketplace(request).read(user, kind, request.path_params["id"]))


async def accept(request: Request) -> JSONResponse:
    """A transporter takes slots."""
    user, kind = _user(request), _kind(request)
    slots = parse_slots(await _body(request))
    return _answer(await _marketplace(request).accept(user, kind, request.path_params["id"], slots, _key(request)))


async def release(request: Request) -> JSONResponse:
    """A transporter gives slots back."""
    user, kind = _user(request), _kind(request)
    body = await _body(request)
    slots = parse_slots({k: v for k, v in body.items() if k != "reason"} if isinstance(body, dict) else body)
    return _answer(await _marketplace(request).release(user, kind, request.path_params["id"], slots, _reason(body),
                                                       _key(request)))


def _by_owner(trigger: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def endpoint(request: Request) -> JSONResponse:
        user, kind = _user(request), _kind(request)
        reason = _reason(await _body(request))
        return _answer(await _marketplace(request).by_owner(user, kind, request.path_params["id"], trigger, reason,
                                                            _key(request)))

    endpoint.__doc__ = f"The customer runs {trigger}."
    return endpoint


async def offers(request: Request) -> JSONResponse:
    """The transporter's open offers."""
    return JSONResponse(await _marketplace(request).offers(_user(request)))


async def broadcasts(request: Request) -> JSONResponse:
    """The customer's broadcasts."""
    return JSONResponse(await _marketplace(request).mine(_user(request)))


routes = [
    Route("/api/me", me),
    Route("/api/offers", offers),
    Route("/api/broadcasts", broadcasts),
    Route("/api/{kinds}", create, methods=["POST"]),
    Route("/api/{kinds}/{id:int}", read),
    Route("/api/{kinds}/{id:int}/accept", accept, methods=["POST"]),
    Route("/api/{kinds}/{id:int}/release", release, methods=["POST"]),
    Route("/api/{kinds}/{id:int}/start-trip", _by_owner("start_trip"), methods=["POST"]),
    Route("/api/{kinds}/{id:int}/complete", _by_owner("complete"), methods=["POST"]),
    Route("/api/{kinds}/{id:int}/cancel", _by_owner("cancel"), methods=["POST"]),
]
"""The API's routes (mounted by :func:`marketplace.app.create_app`)."""
