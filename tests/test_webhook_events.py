"""Webhook events and deliveries in the database, on SQLite and on PostgreSQL: each change of an
order or a reservation makes its event in its own transaction (and a rolled-back one none),
secrets are sealed at rest, and deliveries are handed over, attempted and re-sent."""

from __future__ import annotations

import base64
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine
from sqlmodel import col, select, update

from core.codec import CodecError, EncryptionCodec
from core.contracts import ClaimRequest, OrderEnding, PaymentNotice, RefundOrder
from core.standard_webhooks import new_secret
from core.vocabulary import EventType, Gateway, OrderStatus
from store import orders, stats, webhooks
from store.db import transaction
from store.models import (
    AttemptOutcome,
    DeliveryStatus,
    Order,
    Reservation,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from store.rows import UnrecordedChange, insert_ignoring_conflict
from store.views import reservation_public, shown_order
from store.webhooks import Attempt
from tests.databases import PUBLIC_BASE_URL
from tests.orders import claim, order_request

CODEC = EncryptionCodec({"k1": os.urandom(32)}, encrypt_with="k1")


def now() -> datetime:
    # The recorder judges a reservation's validity by the clock: so do these tests' changes.
    return datetime.now(UTC)


def endpoint(engine: Engine, *events: EventType, secret: str | None = None) -> str:
    with transaction(engine) as session:
        return webhooks.create_endpoint(
            session,
            url="https://shop.example.com/hooks",
            events=list(events or EventType),
            secret=secret or new_secret(),
            codec=CODEC,
            now=now(),
        ).id


def events(engine: Engine) -> list[WebhookEvent]:
    with transaction(engine) as session:
        return list(session.exec(select(WebhookEvent).order_by(col(WebhookEvent.seq))))


def told(engine: Engine) -> list[tuple[str, str]]:
    return [(event.type, event.order_id) for event in events(engine)]


def deliveries(engine: Engine) -> list[WebhookDelivery]:
    with transaction(engine) as session:
        return list(session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.event_seq))))


def pay(engine: Engine, order_id: str, trade_no: str, cents: int = 2970) -> None:
    moment = now()
    notice = PaymentNotice(
        gateway=Gateway.ALIPAY,
        order_id=order_id,
        trade_no=trade_no,
        amount_cents=cents,
        paid_at=moment,
    )
    with transaction(engine) as session:
        orders.settle_payment(session, notice=notice, now=moment)


def as_get_shows(engine: Engine, order_id: str) -> dict[str, Any]:
    with engine.connect() as connection:
        order = shown_order(connection, order_id, public_base_url=PUBLIC_BASE_URL)
        assert order is not None
        shown: dict[str, Any] = order.public.model_dump(mode="json")
        return shown


def last_body(engine: Engine) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(events(engine)[-1].body)
    return body


def test_each_change_makes_its_event_with_the_order_as_get_shows_it(engine: Engine) -> None:
    endpoint(engine)
    # With a checkout page, whose URL the event's body carries as GET does.
    request = order_request("o1").model_copy(update={"checkout_token": "tok"})
    with transaction(engine) as session:
        orders.claim_reservation(
            session,
            request=ClaimRequest(order=request, expires_at=now() + timedelta(minutes=15)),
            now=now(),
        )
    created = last_body(engine)
    assert created["type"] == "order.created" and created["id"].startswith("evt_")
    assert created["data"] == as_get_shows(engine, "o1")
    assert created["data"]["checkout_url"] == f"{PUBLIC_BASE_URL}/pay/o1?token=tok"
    assert datetime.fromisoformat(created["timestamp"]).utcoffset() == timedelta(0)

    claim(engine, "o2")  # supersedes o1
    pay(engine, "o2", "t2")  # paid, the reservation activated
    paid, activated = (json.loads(event.body) for event in events(engine)[-2:])
    assert paid["data"] == as_get_shows(engine, "o2")
    with transaction(engine) as session:
        reservation = orders.get_reservation(session, "room-1")
        assert reservation is not None
        shown = reservation_public(session, reservation, now()).model_dump(mode="json")
    assert activated["data"]["valid_until"] == shown["valid_until"]
    assert activated["data"]["status"] == "active"

    claim(engine, "o3")  # a renewal
    pay(engine, "o3", "t3")  # extends it
    pay(engine, "o1", "t1")  # superseded, so refunded: decided now, no status changes yet
    superseded_body = json.loads(
        next(e.body for e in events(engine) if e.type == "order.superseded")
    )
    assert superseded_body["data"]["status"] == "superseded"
    with transaction(engine) as session:
        (refund,) = orders.refunds_of(session, "o1")
        orders.complete_refund(
            session,
            refund=RefundOrder(
                gateway=refund.gateway,
                refund_no=refund.refund_no,
                order_id="o1",
                trade_no="t1",
                amount_cents=refund.amount_cents,
            ),
            now=now(),
        )
    assert last_body(engine)["data"] == as_get_shows(engine, "o1")
    claim(engine, "o4", reservation="room-2")
    claim(engine, "o5", reservation="room-3")
    for order_id, status in (("o4", OrderStatus.EXPIRED), ("o5", OrderStatus.CANCELLED)):
        with transaction(engine) as session:
            ending = OrderEnding(order_id=order_id, status=status, reason="test")
            orders.end_order(session, ending=ending, now=now())
    with transaction(engine) as session:
        orders.flag_order(session, order_id="o2", reason="looked at by hand", now=now())
        # A second flag on a flagged order is no new event.
        orders.flag_order(session, order_id="o2", reason="and again", now=now())

    assert told(engine) == [
        ("order.created", "o1"),
        ("order.created", "o2"),
        ("order.superseded", "o1"),
        ("order.paid", "o2"),
        ("reservation.activated", "o2"),
        ("order.created", "o3"),
        ("order.paid", "o3"),
        ("reservation.extended", "o3"),
        ("order.refunded", "o1"),
        ("order.created", "o4"),
        ("order.created", "o5"),
        ("order.expired", "o4"),
        ("order.cancelled", "o5"),
        ("order.flagged", "o2"),
    ]


def test_a_rolled_back_change_records_no_event(engine: Engine) -> None:
    endpoint(engine)
    request = ClaimRequest(order=order_request("o1"), expires_at=now() + timedelta(minutes=15))
    with pytest.raises(RuntimeError), transaction(engine) as session:
        orders.claim_reservation(session, request=request, now=now())
        raise RuntimeError("the transaction fails after the change")
    assert events(engine) == [] and deliveries(engine) == []

    claim(engine, "o1")
    # Undone within the transaction (a savepoint rolled back): nothing to tell.
    with transaction(engine) as session:
        savepoint = session.begin_nested()
        orders.end_order(
            session,
            ending=OrderEnding(order_id="o1", status=OrderStatus.CANCELLED, reason="undone"),
            now=now(),
        )
        savepoint.rollback()
    assert told(engine) == [("order.created", "o1")]
    assert [d.status for d in deliveries(engine)] == [DeliveryStatus.PENDING]


def test_changes_out_of_the_recorders_sight_are_refused(engine: Engine) -> None:
    claim(engine, "o1")
    statements: list[Any] = [
        update(Order).values(status=OrderStatus.PAID),
        update(Reservation).values(valid_until=now() + timedelta(days=1)),
        insert(Reservation).values(
            id="room-9", valid_until=now() + timedelta(days=1), created_at=now(), updated_at=now()
        ),
    ]
    for statement in statements:
        with pytest.raises(UnrecordedChange), transaction(engine) as session:
            session.exec(statement)
    valid = {"id": "room-9", "valid_until": now(), "created_at": now(), "updated_at": now()}
    with pytest.raises(UnrecordedChange), transaction(engine) as session:
        insert_ignoring_conflict(session, Reservation, valid, conflict_on=["id"])
    assert orders_status(engine, "o1") == OrderStatus.PENDING


def orders_status(engine: Engine, order_id: str) -> str:
    with transaction(engine) as session:
        order = orders.get_order(session, order_id)
        assert order is not None
        return order.status


def test_only_enabled_endpoints_subscribed_to_an_event_are_sent_it(engine: Engine) -> None:
    paid_only = endpoint(engine, EventType.ORDER_PAID)
    everything = endpoint(engine)
    disabled = endpoint(engine)
    with transaction(engine) as session:
        webhooks.disable_endpoint(session, endpoint_id=disabled, reason="test", now=now())
    claim(engine, "o1")
    pay(engine, "o1", "t1")
    sent = {
        (d.endpoint_id, event.type)
        for d in deliveries(engine)
        for event in events(engine)
        if event.seq == d.event_seq
    }
    assert sent == {
        (paid_only, "order.paid"),
        (everything, "order.created"),
        (everything, "order.paid"),
        (everything, "reservation.activated"),
    }

    # An event nobody is subscribed to is not kept.
    with transaction(engine) as session:
        webhooks.disable_endpoint(session, endpoint_id=everything, reason="test", now=now())
    claim(engine, "o2", reservation="room-2")
    assert [event.order_id for event in events(engine)].count("o2") == 0


def test_secrets_are_sealed_at_rest_and_rotate_with_an_overlap(engine: Engine) -> None:
    first = new_secret()
    endpoint_id = endpoint(engine, secret=first)
    with transaction(engine) as session:
        dump = str(session.exec(text("SELECT * FROM webhook_endpoints")).all())  # type: ignore[call-overload]
    key = first.removeprefix("whsec_")
    assert key not in dump and base64.b64decode(key).hex() not in dump

    with transaction(engine) as session:
        row = session.get_one(WebhookEndpoint, endpoint_id)
        assert webhooks.signing_secrets(row, codec=CODEC, now=now()) == [first]
        other_key = EncryptionCodec({"k1": os.urandom(32)}, encrypt_with="k1")
        with pytest.raises(CodecError):
            webhooks.signing_secrets(row, codec=other_key, now=now())
        # Sealed for one endpoint, it does not open as another's.
        moved = row.model_copy(update={"id": "we_other"})
        with pytest.raises(CodecError, match="moved from where it belongs"):
            webhooks.signing_secrets(moved, codec=CODEC, now=now())

    second = new_secret()
    until = now() + timedelta(hours=1)
    with transaction(engine) as session:
        webhooks.rotate_secret(
            session,
            endpoint_id=endpoint_id,
            secret=second,
            codec=CODEC,
            overlap_until=until,
            now=now(),
        )
    with transaction(engine) as session:
        row = session.get_one(WebhookEndpoint, endpoint_id)
        assert webhooks.signing_secrets(row, codec=CODEC, now=until - timedelta(seconds=1)) == [
            second,
            first,
        ]
        assert webhooks.signing_secrets(row, codec=CODEC, now=until) == [second]


def test_deliveries_are_handed_over_and_a_lost_lease_hands_them_over_again(
    engine: Engine,
) -> None:
    endpoint_id = endpoint(engine)
    claim(engine, "o1")
    claim(engine, "o2", reservation="room-2")
    moment = now()
    lease = moment + timedelta(seconds=60)
    with transaction(engine) as session:
        due = webhooks.claim_due(session, now=moment, lease_until=lease, limit=10)
    assert {(d.endpoint_id, d.order_id) for d in due} == {(endpoint_id, "o1"), (endpoint_id, "o2")}
    with transaction(engine) as session:
        assert webhooks.claim_due(session, now=moment, lease_until=lease, limit=10) == []
        # The relay that claimed them never said it handed them over: its lease runs out.
        again = webhooks.claim_due(
            session, now=lease, lease_until=lease + timedelta(seconds=60), limit=10
        )
    assert set(again) == set(due)
    with transaction(engine) as session:
        webhooks.handed_over(
            session,
            delivery_ids=[d.delivery_id for d in again],
            lease_until=lease + timedelta(seconds=60),
        )
        assert (
            webhooks.claim_due(session, now=moment + timedelta(days=1), lease_until=lease, limit=10)
            == []
        )


def test_two_relays_at_once_claim_each_delivery_once(engine: Engine) -> None:
    endpoint(engine)
    for n in range(6):
        claim(engine, f"o{n}", reservation=f"room-{n}")
    first_claimed, second_tried = threading.Event(), threading.Event()

    def first() -> list[webhooks.Due]:
        with transaction(engine) as session:
            due = webhooks.claim_due(
                session, now=now(), lease_until=now() + timedelta(minutes=1), limit=100
            )
            first_claimed.set()
            # Still uncommitted when the other relay tries: PostgreSQL skips what this one
            # locked, SQLite's other writer waits for this commit and finds the leases.
            second_tried.wait(timeout=5)
            return due

    def second() -> list[webhooks.Due]:
        first_claimed.wait(timeout=5)
        second_tried.set()
        with transaction(engine) as session:
            return webhooks.claim_due(
                session, now=now(), lease_until=now() + timedelta(minutes=1), limit=100
            )

    with ThreadPoolExecutor(max_workers=2) as pool:
        one, other = pool.submit(first), pool.submit(second)
        claimed = one.result(), other.result()
    assert len(claimed[0]) == 6 and claimed[1] == []


def test_attempts_end_a_delivery_and_410_disables_its_endpoint(engine: Engine) -> None:
    endpoint_id = endpoint(engine)
    claim(engine, "o1")
    claim(engine, "o2", reservation="room-2")
    claim(engine, "o3", reservation="room-3")
    first, second, third = (d.id for d in deliveries(engine))

    def attempt(delivery_id: str, outcome: AttemptOutcome, code: int | None) -> DeliveryStatus:
        with transaction(engine) as session:
            return webhooks.record_attempt(
                session,
                delivery_id=delivery_id,
                attempt=Attempt(
                    at=now(), outcome=outcome, status_code=code, error=None, duration_ms=3
                ),
            )

    assert attempt(first, AttemptOutcome.REFUSED, 500) == DeliveryStatus.PENDING
    assert attempt(first, AttemptOutcome.TIMEOUT, None) == DeliveryStatus.PENDING
    assert attempt(first, AttemptOutcome.DELIVERED, 204) == DeliveryStatus.DELIVERED
    with transaction(engine) as session:
        (view,) = [
            v
            for v in webhooks.deliveries_of(session, endpoint_id=endpoint_id, limit=10)
            if v.delivery.id == first
        ]
        assert [(a.outcome, a.status_code) for a in view.attempts] == [
            ("refused", 500),
            ("timeout", None),
            ("delivered", 204),
        ]
        # Re-sent: pending, and due to be handed over again.
        resent = webhooks.resend(session, delivery_id=first, endpoint_id=endpoint_id, now=now())
        assert resent.status == DeliveryStatus.PENDING and resent.finished_at is None
        assert resent.dispatch_due_at is not None
        # Still pending, it is handed over again: its workflow may have gone.
        resent.dispatch_due_at = None
        webhooks.resend(session, delivery_id=first, endpoint_id=None, now=now())
        assert resent.dispatch_due_at is not None
        with pytest.raises(webhooks.UnknownDelivery):
            webhooks.resend(session, delivery_id=second, endpoint_id="we_someone_else", now=now())

    assert attempt(second, AttemptOutcome.GONE, 410) == DeliveryStatus.FAILED
    statuses = {d.id: d.status for d in deliveries(engine)}
    assert statuses == {
        first: DeliveryStatus.CANCELLED,
        second: DeliveryStatus.FAILED,
        third: DeliveryStatus.CANCELLED,
    }
    with transaction(engine) as session:
        row = session.get_one(WebhookEndpoint, endpoint_id)
        assert not row.enabled and row.disabled_reason == "the receiver answered 410 Gone"
        with pytest.raises(webhooks.ResendRefused, match="disabled"):
            webhooks.resend(session, delivery_id=second, endpoint_id=None, now=now())
        assert stats.delivery_tallies(session) == {"cancelled": 2, "failed": 1}
        assert stats.attempt_tallies(session) == {
            "refused": 1,
            "timeout": 1,
            "delivered": 1,
            "gone": 1,
        }


def test_the_next_pending_delivery_is_the_orders_earliest_event(engine: Engine) -> None:
    endpoint_id = endpoint(engine)
    claim(engine, "o1")
    claim(engine, "o2")
    pay(engine, "o2", "t2")
    with transaction(engine) as session:
        taken = []
        while (
            found := webhooks.next_pending(session, endpoint_id=endpoint_id, order_id="o2")
        ) is not None:
            delivery, event = found
            taken.append(event.type)
            webhooks.give_up(session, delivery_id=delivery.id, now=now())
    assert taken == ["order.created", "order.paid", "reservation.activated"]
