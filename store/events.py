"""Events of orders and reservations, decided in the transaction that makes the change they
tell of, and written there with their deliveries: a transactional outbox.

The recorder watches the session of `store.db.transaction` rather than the functions of
store.orders that run in it. At every flush SQLAlchemy shows it each new Order and each change
of `Order.status`, `Order.flag_reason` and `Reservation.valid_until`, whichever function made
it — one written tomorrow too — and just before the commit it writes the events those changes
make and one delivery per enabled endpoint subscribed to each. The change and its events commit
together or roll back together: no event for a change rolled back, no change without its event.
What a flush would not show, and so would change without an event, is refused: a bulk UPDATE
or DELETE of orders or reservations, an INSERT of orders, an INSERT of a reservation with its
validity. Not taken: a call in each store function (the function that forgets it is the bug)
and database triggers (one per dialect, and an event's body is built by Python code).

What happened is judged between the transaction's start and its end, so that a change undone
before the commit (a savepoint rolled back) tells nothing:

- a new order: `order.created`; an order whose status became paid, superseded, expired,
  cancelled or refunded: `order.<status>`; an order without a flag that got one:
  `order.flagged`;
- a reservation whose validity went from none or past into the future:
  `reservation.activated`; one whose validity moved later while active: `reservation.extended`.

An event's body is the order (reservation) as `GET` shows it once the transaction's changes are
made, snapshotted now: a later change makes an event of its own. Its order — an order's events
are delivered in the order of their numbers — is the order it tells of, and for a reservation
the order whose payment moved it. Those numbers follow the commits: every transaction that
changes an order holds its reservation's lock until it commits. An event nobody is subscribed
to is not kept.

An order's body needs the service's public URL (the checkout page's): the engine carries it, as
the execution option `PUBLIC_BASE_URL`, set where engines are made (`create_db_engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, UOWTransaction
from sqlalchemy.sql.dml import Insert, UpdateBase
from sqlmodel import Session

from core.public import EventPublic, OrderPublic, ReservationPublic
from core.vocabulary import EventType, OrderStatus
from store import orders, webhooks
from store.models import Order, Reservation, WebhookEvent
from store.rows import RECORDED_TABLES, refuse_unrecorded
from store.views import reservation_public, shown_order

PUBLIC_BASE_URL = "paysaga_public_base_url"
# The changes a transaction made so far, in its session's `info`.
WATCHED = "paysaga_watched_changes"
STATUS_EVENTS = {
    OrderStatus.PAID: EventType.ORDER_PAID,
    OrderStatus.SUPERSEDED: EventType.ORDER_SUPERSEDED,
    OrderStatus.EXPIRED: EventType.ORDER_EXPIRED,
    OrderStatus.CANCELLED: EventType.ORDER_CANCELLED,
    OrderStatus.REFUNDED: EventType.ORDER_REFUNDED,
}
ATTRIBUTES: dict[type[Order | Reservation], tuple[str, ...]] = {
    Order: ("status", "flag_reason"),
    Reservation: ("valid_until",),
}


class RecordingSession(Session):
    """A session whose transaction records the events of what it changes (see the module)."""


@dataclass
class _Watched:
    row: Order | Reservation
    created: bool
    # The watched attributes as they were when the transaction began.
    before: dict[str, Any]


@event.listens_for(RecordingSession, "before_flush")
def _notice(session: Session, _: UOWTransaction, __: object) -> None:
    watched: dict[tuple[type, str], _Watched] = session.info.setdefault(WATCHED, {})
    for row in (*session.new, *session.dirty):
        if not isinstance(row, Order | Reservation) or (type(row), row.id) in watched:
            continue
        names = ATTRIBUTES[type(row)]
        if row in session.new:
            watched[(type(row), row.id)] = _Watched(row, True, dict.fromkeys(names))
            continue
        if any(inspect(row).attrs[name].history.has_changes() for name in names):
            before = {name: _before(row, name) for name in names}
            watched[(type(row), row.id)] = _Watched(row, False, before)


def _before(row: Order | Reservation, name: str) -> Any:
    """What the attribute held before this flush's changes: what a change replaced (None if
    it was never read: a change is then told rather than missed), else its value."""
    history = inspect(row).attrs[name].history
    if history.has_changes():
        return history.deleted[0] if history.deleted else None
    return getattr(row, name)


@event.listens_for(RecordingSession, "do_orm_execute")
def _refuse_unseen_changes(state: ORMExecuteState) -> None:
    statement = state.statement
    name = getattr(getattr(statement, "table", None), "name", None)
    # Only statements on the recorded tables are compiled to see what they insert.
    if not isinstance(statement, UpdateBase) or name not in RECORDED_TABLES:
        return
    inserted = None
    if isinstance(statement, Insert):
        inserted = statement.compile(dialect=state.session.get_bind().dialect).params
    refuse_unrecorded(name, inserted=inserted)


@event.listens_for(RecordingSession, "before_commit")
def _record(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: its changes are judged when the transaction itself commits
    session.flush()  # the last changes, noticed
    watched: dict[tuple[type, str], _Watched] = session.info.pop(WATCHED, {})
    now = datetime.now(UTC)
    # A reservation's events after its order's: `order.paid` tells first what made it active.
    changes = sorted(watched.values(), key=lambda item: isinstance(item.row, Reservation))
    decided = [
        (event_type, item)
        for item in changes
        if inspect(item.row).persistent
        for event_type in _events(item, now)
    ]
    if not decided:
        return
    endpoints = webhooks.enabled_endpoints(session)
    subscribers = {
        event_type: [e.id for e in endpoints if event_type in webhooks.event_types(e)]
        for event_type in {event_type for event_type, _ in decided}
    }
    snapshots: dict[int, OrderPublic | ReservationPublic] = {}
    written: list[tuple[WebhookEvent, list[str]]] = []
    for event_type, item in decided:
        if not subscribers[event_type]:
            continue
        if id(item.row) not in snapshots:
            snapshots[id(item.row)] = _snapshot(session, item.row, now)
        written.append(
            (
                _event(session, event_type, item.row, snapshots[id(item.row)], watched, now),
                subscribers[event_type],
            )
        )
    session.flush()  # the events' numbers, which their deliveries name
    for written_event, endpoint_ids in written:
        webhooks.add_deliveries(session, event=written_event, endpoint_ids=endpoint_ids, now=now)


def _events(item: _Watched, now: datetime) -> Iterator[EventType]:
    """What the row's change from `before` to now makes, in the order it happened."""
    row = item.row
    if isinstance(row, Order):
        if item.created:
            yield EventType.ORDER_CREATED
        if row.status != item.before["status"] and row.status in STATUS_EVENTS:
            yield STATUS_EVENTS[OrderStatus(row.status)]
        if item.before["flag_reason"] is None and row.flag_reason is not None:
            yield EventType.ORDER_FLAGGED
        return
    before: datetime | None = item.before["valid_until"]
    if not orders.is_active(row, now):
        return
    if before is None or before <= now:
        yield EventType.RESERVATION_ACTIVATED
    elif row.valid_until is not None and row.valid_until > before:
        yield EventType.RESERVATION_EXTENDED


def _snapshot(
    session: Session, row: Order | Reservation, now: datetime
) -> OrderPublic | ReservationPublic:
    """The row as `GET /v1/orders/{id}` (`/v1/reservations/{id}`) answers it now."""
    if isinstance(row, Reservation):
        return reservation_public(session, row, now)
    public_base_url = session.get_bind().get_execution_options().get(PUBLIC_BASE_URL)
    if public_base_url is None:
        raise RuntimeError(
            "an order's event needs the public base URL: make the engine with "
            "create_db_engine(url, public_base_url=...)"
        )
    # The transaction's changes are flushed (`_record`): a plain read of the order sees them.
    shown = shown_order(session.connection(), row.id, public_base_url=public_base_url)
    if shown is None:
        raise RuntimeError(f"order {row.id} is flushed, yet not there to read")
    return shown.public


def _event(
    session: Session,
    event_type: EventType,
    row: Order | Reservation,
    data: OrderPublic | ReservationPublic,
    watched: dict[tuple[type, str], _Watched],
    now: datetime,
) -> WebhookEvent:
    event_id = webhooks.new_id("evt_")
    body = EventPublic(id=event_id, type=event_type, timestamp=now, data=data)
    if isinstance(row, Order):
        order_id, reservation_id = row.id, row.reservation_id
    else:
        order_id, reservation_id = _cause(session, row, watched), row.id
    written = WebhookEvent(
        id=event_id,
        type=event_type,
        order_id=order_id,
        reservation_id=reservation_id,
        body=body.model_dump_json(),
        created_at=now,
    )
    session.add(written)
    return written


def _cause(
    session: Session, reservation: Reservation, watched: dict[tuple[type, str], _Watched]
) -> str:
    """The order whose payment moved the reservation: the one of this transaction that was
    paid, else the reservation's newest order."""
    changed = [
        item.row
        for item in watched.values()
        if isinstance(item.row, Order) and item.row.reservation_id == reservation.id
    ]
    changed.sort(key=lambda order: order.status != OrderStatus.PAID)
    if changed:
        return changed[0].id
    newest = orders.orders_of(session, reservation.id)
    return newest[-1].id if newest else reservation.id
