"""Data access for reservations, orders, payments and refunds.

The rules that keep money straight live here, each in one transaction under the reservation's
lock: a claim makes its order the reservation's only payable one; a settlement decides, at the
moment a payment is handled, whether it pays its order or must be refunded. Every write of an
order's or a payment's status takes that lock first, so that concurrent claims, settlements and
refunds never overwrite each other's decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam
from sqlmodel import Session, col, select, update

from core.contracts import (
    Claim,
    ClaimRequest,
    OperatorAction,
    OrderEnding,
    PaymentNotice,
    PaymentStart,
    RefundOrder,
    Settlement,
)
from core.money import format_amount
from core.vocabulary import Gateway, OrderKind, OrderStatus, PaymentTiming, refund_no_for
from store.models import (
    CreationVerdict,
    OperatorActionRecord,
    Order,
    OrderCreation,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    Reservation,
)
from store.rows import insert_ignoring_conflict

# The flag column's size: reasons beyond it are cut, not refused.
FLAG_CHARS = 500
# How a refused refund's flag begins: a retried refund settles it.
REFUND_FAILED = "refund failed:"


def is_active(reservation: Reservation, now: datetime) -> bool:
    return _valid_at(reservation.valid_until, now)


def is_reservation_active(connection: Connection, *, reservation_id: str, now: datetime) -> bool:
    """Whether the reservation is valid at `now` (False for one never seen): a plain read."""
    valid_until = connection.execute(_VALID_UNTIL, {"reservation_id": reservation_id}).scalar()
    return _valid_at(valid_until, now)


def _valid_at(valid_until: datetime | None, now: datetime) -> bool:
    return valid_until is not None and valid_until > now


_VALID_UNTIL = select(Reservation.valid_until).where(
    col(Reservation.id) == bindparam("reservation_id")
)


class CreationAbandoned(Exception):
    """The order may not be made: past its creation deadline, or the API gave up on it."""


def claim_reservation(session: Session, *, request: ClaimRequest, now: datetime) -> Claim:
    """Make the order its reservation's payable one, superseding the older pending orders.

    With a creation deadline, the claim is refused (CreationAbandoned, nothing written) past
    it or once the API gave up on the order.
    """
    order_request = request.order
    insert_ignoring_conflict(
        session,
        Reservation,
        {"id": order_request.reservation_id, "created_at": now, "updated_at": now},
        conflict_on=["id"],
    )
    reservation = _locked_reservation(session, order_request.reservation_id)
    existing = session.get(Order, order_request.order_id)
    if existing is not None:
        # A retried claim: report what the first one did.
        superseded = session.exec(select(Order.id).where(Order.superseded_by == existing.id)).all()
        return Claim(kind=OrderKind(existing.kind), superseded_order_ids=list(superseded))
    if request.create_deadline is not None:
        if now >= request.create_deadline:
            raise CreationAbandoned("past its creation deadline")
        verdict = _decide_creation(session, order_request.order_id, CreationVerdict.MADE, now)
        if verdict is not CreationVerdict.MADE:
            raise CreationAbandoned("the API answered that it could not be made")

    kind = OrderKind.RENEWAL if is_active(reservation, now) else OrderKind.BOOKING
    older = session.exec(
        select(Order).where(
            Order.reservation_id == reservation.id, Order.status == OrderStatus.PENDING
        )
    ).all()
    for order in older:
        order.status = OrderStatus.SUPERSEDED
        order.status_reason = f"superseded by order {order_request.order_id}"
        order.superseded_by = order_request.order_id
        order.updated_at = now
    session.add(
        Order(
            id=order_request.order_id,
            reservation_id=reservation.id,
            kind=kind,
            days=order_request.days,
            amount_cents=order_request.amount_cents,
            currency=order_request.currency,
            status=OrderStatus.PENDING,
            gateway=order_request.gateway,
            qr_code=request.qr_code,
            request_fingerprint=order_request.request_fingerprint,
            payment=order_request.payment,
            checkout_token=order_request.checkout_token,
            return_url=order_request.return_url,
            expires_at=request.expires_at,
            payable_until=request.payable_until,
            created_at=now,
            updated_at=now,
        )
    )
    reservation.payable_order_id = order_request.order_id
    reservation.updated_at = now
    return Claim(kind=kind, superseded_order_ids=[order.id for order in older])


def abandon_creation(session: Session, *, order_id: str, now: datetime) -> bool:
    """Give up on making the order unless it was made already; True if it stands made.

    First writer wins against the claim, so an order given up on can never be made later.
    """
    made = _decide_creation(session, order_id, CreationVerdict.ABANDONED, now)
    # Orders claimed before creations had verdicts exist without one.
    return made is CreationVerdict.MADE or session.get(Order, order_id) is not None


def _decide_creation(
    session: Session, order_id: str, verdict: CreationVerdict, now: datetime
) -> CreationVerdict:
    """The verdict on the order's creation: `verdict`, unless another was reached first."""
    insert_ignoring_conflict(
        session,
        OrderCreation,
        {"order_id": order_id, "verdict": verdict, "decided_at": now},
        conflict_on=["order_id"],
    )
    stands = session.exec(
        select(OrderCreation.verdict)
        .where(OrderCreation.order_id == order_id)
        .execution_options(populate_existing=True)
    ).one()
    return CreationVerdict(stands)


def record_qr_code(session: Session, *, order_id: str, qr_code: str, now: datetime) -> None:
    order, _ = _locked_order(session, order_id)
    order.qr_code = qr_code
    order.updated_at = now


def start_payment(session: Session, *, start: PaymentStart, now: datetime) -> str | None:
    """Why a deferred order may not have its trade now, or None if it may.

    It may while it is pending, still its reservation's payable order, of a kind that fits the
    reservation, quoted at today's price and within its quote. Given the trade made, the same
    check under the lock then records it, so a newer order that claimed the reservation in the
    meantime always wins: its older order's page never shows a QR code.
    """
    order, reservation = _locked_order(session, start.order_id)
    refusal = _payment_refusal(order, reservation, start.amount_cents, now)
    if refusal is None and start.qr_code is not None:
        assert start.expires_at is not None
        order.qr_code = start.qr_code
        order.expires_at = start.expires_at
        order.payable_until = start.payable_until
        order.updated_at = now
    return refusal


def _payment_refusal(
    order: Order, reservation: Reservation, amount_cents: int, now: datetime
) -> str | None:
    if order.payment != PaymentTiming.DEFERRED:
        return "the order's payment was made with it: it needs no other"
    if order.qr_code is not None and order.status == OrderStatus.PENDING:
        return None  # its trade exists already: pressing Pay again shows the same QR code
    refusal = _refusal(order, reservation, now)
    if refusal is not None:
        return f"this order can no longer be paid: {refusal}"
    if amount_cents != order.amount_cents:
        return (
            f"the price changed: {order.days} days now cost {format_amount(amount_cents)} "
            f"{order.currency}, not the {format_amount(order.amount_cents)} quoted"
        )
    if now >= order.expires_at:
        return f"the quote lapsed at {order.expires_at:%Y-%m-%d %H:%M} UTC"
    return None


def record_payment(session: Session, *, notice: PaymentNotice, now: datetime) -> bool:
    """Record the payment of a trade, by whichever notice of it comes first; True while a saga
    may still have to be told of it: just recorded, or neither settled nor handed over yet."""
    recorded = insert_ignoring_conflict(
        session,
        Payment,
        {
            "gateway": notice.gateway,
            "trade_no": notice.trade_no,
            "order_id": notice.order_id,
            "amount_cents": notice.amount_cents,
            "status": PaymentStatus.RECEIVED,
            "paid_at": notice.paid_at,
            "created_at": now,
            "updated_at": now,
        },
        conflict_on=["gateway", "trade_no"],
    )
    if recorded:
        return True  # a row this notice made needs no reading back: it was made undecided
    payment = _payment(session, notice)
    return payment.status == PaymentStatus.RECEIVED and payment.handed_over_at is None


def mark_handed_over(connection: Connection, *, notice: PaymentNotice, now: datetime) -> None:
    """A saga has been told of this payment: repeats of its notification need not tell one."""
    connection.execute(
        _MARK_HANDED_OVER,
        {"of_gateway": notice.gateway, "of_trade_no": notice.trade_no, "handed_over_at": now},
    )


# The callback door's statements are built once: they run for every notification, and
# building one (and working out its cache key) costs about as much as running it.
_MARK_HANDED_OVER = (
    update(Payment)
    .where(
        col(Payment.gateway) == bindparam("of_gateway"),
        col(Payment.trade_no) == bindparam("of_trade_no"),
        col(Payment.handed_over_at).is_(None),
    )
    .values(handed_over_at=bindparam("handed_over_at"))
)


def settle_payment(session: Session, *, notice: PaymentNotice, now: datetime) -> Settlement:
    """Decide, now, whether a captured payment pays its order or is refunded.

    It pays only a pending order that is still its reservation's payable one and whose kind
    still fits the reservation (a booking while inactive, a renewal while active). Anything
    else — superseded, expired, cancelled, already paid, lapsed — is refunded. Deciding twice
    for one trade returns the first decision.
    """
    record_payment(session, notice=notice, now=now)
    order, reservation = _locked_order(session, notice.order_id)
    # Re-read under the lock: another process may have decided while we waited for it.
    payment = _payment(session, notice)
    if payment.status != PaymentStatus.RECEIVED:
        return _earlier_settlement(session, payment, order)

    if payment.amount_cents != order.amount_cents:
        # Whatever told of it — notification, query, reconciliation — a payment of another
        # amount never pays the order; the money was captured, so it goes back. The order
        # itself may still be paid rightly: it stays as it is, flagged for an operator.
        mismatch = (
            f"paid {format_amount(payment.amount_cents)} for an order of "
            f"{format_amount(order.amount_cents)}"
        )
        _flag(order, mismatch, now)
        return _refund_payment(session, payment, order, mismatch, now)

    refusal = _refusal(order, reservation, now)
    if refusal is None:
        payment.status = PaymentStatus.ACCEPTED
        payment.updated_at = now
        _pay_order(order, reservation, now)
        return Settlement(outcome="paid", order_status=OrderStatus.PAID, flagged=_flagged(order))

    if order.status == OrderStatus.PENDING:
        order.status_reason = refusal
        order.updated_at = now
        if reservation.payable_order_id == order.id:
            reservation.payable_order_id = None
            reservation.updated_at = now
    return _refund_payment(session, payment, order, refusal, now)


def _refund_payment(
    session: Session, payment: Payment, order: Order, refusal: str, now: datetime
) -> Settlement:
    payment.status = PaymentStatus.REFUNDING
    payment.updated_at = now
    refund = Refund(
        gateway=payment.gateway,
        refund_no=refund_no_for(payment.trade_no),
        payment_id=_id(payment),
        order_id=order.id,
        amount_cents=payment.amount_cents,
        status=RefundStatus.PENDING,
        reason=refusal,
        created_at=now,
    )
    session.add(refund)
    return Settlement(
        outcome="refund",
        order_status=OrderStatus(order.status),
        refund=_refund_order(refund, payment),
        flagged=_flagged(order),
    )


def _refusal(order: Order, reservation: Reservation, now: datetime) -> str | None:
    """Why this order cannot be paid now, or None if it can."""
    if order.status == OrderStatus.PAID:
        return "the order was already paid by another trade"
    if order.superseded_by is not None:
        return f"the order was superseded by {order.superseded_by}"
    if order.status != OrderStatus.PENDING:
        return f"the order is {order.status}"
    if reservation.payable_order_id != order.id:
        return "the order is no longer its reservation's payable order"
    if (order.kind == OrderKind.RENEWAL) != is_active(reservation, now):
        return f"a {order.kind} no longer fits the reservation"
    return None


def _pay_order(order: Order, reservation: Reservation, now: datetime) -> None:
    order.status = OrderStatus.PAID
    order.status_reason = None
    order.updated_at = now
    period = timedelta(days=order.days)
    if order.kind == OrderKind.BOOKING:
        reservation.valid_until = now + period
    else:
        assert reservation.valid_until is not None
        reservation.valid_until += period
    reservation.payable_order_id = None
    reservation.updated_at = now


def _earlier_settlement(session: Session, payment: Payment, order: Order) -> Settlement:
    status, flagged = OrderStatus(order.status), _flagged(order)
    if payment.status == PaymentStatus.ACCEPTED:
        return Settlement(outcome="settled_before", order_status=status, flagged=flagged)
    refund = session.exec(select(Refund).where(Refund.payment_id == payment.id)).one()
    if refund.status == RefundStatus.PENDING:
        # The refund was decided but may not have reached the gateway: run it (idempotently).
        return Settlement(
            outcome="refund",
            order_status=status,
            refund=_refund_order(refund, payment),
            flagged=flagged,
        )
    return Settlement(outcome="settled_before", order_status=status, flagged=flagged)


def complete_refund(session: Session, *, refund: RefundOrder, now: datetime) -> OrderStatus:
    """The refund reached the buyer: an order that may no longer be paid ends `refunded`.

    A paid order stays paid while a payment of it stands (a second trade was refunded), and so
    does a pending one that is still payable (its payment was of the wrong amount: a right one
    may yet come). A paid order whose every accepted payment went back is refunded.
    """
    order, reservation = _locked_order(session, refund.order_id)
    row = _refund(session, refund)
    if row.status == RefundStatus.SUCCEEDED:
        return OrderStatus(order.status)
    row.status = RefundStatus.SUCCEEDED
    row.completed_at = now
    payment = session.get_one(Payment, row.payment_id)
    payment.status = PaymentStatus.REFUNDED
    payment.updated_at = now
    still_payable = order.status == OrderStatus.PENDING and reservation.payable_order_id == order.id
    still_paid = order.status == OrderStatus.PAID and _has_accepted_payment(session, order.id)
    if not still_payable and not still_paid:
        order.status = OrderStatus.REFUNDED
        order.updated_at = now
    return OrderStatus(order.status)


def _has_accepted_payment(session: Session, order_id: str) -> bool:
    return (
        session.exec(
            select(Payment.id).where(
                Payment.order_id == order_id, Payment.status == PaymentStatus.ACCEPTED
            )
        ).first()
        is not None
    )


def fail_refund(
    session: Session, *, refund: RefundOrder, reason: str, now: datetime
) -> OrderStatus:
    """The gateway refused a refund for good: flag the order for an operator.

    A still-pending order whose payment could not be refunded is no longer payable either,
    so it ends `cancelled`, with the flag telling the operator why.
    """
    order, _ = _locked_order(session, refund.order_id)
    row = _refund(session, refund)
    row.status = RefundStatus.FAILED
    row.reason = reason
    row.completed_at = now
    payment = session.get_one(Payment, row.payment_id)
    payment.status = PaymentStatus.REFUND_FAILED
    payment.updated_at = now
    _flag(order, f"{REFUND_FAILED} {reason}", now)
    if order.status == OrderStatus.PENDING:
        order.status = OrderStatus.CANCELLED
        order.status_reason = "a payment could not be refunded"
    return OrderStatus(order.status)


def end_order(session: Session, *, ending: OrderEnding, now: datetime) -> OrderStatus:
    """End a still-pending order; any other status stands. Returns the status it has."""
    order, reservation = _locked_order(session, ending.order_id)
    if ending.flag is not None:
        _flag(order, ending.flag, now)
    if order.status == OrderStatus.PENDING and not _has_open_refund(session, order.id):
        order.status = ending.status
        order.status_reason = ending.reason
        order.updated_at = now
        if reservation.payable_order_id == order.id:
            reservation.payable_order_id = None
            reservation.updated_at = now
    return OrderStatus(order.status)


def _has_open_refund(session: Session, order_id: str) -> bool:
    return (
        session.exec(
            select(Refund.refund_no).where(
                Refund.order_id == order_id, Refund.status == RefundStatus.PENDING
            )
        ).first()
        is not None
    )


def flag_order(session: Session, *, order_id: str, reason: str, now: datetime) -> None:
    order, _ = _locked_order(session, order_id)
    _flag(order, reason, now)


def extend_deadline(session: Session, *, action: OperatorAction, now: datetime) -> datetime:
    """Move a pending order's payment deadline later; the deadline it has afterwards.

    An order no longer pending, or a deadline that would not move later, is left as it is.
    """
    assert action.until is not None
    order, _ = _locked_order(session, action.order_id)
    if order.status == OrderStatus.PENDING and action.until > order.expires_at:
        order.expires_at = action.until
        order.updated_at = now
        _record_action(session, action, now)
    return order.expires_at


def reopen_refund(
    session: Session, *, refund: RefundOrder, action: OperatorAction, now: datetime
) -> bool:
    """A refund the gateway refused is to be tried again: pending once more, its flag gone
    until it fails again. Whether the order stays flagged for another reason."""
    order, _ = _locked_order(session, refund.order_id)
    row = _refund(session, refund)
    if row.status != RefundStatus.FAILED:
        return _flagged(order)
    row.status = RefundStatus.PENDING
    row.completed_at = None
    payment = session.get_one(Payment, row.payment_id)
    payment.status = PaymentStatus.REFUNDING
    payment.updated_at = now
    _unflag(order, lambda reason: reason.startswith(REFUND_FAILED), now)
    _record_action(session, action, now)
    return _flagged(order)


def refund_paid_order(
    session: Session, *, action: OperatorAction, now: datetime
) -> RefundOrder | None:
    """An operator decided that a paid order's money goes back: its flag is settled, the days
    it bought are taken back, and its payment is to be refunded (None if it is not paid)."""
    order, reservation = _locked_order(session, action.order_id)
    payment = session.exec(
        select(Payment).where(
            Payment.order_id == order.id, Payment.status == PaymentStatus.ACCEPTED
        )
    ).first()
    if order.status != OrderStatus.PAID or payment is None:
        return None
    order.flag_reason = None
    if reservation.valid_until is not None:
        reservation.valid_until -= timedelta(days=order.days)
        reservation.updated_at = now
    _record_action(session, action, now)
    reason = f"refunded by an operator: {action.note}"
    settlement = _refund_payment(session, payment, order, reason, now)
    return settlement.refund


def accept_flag(session: Session, *, action: OperatorAction, now: datetime) -> None:
    """An operator accepts a flagged order as it is: the flag is settled, the note kept."""
    order, _ = _locked_order(session, action.order_id)
    if order.flag_reason is None:
        return
    order.flag_reason = None
    order.updated_at = now
    _record_action(session, action, now)


def record_action(session: Session, *, action: OperatorAction, now: datetime) -> None:
    _locked_order(session, action.order_id)
    _record_action(session, action, now)


def _record_action(session: Session, action: OperatorAction, now: datetime) -> None:
    session.add(
        OperatorActionRecord(
            order_id=action.order_id,
            action=action.action,
            note=action.note,
            until=action.until,
            at=now,
        )
    )


def _flagged(order: Order) -> bool:
    return order.flag_reason is not None


def _unflag(order: Order, settled: Callable[[str], bool], now: datetime) -> None:
    reasons = [reason for reason in (order.flag_reason or "").split("; ") if reason]
    kept = [reason for reason in reasons if not settled(reason)]
    if kept != reasons:
        order.flag_reason = "; ".join(kept) or None
        order.updated_at = now


def _flag(order: Order, reason: str, now: datetime) -> None:
    """Add `reason` to the order's flag once: the same trouble told again does not grow it."""
    reasons = [] if order.flag_reason is None else order.flag_reason.split("; ")
    if reason in reasons:
        return
    order.flag_reason = "; ".join([*reasons, reason])[:FLAG_CHARS]
    order.updated_at = now


def undecided_payments(
    session: Session, *, recorded_before: datetime, limit: int
) -> list[PaymentNotice]:
    """Payments recorded (and so acknowledged) that no saga has decided yet."""
    payments = session.exec(
        select(Payment)
        .where(Payment.status == PaymentStatus.RECEIVED, Payment.created_at < recorded_before)
        .order_by(col(Payment.created_at))
        .limit(limit)
    ).all()
    return [notice_of(payment) for payment in payments]


def notice_of(payment: Payment) -> PaymentNotice:
    """A recorded payment as the sagas take it."""
    return PaymentNotice(
        gateway=Gateway(payment.gateway),
        order_id=payment.order_id,
        trade_no=payment.trade_no,
        amount_cents=payment.amount_cents,
        paid_at=payment.paid_at,
    )


def get_order(session: Session, order_id: str) -> Order | None:
    return session.get(Order, order_id)


@dataclass(frozen=True)
class Payee:
    """What a gateway's notice of a payment needs of its order: a few columns, read without
    loading the order whole, on the door every notification comes through."""

    gateway: str
    reservation_id: str
    kind: str


def get_payee(session: Session, order_id: str) -> Payee | None:
    # Plain columns: no row of the session is loaded, none needs the ORM.
    row = session.connection().execute(_PAYEE, {"order_id": order_id}).first()
    return None if row is None else Payee(*row)


_PAYEE = select(Order.gateway, Order.reservation_id, Order.kind).where(
    col(Order.id) == bindparam("order_id")
)


def get_reservation(session: Session, reservation_id: str) -> Reservation | None:
    return session.get(Reservation, reservation_id)


def orders_of(session: Session, reservation_id: str) -> Sequence[Order]:
    return session.exec(
        select(Order)
        .where(Order.reservation_id == reservation_id)
        .order_by(col(Order.created_at), col(Order.id))
    ).all()


def payments_of(session: Session, order_id: str) -> Sequence[Payment]:
    return session.exec(
        select(Payment).where(Payment.order_id == order_id).order_by(col(Payment.id))
    ).all()


def actions_on(session: Session, order_id: str) -> Sequence[OperatorActionRecord]:
    return session.exec(
        select(OperatorActionRecord)
        .where(OperatorActionRecord.order_id == order_id)
        .order_by(col(OperatorActionRecord.at), col(OperatorActionRecord.id))
    ).all()


def refunds_of(session: Session, order_id: str) -> Sequence[Refund]:
    return session.exec(
        select(Refund).where(Refund.order_id == order_id).order_by(col(Refund.created_at))
    ).all()


def trade_of_refund(session: Session, refund: Refund) -> str:
    return session.get_one(Payment, refund.payment_id).trade_no


def _refund_order(refund: Refund, payment: Payment) -> RefundOrder:
    return RefundOrder(
        gateway=refund.gateway,
        refund_no=refund.refund_no,
        order_id=refund.order_id,
        trade_no=payment.trade_no,
        amount_cents=refund.amount_cents,
        reason=refund.reason,
    )


def _locked_order(session: Session, order_id: str) -> tuple[Order, Reservation]:
    """The order and its reservation, read under the reservation's lock."""
    reservation = _locked_reservation(session, _order(session, order_id).reservation_id)
    # Read again now that the lock is held: another transaction may have just changed it.
    return _order(session, order_id), reservation


def _locked_reservation(session: Session, reservation_id: str) -> Reservation:
    return session.exec(
        select(Reservation)
        .where(Reservation.id == reservation_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _order(session: Session, order_id: str) -> Order:
    return session.exec(
        select(Order).where(Order.id == order_id).execution_options(populate_existing=True)
    ).one()


def _payment(session: Session, notice: PaymentNotice) -> Payment:
    return session.exec(
        select(Payment)
        .where(Payment.gateway == notice.gateway, Payment.trade_no == notice.trade_no)
        .execution_options(populate_existing=True)
    ).one()


def _refund(session: Session, refund: RefundOrder) -> Refund:
    return session.get_one(Refund, (refund.gateway, refund.refund_no))


def _id(payment: Payment) -> int:
    assert payment.id is not None
    return payment.id
