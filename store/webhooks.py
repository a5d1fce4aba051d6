"""Data access for webhook endpoints, their deliveries and the attempts at each.

Signing secrets are sealed here, under the payload codec's encrypting key and bound to their
endpoint's id, and opened here for the activity that signs with them: nothing else sees them.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select, update

from core.codec import EncryptionCodec, Sealed
from core.vocabulary import EventType
from store.models import (
    AttemptOutcome,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

# The attempt's error, cut to its column.
ERROR_CHARS = 500


class UnknownDelivery(Exception):
    """No such delivery (of that endpoint)."""


class ResendRefused(Exception):
    """The delivery cannot be sent again: the message says why."""


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def create_endpoint(
    session: Session,
    *,
    url: str,
    events: Sequence[EventType],
    secret: str,
    codec: EncryptionCodec,
    now: datetime,
) -> WebhookEndpoint:
    endpoint_id = new_id("we_")
    sealed, key_id = _seal(codec, endpoint_id, secret)
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        url=url,
        events=",".join(events),
        enabled=True,
        secret_sealed=sealed,
        secret_key_id=key_id,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    return endpoint


def endpoints(session: Session) -> Sequence[WebhookEndpoint]:
    return session.exec(
        select(WebhookEndpoint).order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))
    ).all()


def enabled_endpoints(session: Session) -> Sequence[WebhookEndpoint]:
    return session.exec(select(WebhookEndpoint).where(col(WebhookEndpoint.enabled))).all()


def get_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint | None:
    return session.get(WebhookEndpoint, endpoint_id)


def event_types(endpoint: WebhookEndpoint) -> list[EventType]:
    return [EventType(name) for name in endpoint.events.split(",")]


def disable_endpoint(
    session: Session, *, endpoint_id: str, reason: str, now: datetime
) -> WebhookEndpoint:
    """No more deliveries to it: those still pending end cancelled."""
    endpoint = session.get_one(WebhookEndpoint, endpoint_id, with_for_update=True)
    if not endpoint.enabled:
        return endpoint
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = now
    session.exec(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.endpoint_id) == endpoint_id,
            col(WebhookDelivery.status) == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.CANCELLED, finished_at=now, dispatch_due_at=None)
    )
    return endpoint


def rotate_secret(
    session: Session,
    *,
    endpoint_id: str,
    secret: str,
    codec: EncryptionCodec,
    overlap_until: datetime,
    now: datetime,
) -> WebhookEndpoint:
    """`secret` signs from now on; the one it replaces signs beside it until `overlap_until`
    (a secret still overlapping from an earlier rotation stops at once)."""
    endpoint = session.get_one(WebhookEndpoint, endpoint_id, with_for_update=True)
    endpoint.previous_secret_sealed = endpoint.secret_sealed
    endpoint.previous_secret_key_id = endpoint.secret_key_id
    endpoint.previous_secret_until = overlap_until
    endpoint.secret_sealed, endpoint.secret_key_id = _seal(codec, endpoint_id, secret)
    endpoint.updated_at = now
    return endpoint


def signing_secrets(
    endpoint: WebhookEndpoint, *, codec: EncryptionCodec, now: datetime
) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the one it replaced while
    their overlap lasts."""
    secrets = [_unseal(codec, endpoint.id, endpoint.secret_sealed, endpoint.secret_key_id)]
    if (
        endpoint.previous_secret_sealed is not None
        and endpoint.previous_secret_key_id is not None
        and endpoint.previous_secret_until is not None
        and now < endpoint.previous_secret_until
    ):
        secrets.append(
            _unseal(
                codec, endpoint.id, endpoint.previous_secret_sealed, endpoint.previous_secret_key_id
            )
        )
    return secrets


def _seal(codec: EncryptionCodec, endpoint_id: str, secret: str) -> tuple[str, str]:
    sealed = codec.seal(secret.encode(), context=_context(endpoint_id))
    return base64.b64encode(sealed.data).decode(), sealed.key_id


def _unseal(codec: EncryptionCodec, endpoint_id: str, sealed: str, key_id: str) -> str:
    data = base64.b64decode(sealed)
    return codec.unseal(Sealed(key_id, data), context=_context(endpoint_id)).decode()


def _context(endpoint_id: str) -> bytes:
    # A sealed secret copied into another endpoint's row does not open there.
    return f"webhook-endpoint:{endpoint_id}".encode()


def add_deliveries(
    session: Session, *, event: WebhookEvent, endpoint_ids: Sequence[str], now: datetime
) -> None:
    """The event is to be sent to each endpoint: the relay hands each delivery on."""
    assert event.seq is not None
    for endpoint_id in endpoint_ids:
        session.add(
            WebhookDelivery(
                id=new_id("dlv_"),
                endpoint_id=endpoint_id,
                event_seq=event.seq,
                order_id=event.order_id,
                status=DeliveryStatus.PENDING,
                dispatch_due_at=now,
                created_at=now,
            )
        )


@dataclass(frozen=True)
class DeliveryView:
    """A delivery as the business's app and operators see it."""

    delivery: WebhookDelivery
    event: WebhookEvent
    attempts: list[WebhookAttempt]


def deliveries_of(session: Session, *, endpoint_id: str, limit: int) -> list[DeliveryView]:
    """The endpoint's latest deliveries, newest event first, each with its attempts."""
    rows = session.exec(
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, col(WebhookEvent.seq) == col(WebhookDelivery.event_seq))
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(col(WebhookDelivery.event_seq).desc(), col(WebhookDelivery.id))
        .limit(limit)
    ).all()
    attempts: dict[str, list[WebhookAttempt]] = {delivery.id: [] for delivery, _ in rows}
    for attempt in session.exec(
        select(WebhookAttempt)
        .where(col(WebhookAttempt.delivery_id).in_(attempts))
        .order_by(col(WebhookAttempt.id))
    ):
        attempts[attempt.delivery_id].append(attempt)
    return [DeliveryView(delivery, event, attempts[delivery.id]) for delivery, event in rows]


def delivery_view(session: Session, delivery: WebhookDelivery) -> DeliveryView:
    attempts = session.exec(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id == delivery.id)
        .order_by(col(WebhookAttempt.id))
    ).all()
    return DeliveryView(delivery, _event(session, delivery), list(attempts))


def next_pending(
    session: Session, *, endpoint_id: str, order_id: str
) -> tuple[WebhookDelivery, WebhookEvent] | None:
    """The endpoint's pending delivery of the order's earliest event still undelivered."""
    row = session.exec(
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, col(WebhookEvent.seq) == col(WebhookDelivery.event_seq))
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.order_id == order_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .order_by(col(WebhookDelivery.event_seq))
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


@dataclass(frozen=True)
class Outgoing:
    """A delivery about to be attempted: where, what, and the secrets that sign it."""

    url: str
    event_id: str
    body: bytes
    secrets: list[str]


def outgoing(
    session: Session, *, delivery_id: str, codec: EncryptionCodec, now: datetime
) -> Outgoing | None:
    """What to send for the delivery now; None if it is no longer pending."""
    delivery = session.get_one(WebhookDelivery, delivery_id)
    endpoint = session.get_one(WebhookEndpoint, delivery.endpoint_id)
    if delivery.status != DeliveryStatus.PENDING or not endpoint.enabled:
        return None
    event = _event(session, delivery)
    return Outgoing(
        url=endpoint.url,
        event_id=event.id,
        body=event.body.encode(),
        secrets=signing_secrets(endpoint, codec=codec, now=now),
    )


@dataclass(frozen=True)
class Attempt:
    at: datetime
    outcome: AttemptOutcome
    status_code: int | None
    error: str | None
    duration_ms: int


def record_attempt(session: Session, *, delivery_id: str, attempt: Attempt) -> DeliveryStatus:
    """Keep the attempt, and end the delivery when it was taken (2xx) or refused for good
    (410, which disables its endpoint); the delivery's status afterwards."""
    if attempt.outcome == AttemptOutcome.GONE:
        # The endpoint's lock first, then its deliveries', as disabling always takes them: two
        # receivers answering 410 at once wait for each other, never deadlock.
        disable_endpoint(
            session,
            endpoint_id=session.get_one(WebhookDelivery, delivery_id).endpoint_id,
            reason="the receiver answered 410 Gone",
            now=attempt.at,
        )
    delivery = session.get_one(WebhookDelivery, delivery_id, with_for_update=True)
    session.add(
        WebhookAttempt(
            delivery_id=delivery_id,
            at=attempt.at,
            outcome=attempt.outcome,
            status_code=attempt.status_code,
            error=None if attempt.error is None else attempt.error[:ERROR_CHARS],
            duration_ms=attempt.duration_ms,
        )
    )
    if attempt.outcome == AttemptOutcome.DELIVERED:
        # Taken, even if it was cancelled while on its way: that is what happened.
        _finish(delivery, DeliveryStatus.DELIVERED, attempt.at)
    elif attempt.outcome == AttemptOutcome.GONE:
        _finish(delivery, DeliveryStatus.FAILED, attempt.at)
    return DeliveryStatus(delivery.status)


def give_up(session: Session, *, delivery_id: str, now: datetime) -> None:
    """No 2xx within the retry span: the delivery has failed, unless it has ended otherwise."""
    delivery = session.get_one(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery.status == DeliveryStatus.PENDING:
        _finish(delivery, DeliveryStatus.FAILED, now)


def resend(
    session: Session, *, delivery_id: str, endpoint_id: str | None, now: datetime
) -> WebhookDelivery:
    """Send a delivery again (its event, the same id and body): pending once more, handed to its
    delivery workflow by the relay. One still pending is handed over again: its workflow
    starts anew should it have gone (terminated by an operator, say), and a running one just
    goes on. `endpoint_id`, when given, must be the delivery's endpoint."""
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or endpoint_id not in (None, delivery.endpoint_id):
        raise UnknownDelivery(f"no delivery {delivery_id!r}")
    endpoint = session.get_one(WebhookEndpoint, delivery.endpoint_id)
    if not endpoint.enabled:
        raise ResendRefused(
            f"endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}): nothing is sent "
            "to it"
        )
    delivery.status = DeliveryStatus.PENDING
    delivery.finished_at = None
    delivery.dispatch_due_at = now
    return delivery


def _finish(delivery: WebhookDelivery, status: DeliveryStatus, now: datetime) -> None:
    delivery.status = status
    delivery.finished_at = now
    delivery.dispatch_due_at = None


def _event(session: Session, delivery: WebhookDelivery) -> WebhookEvent:
    return session.exec(select(WebhookEvent).where(WebhookEvent.seq == delivery.event_seq)).one()


@dataclass(frozen=True)
class Due:
    """A delivery the relay is to hand to the workflow of its endpoint and order."""

    delivery_id: str
    endpoint_id: str
    order_id: str


def claim_due(session: Session, *, now: datetime, lease_until: datetime, limit: int) -> list[Due]:
    """Deliveries due to be handed over, leased to this relay until `lease_until`: another
    relay skips them (on PostgreSQL those being claimed at this very moment too: SKIP LOCKED),
    and takes them over should the lease run out."""
    rows = session.exec(
        select(WebhookDelivery)
        .where(col(WebhookDelivery.dispatch_due_at) <= now)
        .order_by(col(WebhookDelivery.dispatch_due_at), col(WebhookDelivery.event_seq))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for delivery in rows:
        delivery.dispatch_due_at = lease_until
    return [Due(row.id, row.endpoint_id, row.order_id) for row in rows]


def handed_over(session: Session, *, delivery_ids: Sequence[str], lease_until: datetime) -> None:
    """The deliveries' workflows know of them. One resent since its claim (due again, with
    another time) stays due."""
    session.exec(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.id).in_(delivery_ids),
            col(WebhookDelivery.dispatch_due_at) == lease_until,
        )
        .values(dispatch_due_at=None)
    )
