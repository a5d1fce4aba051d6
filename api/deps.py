"""What routes depend on: the process's shared state and the authenticated client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api.problems import ApiProblem
from paysaga.api_keys import key_identity, matching_key
from paysaga.settings import Settings


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: Engine
    temporal: Client
    api_keys: tuple[str, ...]
    alipay_public_key: rsa.RSAPublicKey
    alipay_app_id: str
    alipay_seller_id: str | None


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
