"""Webhook endpoints, for the business's app (API key required): where its events are sent, the
secrets that sign them, and what became of each delivery.

A new endpoint's signing secret, and a rotated one, is shown once, in that answer: paysaga keeps
it sealed and never shows it again. Operators re-send a delivery through their own door
(`POST /v1/admin/webhook-deliveries/{id}/resend`), by the same function as the app's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from api.deps import AppState, ClientIdentity, State
from api.orders import ERRORS
from api.problems import ApiProblem
from api.schemas import ID_CHARS, PLAIN_ID, Problem
from core.standard_webhooks import new_secret
from core.vocabulary import EventType
from store import webhooks
from store.db import transaction
from store.models import AttemptOutcome, DeliveryStatus, WebhookEndpoint
from store.webhooks import DeliveryView

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])

# Plain http goes to this machine only, and only in dev mode: a receiver the app runs beside us.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
URL_CHARS = 1000
DEFAULT_OVERLAP_SECONDS = 86400
MAX_OVERLAP_SECONDS = 7 * 86400
EndpointId = Annotated[str, Path(min_length=1, max_length=ID_CHARS, pattern=PLAIN_ID)]
DeliveryId = Annotated[str, Path(min_length=1, max_length=ID_CHARS, pattern=PLAIN_ID)]
RESPONSES: dict[int | str, dict[str, object]] = {
    **ERRORS,
    404: {"model": Problem, "description": "Unknown webhook endpoint or delivery"},
}


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # https; in dev mode also http to this machine (127.0.0.1, ::1, localhost). However it is
    # written, a request within these bounds stays within the 16 KiB a client's body may be.
    url: Annotated[str, Field(min_length=1, max_length=URL_CHARS)]
    events: Annotated[list[EventType], Field(min_length=1, max_length=len(EventType))]


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How long the replaced secret still signs, beside the new one.
    overlap_seconds: Annotated[int, Field(ge=0, le=MAX_OVERLAP_SECONDS)] = DEFAULT_OVERLAP_SECONDS


class EndpointPublic(BaseModel):
    id: str
    url: str
    events: list[EventType]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    # Until then the secret the last rotation replaced signs too.
    previous_secret_expires_at: datetime | None


class EndpointWithSecret(EndpointPublic):
    # Shown in this answer only: paysaga keeps it sealed and never shows it again.
    secret: str


class AttemptPublic(BaseModel):
    at: datetime
    outcome: AttemptOutcome
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryPublic(BaseModel):
    delivery_id: str
    event_id: str
    event_type: EventType
    # The order the event tells of, or whose payment moved the reservation it tells of.
    order_id: str
    status: DeliveryStatus
    created_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptPublic]


@router.post("", status_code=201, response_model=EndpointWithSecret, responses=RESPONSES)
def create_endpoint(body: EndpointCreate, state: State, _: ClientIdentity) -> EndpointWithSecret:
    """Send these events to `url`. The answer holds the signing secret (`whsec_…`), shown this
    once: deliveries are signed with it as Standard Webhooks says."""
    check_endpoint_url(body.url, production=state.settings.mode == "production")
    secret = new_secret()
    with transaction(state.engine) as session:
        endpoint = webhooks.create_endpoint(
            session,
            url=body.url,
            # Each type once, in the order given.
            events=list(dict.fromkeys(body.events)),
            secret=secret,
            codec=state.codec,
            now=datetime.now(UTC),
        )
        return EndpointWithSecret(**_public(endpoint).model_dump(), secret=secret)


@router.get("", response_model=list[EndpointPublic], responses=RESPONSES)
def list_endpoints(state: State, _: ClientIdentity) -> list[EndpointPublic]:
    with transaction(state.engine) as session:
        return [_public(endpoint) for endpoint in webhooks.endpoints(session)]


@router.post("/{endpoint_id}/disable", response_model=EndpointPublic, responses=RESPONSES)
def disable_endpoint(endpoint_id: EndpointId, state: State, _: ClientIdentity) -> EndpointPublic:
    """Send it nothing more: its pending deliveries are cancelled."""
    with transaction(state.engine) as session:
        _known(session, endpoint_id)
        endpoint = webhooks.disable_endpoint(
            session, endpoint_id=endpoint_id, reason="disabled by the client", now=datetime.now(UTC)
        )
        return _public(endpoint)


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret, responses=RESPONSES)
def rotate_secret(
    endpoint_id: EndpointId,
    state: State,
    _: ClientIdentity,
    body: Annotated[SecretRotation | None, Body()] = None,
) -> EndpointWithSecret:
    """A new signing secret, shown this once. The old one signs beside it for
    `overlap_seconds` (default a day), so that the receiver can move over without a gap."""
    rotation = body or SecretRotation()
    secret = new_secret()
    now = datetime.now(UTC)
    with transaction(state.engine) as session:
        _known(session, endpoint_id)
        endpoint = webhooks.rotate_secret(
            session,
            endpoint_id=endpoint_id,
            secret=secret,
            codec=state.codec,
            overlap_until=now + timedelta(seconds=rotation.overlap_seconds),
            now=now,
        )
        return EndpointWithSecret(**_public(endpoint).model_dump(), secret=secret)


@router.get("/{endpoint_id}/deliveries", response_model=list[DeliveryPublic], responses=RESPONSES)
def list_deliveries(
    endpoint_id: EndpointId,
    state: State,
    _: ClientIdentity,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DeliveryPublic]:
    """The endpoint's latest deliveries, newest event first, each with its attempts."""
    with transaction(state.engine) as session:
        _known(session, endpoint_id)
        views = webhooks.deliveries_of(session, endpoint_id=endpoint_id, limit=limit)
        return [_delivery_public(view) for view in views]


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/resend",
    status_code=202,
    response_model=DeliveryPublic,
    responses={
        **RESPONSES,
        409: {"model": Problem, "description": "The delivery's endpoint is disabled"},
    },
)
def resend(
    endpoint_id: EndpointId, delivery_id: DeliveryId, state: State, _: ClientIdentity
) -> DeliveryPublic:
    """Send a delivery again: the same event (id and body), signed anew. One still pending is
    handed to its delivery workflow again."""
    return resend_delivery(state, delivery_id, endpoint_id=endpoint_id)


def resend_delivery(
    state: AppState, delivery_id: str, *, endpoint_id: str | None
) -> DeliveryPublic:
    """Make a delivery pending again (of `endpoint_id`, when given): the relay hands it to its
    delivery workflow. 404 unknown, 409 its endpoint disabled."""
    with transaction(state.engine) as session:
        try:
            delivery = webhooks.resend(
                session, delivery_id=delivery_id, endpoint_id=endpoint_id, now=datetime.now(UTC)
            )
        except webhooks.UnknownDelivery as unknown:
            raise ApiProblem(404, str(unknown)) from unknown
        except webhooks.ResendRefused as refused:
            raise ApiProblem(409, str(refused)) from refused
        return _delivery_public(webhooks.delivery_view(session, delivery))


def check_endpoint_url(url: str, *, production: bool) -> None:
    allowed = (
        "an https URL"
        if production
        else "an https URL, or in dev mode an http URL to 127.0.0.1, ::1 or localhost"
    )
    if not (url.isascii() and url.isprintable()) or " " in url:
        # What is no URL never reaches the database (PostgreSQL refuses NUL in text).
        raise ApiProblem(422, f"url must be {allowed}, in printable ASCII, not {url!r}")
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # a port that is no number raises
    except ValueError:
        raise ApiProblem(422, f"url must be {allowed}, not {url!r}") from None
    if parts.username is not None or parts.password is not None:
        raise ApiProblem(
            422, "url may not hold credentials (user:password@): they would be kept in clear"
        )
    https = parts.scheme == "https" and bool(host)
    loopback = not production and parts.scheme == "http" and host in LOOPBACK_HOSTS
    if not (https or loopback):
        raise ApiProblem(422, f"url must be {allowed}, not {url!r}")


def _known(session: Session, endpoint_id: str) -> WebhookEndpoint:
    endpoint = webhooks.get_endpoint(session, endpoint_id)
    if endpoint is None:
        raise ApiProblem(404, f"no webhook endpoint {endpoint_id!r}")
    return endpoint


def _public(endpoint: WebhookEndpoint) -> EndpointPublic:
    return EndpointPublic(
        id=endpoint.id,
        url=endpoint.url,
        events=webhooks.event_types(endpoint),
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_at,
        previous_secret_expires_at=endpoint.previous_secret_until,
    )


def _delivery_public(view: DeliveryView) -> DeliveryPublic:
    delivery = view.delivery
    return DeliveryPublic(
        delivery_id=delivery.id,
        event_id=view.event.id,
        event_type=EventType(view.event.type),
        order_id=delivery.order_id,
        status=DeliveryStatus(delivery.status),
        created_at=delivery.created_at,
        finished_at=delivery.finished_at,
        attempts=[
            AttemptPublic(
                at=attempt.at,
                outcome=AttemptOutcome(attempt.outcome),
                status_code=attempt.status_code,
                error=attempt.error,
                duration_ms=attempt.duration_ms,
            )
            for attempt in view.attempts
        ],
    )
