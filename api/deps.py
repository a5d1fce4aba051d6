"""What routes depend on: the process's shared state and the authenticated client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api.api_keys import key_identity, matching_key
from api.problems import ApiProblem
from core.settings import Settings
from core.vocabulary import Gateway
from gateways.gateway import NotificationVerifier


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: Engine
    temporal: Client
    api_keys: tuple[str, ...]
    # One callback door per gateway offered; its keys are the gateways orders may use.
    verifiers: Mapping[Gateway, NotificationVerifier]


def app_state(request: Request) -> AppState:
    state = request.app.state.paysaga
    assert isinstance(state, AppState)
    return state


State = Annotated[AppState, Depends(app_state)]


def authenticated_client(
    state: State, authorization: Annotated[str | None, Header()] = None
) -> str:
    """The calling client's key identity; 401 unless a known API key is presented."""
    scheme, _, offered = (authorization or "").partition(" ")
    key = matching_key(offered.strip(), state.api_keys) if scheme.lower() == "bearer" else None
    if key is None:
        raise ApiProblem(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
    return key_identity(key)


ClientIdentity = Annotated[str, Depends(authenticated_client)]
