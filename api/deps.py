"""What routes depend on: the process's shared state, the authenticated client, and the
authenticated operator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api import request_signatures
from api.api_keys import key_identity, matching_key
from api.problems import ApiProblem
from api.rate_limits import RateLimits
from api.request_signatures import SCHEME, SignatureRefused
from api.sources import CallbackSources
from core.codec import EncryptionCodec
from core.settings import Settings
from core.vocabulary import Gateway
from gateways.gateway import NotificationVerifier
from store import nonces
from store.db import transaction

# Both ways a client may prove itself, offered with every 401.
CHALLENGE = {"WWW-Authenticate": f"Bearer, {SCHEME}"}


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: Engine
    temporal: Client
    api_keys: tuple[str, ...]
    # Operators' keys: never a client's, and a client's key is never one of them.
    admin_keys: tuple[str, ...]
    # The payload codec of the Temporal client, which the codec server offers to operators.
    codec: EncryptionCodec
    # Key ids (`key_identity`) whose requests must be signed.
    signed_key_ids: frozenset[str]
    rate_limits: RateLimits
    # One callback door per gateway offered; its keys are the gateways orders may use.
    verifiers: Mapping[Gateway, NotificationVerifier]
    callback_sources: CallbackSources


async def app_state(request: Request) -> AppState:
    # Async, though it awaits nothing: FastAPI runs a plain function's dependency in a thread
    # of its pool, a hop that costs every request more than the lookup itself.
    state = request.app.state.paysaga
    assert isinstance(state, AppState)
    return state


State = Annotated[AppState, Depends(app_state)]


async def authenticated_client(
    request: Request, state: State, authorization: Annotated[str | None, Header()] = None
) -> str:
    """The calling client's key identity: 401 unless the request presents a known API key
    (`Bearer`) or is signed with one (`PAYSAGA-HMAC-SHA256`, see api.request_signatures);
    429, with Retry-After, once that key has spent its budget."""
    # Read first: a body over its limit is refused (413) before anything of it is believed.
    body = await request.body()
    scheme, _, credentials = (authorization or "").partition(" ")
    # Authentication schemes are case-insensitive (RFC 9110).
    if scheme.upper() == SCHEME:
        identity = _signed(state, request, credentials, body)
    elif scheme.lower() == "bearer":
        identity = _presented(state, credentials.strip())
    else:
        raise _unauthorized(
            f"missing or wrong API key: send 'Authorization: Bearer <key>' or sign the "
            f"request ({SCHEME})"
        )
    retry_after = state.rate_limits.retry_after(identity)
    if retry_after is not None:
        raise ApiProblem(
            429,
            f"this API key's budget of {state.settings.rate_limit_requests} requests per "
            f"{state.settings.rate_limit_window_seconds} s is spent: retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    return identity


ClientIdentity = Annotated[str, Depends(authenticated_client)]


async def authenticated_admin(
    request: Request, state: State, authorization: Annotated[str | None, Header()] = None
) -> str:
    """The calling operator's key identity: 401 unless the request presents an admin key
    (PAYSAGA_ADMIN_KEYS) as `Bearer`. A client's API key is not one, nor is a signed request."""
    # As for clients: a body over its limit is refused (413) before the key is looked at.
    await request.body()
    scheme, _, credentials = (authorization or "").partition(" ")
    offered = credentials.strip() if scheme.lower() == "bearer" else ""
    key = matching_key(offered, state.admin_keys)
    if key is not None:
        return key_identity(key)
    if offered and matching_key(offered, state.api_keys) is not None:
        detail = "this is a client's API key: this route takes an admin key"
    else:
        detail = "missing or wrong admin key: send 'Authorization: Bearer <admin key>'"
    raise ApiProblem(401, f"{detail} (PAYSAGA_ADMIN_KEYS)", headers={"WWW-Authenticate": "Bearer"})


AdminIdentity = Annotated[str, Depends(authenticated_admin)]


def _presented(state: AppState, offered: str) -> str:
    key = matching_key(offered, state.api_keys)
    if key is None:
        raise _unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'")
    identity = key_identity(key)
    if identity in state.signed_key_ids:
        raise _unauthorized(
            f"key {identity} must sign its requests ({SCHEME}); it is not taken as a Bearer key"
        )
    return identity


def _signed(state: AppState, request: Request, credentials: str, body: bytes) -> str:
    now = datetime.now(UTC)
    try:
        signed = request_signatures.parse(credentials)
        keys = {key_identity(key): key for key in state.api_keys}
        known = matching_key(signed.key_id, tuple(keys))
        if known is None:
            raise SignatureRefused(f"key_id {signed.key_id} names no API key here")
        request_signatures.check(
            signed,
            key=keys[known],
            method=request.method,
            target=_target(request),
            body=body,
            now=now,
        )
        with transaction(state.engine) as session:
            fresh = nonces.first_sighting(
                session,
                scope=f"client:{known}",
                nonce=signed.nonce,
                now=now,
                window=request_signatures.FRESHNESS_WINDOW,
            )
        if not fresh:
            raise SignatureRefused("nonce was used before: a replay")
    except SignatureRefused as refused:
        raise _unauthorized(f"signed request refused: {refused}") from refused
    return known


def _target(request: Request) -> bytes:
    """The request target as the client sent it: path and query, still percent-encoded."""
    path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    query: bytes = request.scope["query_string"]
    return path + b"?" + query if query else path


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, detail, headers=CHALLENGE)
