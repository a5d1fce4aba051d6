"""The order saga: one workflow per order, from its payment's creation to its final status.

1. create the payment at the gateway (a QR code);
2. claim the reservation with it, superseding its older pending orders (they close their
   trades) — unless the API has given up on the order, in which case the trade is closed and
   no order is made;
   a deferred order claims with a quote instead, and makes its trade only when the buyer
   presses Pay, if the order may still be paid at the quoted price; its quote lapses unpaid;
3. wait for a payment, a cancel, being superseded, or the payment timeout;
4. on timeout ask the gateway first (a lost notification must not expire a paid order), then
   close the trade and expire — unless the trade turns out paid, in which case the payment wins;
5. settle each payment: it pays the order if the order may still be paid, else it is refunded;
6. on cancel (by the API, or an operator cancelling the saga) or supersede, close the trade
   and end so;
7. watch over the order while something can still happen to it: an unpaid order until no
   payment that raced its trade's close can still be notified (a late one is refunded here, so
   the order reads `refunded` in the UI), asking the gateway once its trade can no longer be
   paid (a late payment whose every notification was lost is found so), a flagged one until
   an operator resolves it.
Payments that arrive while the saga is ending are settled (so refunded) before it completes.

Operators steer it with updates, each refused with a reason by its validator when it does not
apply: cancel, extend the payment deadline, retry a refused refund, resolve a flagged order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from core.contracts import (
        Claim,
        ClaimRequest,
        DeadlineExtension,
        OperatorAction,
        OrderEnding,
        OrderOutcome,
        OrderRequest,
        PaymentInstructions,
        PaymentNotice,
        PaymentRequest,
        PaymentStart,
        RefundOrder,
        RefundReopening,
        RefundRetry,
        Resolution,
        TradeCheck,
        TradeRef,
    )
    from core.temporal import failure_reason
    from core.vocabulary import OrderKind, OrderStatus, PaymentTiming, order_workflow_id
    from workflows import search_attributes
    from workflows.steps import (
        DATABASE_STEP,
        GATEWAY_STEP,
        LAST_WORD_DELAY,
        LOCAL_STEP_FAILURES,
        Settled,
        ask_gateway,
        refund,
        refused_for_good,
        settle,
        show_order,
    )


# Sagas from this change on create the payment before they claim the reservation.
PAYMENT_BEFORE_CLAIM = "payment-before-claim"
# Sagas from this change on keep every search attribute true, watch over their order after it
# ends, and take operators' actions.
OPERATORS = "operator-actions"
# Sagas from this change on ask the gateway about an unpaid order once its trade can no longer
# be paid.
LAST_WORD = "ask-once-unpayable"
# Sagas from this change on see to news that came past the deadline (stuck ones too, once the
# worker runs this code: they ask the gateway again in a loop until then).
NEWS_PAST_DEADLINE = "news-past-deadline"
# Sagas from this change on ask that last word also when the late-payment horizon comes before
# it (earlier ones stopped watching at the horizon without asking).
LAST_WORD_AT_HORIZON = "last-word-at-horizon"
# Sagas from this change on create the payment and claim the reservation as local activities,
# within the workflow task that asks for them: the API's answer waits for one workflow task
# instead of three, and the server keeps no task of its own for either step.
LOCAL_CREATION_STEPS = "local-creation-steps"
# Sagas from this change on have every change above that a saga asks for as it begins: this
# one marker says so for all three, where each wrote its own marker and search attribute.
BEGUN_AS_OF_LOCAL_CREATION = "begun-as-of-local-creation"
# Sagas from this change on have every change above, and ask for none of them later: each
# marker costs the history an event and the UI's store a write of TemporalChangeVersion, and a
# paid order's saga wrote LAST_WORD's as it ended, though it never asks a paid trade's last word.
BEGUN_WITH_EVERY_CHANGE = "begun-with-every-change"
UNPAID_ENDINGS = (OrderStatus.SUPERSEDED, OrderStatus.EXPIRED, OrderStatus.CANCELLED)
# Claiming is one short database transaction: an attempt that hangs is given up on after this,
# and the claim tried again within the creation budget.
CLAIM_TIMEOUT = timedelta(seconds=5)
CLAIM_RETRY_INTERVAL = timedelta(seconds=1)
# A gateway may take seconds to make a trade; it too is asked again within the budget.
GATEWAY_CREATE_TIMEOUT = timedelta(seconds=10)
GATEWAY_CREATE_RETRY_INTERVAL = timedelta(seconds=2)


@workflow.defn
class OrderWorkflow:
    @workflow.init
    def __init__(self, request: OrderRequest) -> None:
        # Update-with-start runs `payment_instructions` before `run`: state must exist now.
        self._request = request
        self._instructions: PaymentInstructions | None = None
        self._creation_failure: str | None = None
        self._payments: list[PaymentNotice] = []
        self._settled_trades: set[str] = set()
        self._cancel_requested = False
        self._superseded = False
        self._superseded_by: str | None = None
        self._status = OrderStatus.PENDING
        self._flagged = False
        self._failed_refunds: list[RefundOrder] = []
        self._create_deadline = workflow.now()
        self._expires_at = workflow.now()
        # Past this the gateway takes no payment for the trade: deadlines move no later.
        self._payable_until = workflow.now()
        self._deadline_moved = False
        self._operator_acted = False
        self._operators = False
        self._local_creation = False
        self._every_change = False
        # A deferred order has no trade until the buyer presses Pay; making it and ending the
        # order unpaid take turns, so that no order ends with a trade it does not know of.
        self._trade_made = request.payment == PaymentTiming.IMMEDIATE
        self._paying = asyncio.Lock()
        # Money steps of the saga and of operators' updates take turns, so that each reads
        # the order as the one before left it.
        self._money = asyncio.Lock()

    @workflow.run
    async def run(self, request: OrderRequest) -> OrderOutcome:
        # The API waits this long for the QR code, then answers 503: past it, the order must
        # never become payable, nor supersede anything.
        self._create_deadline = workflow.info().workflow_start_time + timedelta(
            seconds=request.payment_create_timeout_seconds
        )
        if workflow.now() >= self._create_deadline:
            self._creation_failure = "no worker took the order in time"
            await workflow.wait_condition(workflow.all_handlers_finished)
            return OrderOutcome(order_id=request.order_id, status=OrderStatus.CANCELLED)
        # Each asked first: in earlier histories it is absent, and those after it are asked as
        # they were, in their order.
        self._every_change = workflow.patched(BEGUN_WITH_EVERY_CHANGE)
        current = self._every_change or workflow.patched(BEGUN_AS_OF_LOCAL_CREATION)
        self._operators = current or workflow.patched(OPERATORS)
        self._local_creation = current or workflow.patched(LOCAL_CREATION_STEPS)
        if request.payment == PaymentTiming.DEFERRED:
            instructions = await self._quote()
        else:
            expires_at = self._asked_at() + timedelta(seconds=request.payment_timeout_seconds)
            self._expires_at = self._payable_until = expires_at
            if self._operators:
                self._payable_until += timedelta(seconds=request.deadline_extension_seconds)
            if current or workflow.patched(PAYMENT_BEFORE_CLAIM):
                instructions = await self._make_order(expires_at)
            else:
                instructions = await self._make_order_claiming_first(expires_at)
        if instructions is None:
            # No order was made (there is no row to end): the saga tells so in the UI.
            self._update(OrderStatus.CANCELLED, flagged=False)
        else:
            # Only now may the API answer: a client that GETs the order must see its QR code.
            self._instructions = instructions
            # The API starts the saga with the kind it expects; only a claim that decided
            # otherwise must correct it.
            known = workflow.info().typed_search_attributes.get(search_attributes.ORDER_KIND)
            if self._operators and known != instructions.kind:
                workflow.upsert_search_attributes(
                    [search_attributes.ORDER_KIND.value_set(instructions.kind)]
                )
            await self._await_outcome()
        await self._settle_payments()
        if self._operators and self._instructions is not None:
            await self._watch_over()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.set_current_details(f"ended {self._status}")
        return OrderOutcome(order_id=request.order_id, status=self._status)

    async def _make_order(self, expires_at: datetime) -> PaymentInstructions | None:
        """Create the payment, then claim the reservation with it; None if no order was made.

        The gateway is asked first, so that an order whose payment cannot be created never
        claims its reservation nor supersedes anything: the API's 503 then means nothing was
        made. The claim is refused past the creation deadline, or once the API gave up.
        """
        request = self._request
        try:
            qr_code = await self._create_payment(
                self._payable_until, self._subject, local=self._local_creation
            )
        except LOCAL_STEP_FAILURES as failure:
            self._creation_failure = (
                f"the payment gateway could not create the payment: {failure_reason(failure)}"
            )
            return None
        claim = await self._claim(
            ClaimRequest(
                order=request,
                expires_at=expires_at,
                qr_code=qr_code,
                create_deadline=self._create_deadline,
                payable_until=self._payable_until,
            )
        )
        if claim is None:
            await self._withdraw_payment()
            self._creation_failure = "the order could not be made in time"
            return None
        await self._supersede(claim.superseded_order_ids)
        return self._instructions_of(claim.kind, qr_code, expires_at)

    async def _quote(self) -> PaymentInstructions | None:
        """A deferred order claims the reservation with a quote and no trade (the buyer's Pay
        makes it: `start_payment`); None if no order was made."""
        request = self._request
        quote_lapses = self._asked_at() + timedelta(seconds=request.quote_ttl_seconds)
        self._expires_at = self._payable_until = quote_lapses
        claim = await self._claim(
            ClaimRequest(
                order=request, expires_at=quote_lapses, create_deadline=self._create_deadline
            )
        )
        if claim is None:
            self._creation_failure = "the order could not be made in time"
            return None
        await self._supersede(claim.superseded_order_ids)
        return self._instructions_of(claim.kind, None, quote_lapses)

    async def _claim(self, claim_request: ClaimRequest) -> Claim | None:
        """Claim the reservation for the order; None if the order was not made, nor ever will be.

        Refused, or no answer in time: one verdict, shared with the API, says whether the order
        was made after all (a claim whose answer was lost) or never will be.
        """
        reservation_id = self._request.reservation_id
        workflow.set_current_details(f"claiming reservation {reservation_id}")
        try:
            claim: Claim = await self._creation_step(
                OrderActivities.claim_reservation,
                claim_request,
                summary=f"claim reservation {reservation_id}",
                start_to_close_timeout=CLAIM_TIMEOUT,
                retry_interval=CLAIM_RETRY_INTERVAL,
                local=self._local_creation,
            )
            return claim
        except LOCAL_STEP_FAILURES:
            made: bool = await workflow.execute_activity_method(
                OrderActivities.abandon_creation,
                self._request.order_id,
                summary="settle whether the order was made",
                **DATABASE_STEP,
            )
            if not made:
                return None
            claim = await workflow.execute_activity_method(
                OrderActivities.claim_reservation,
                claim_request,
                summary=f"claim reservation {reservation_id}",
                **DATABASE_STEP,
            )
            return claim

    async def _make_order_claiming_first(self, expires_at: datetime) -> PaymentInstructions | None:
        """How sagas started before PAYMENT_BEFORE_CLAIM made their order: kept so that they
        replay as they ran."""
        request = self._request
        claim = await workflow.execute_activity_method(
            OrderActivities.claim_reservation,
            ClaimRequest(order=request, expires_at=expires_at),
            **DATABASE_STEP,
        )
        await self._supersede(claim.superseded_order_ids)
        subject = f"Reservation {request.reservation_id}: {claim.kind}, {request.days} days"
        try:
            qr_code = await self._create_payment(expires_at, subject, local=False)
        except ActivityError as failure:
            reason = f"the payment gateway could not create the payment: {failure_reason(failure)}"
            await self._end(OrderStatus.CANCELLED, reason)
            # Only now may the API answer 503: the order must already read as cancelled.
            self._creation_failure = reason
            return None
        instructions = self._instructions_of(claim.kind, qr_code, expires_at)
        await workflow.execute_activity_method(
            OrderActivities.record_payment_instructions, instructions, **DATABASE_STEP
        )
        return instructions

    def _asked_at(self) -> datetime:
        """What the order's deadlines run from. A local step is run again, its input worked out
        anew, when its workflow task is lost (a worker crashed within it): reckoned from the
        saga's start, the trade is asked for again with the same expiry, as a gateway requires
        of an order placed again (WeChat Pay refuses one that differs: OUT_TRADE_NO_USED)."""
        return workflow.info().workflow_start_time if self._local_creation else workflow.now()

    def _instructions_of(
        self, kind: OrderKind, qr_code: str | None, expires_at: datetime
    ) -> PaymentInstructions:
        request = self._request
        return PaymentInstructions(
            order_id=request.order_id,
            reservation_id=request.reservation_id,
            kind=kind,
            amount_cents=request.amount_cents,
            currency=request.currency,
            qr_code=qr_code,
            expires_at=expires_at,
        )

    async def _creation_step(
        self,
        activity: Callable[..., Any],
        argument: Any,
        *,
        summary: str,
        start_to_close_timeout: timedelta,
        retry_interval: timedelta,
        local: bool,
    ) -> Any:
        """A creation step fits the creation budget: a worker lost in the middle of one is
        noticed in seconds, and no retry outlives the deadline. It fails with one of
        LOCAL_STEP_FAILURES."""
        options: dict[str, Any] = {
            "summary": summary,
            "start_to_close_timeout": start_to_close_timeout,
            "schedule_to_close_timeout": max(
                self._create_deadline - workflow.now(), timedelta(seconds=1)
            ),
            "retry_policy": RetryPolicy(maximum_interval=retry_interval),
        }
        if local:
            return await workflow.execute_local_activity_method(activity, argument, **options)
        return await workflow.execute_activity_method(activity, argument, **options)

    async def _withdraw_payment(self) -> None:
        """No order was made: close its trade so that nobody can pay it (compensation)."""
        workflow.set_current_details("no order was made: withdrawing its payment")
        try:
            await workflow.execute_activity_method(
                PaymentActivities.close_trade,
                self._trade,
                summary=f"close trade {self._request.order_id}",
                **GATEWAY_STEP,
            )
        except ActivityError as failure:
            if refused_for_good(failure) is None:
                raise
            # Nobody was shown the QR code, so nobody can pay it: nothing is left to do.
            workflow.logger.warning(
                "order %s was not made and the gateway refused to close its trade",
                self._request.order_id,
            )

    @workflow.update
    async def payment_instructions(self) -> PaymentInstructions:
        """The QR code, once the gateway has made it; what `POST /v1/orders` answers with."""
        await workflow.wait_condition(
            lambda: self._instructions is not None or self._creation_failure is not None
        )
        if self._instructions is None:
            raise ApplicationError(
                self._creation_failure or "payment not created", type="PaymentNotCreated"
            )
        return self._instructions

    @workflow.update
    async def start_payment(self, start: PaymentStart) -> PaymentInstructions:
        """The buyer pressed Pay on a deferred order: make its trade, if the order may still be
        paid at its quoted price; answers the QR code (the same one for every press)."""
        async with self._paying:
            if not self._trade_made:
                await self._make_trade(start)
        assert self._instructions is not None
        return self._instructions

    @start_payment.validator
    def _payable(self, start: PaymentStart) -> None:
        if self._request.payment != PaymentTiming.DEFERRED:
            raise ApplicationError(
                "the order's payment was made with it: it needs no other", type="NotDeferred"
            )
        if self._instructions is None or self._status != OrderStatus.PENDING:
            raise ApplicationError(
                f"this order can no longer be paid: it is {self._status}", type="PaymentRefused"
            )

    async def _make_trade(self, start: PaymentStart) -> None:
        request = self._request
        refusal: str | None = await workflow.execute_activity_method(
            OrderActivities.start_payment,
            start,
            summary="check that the order may still be paid as quoted",
            **DATABASE_STEP,
        )
        if refusal is not None:
            raise ApplicationError(refusal, type="PaymentRefused")
        # The deadline runs from the trade: the buyer gets the whole payment timeout.
        self._create_deadline = workflow.now() + timedelta(
            seconds=request.payment_create_timeout_seconds
        )
        expires_at = workflow.now() + timedelta(seconds=request.payment_timeout_seconds)
        payable_until = expires_at + timedelta(seconds=request.deadline_extension_seconds)
        try:
            qr_code = await self._create_payment(payable_until, self._subject, local=False)
        except ActivityError as failure:
            raise ApplicationError(
                f"the payment gateway could not create the payment: {failure_reason(failure)}",
                type="PaymentNotCreated",
            ) from None
        # Checked again as the trade is recorded: a newer order may have claimed meanwhile.
        refusal = await workflow.execute_activity_method(
            OrderActivities.start_payment,
            PaymentStart(
                order_id=start.order_id,
                amount_cents=start.amount_cents,
                qr_code=qr_code,
                expires_at=expires_at,
                payable_until=payable_until,
            ),
            summary="record the trade, if the order may still be paid",
            **DATABASE_STEP,
        )
        if refusal is not None:
            await self._withdraw_payment()
            raise ApplicationError(refusal, type="PaymentRefused")
        assert self._instructions is not None
        self._instructions = self._instructions.model_copy(
            update={"qr_code": qr_code, "expires_at": expires_at}
        )
        self._trade_made = True
        self._expires_at, self._payable_until = expires_at, payable_until
        self._deadline_moved = True

    @workflow.update
    async def cancel(self) -> OrderStatus:
        """Cancel a pending order; answers the status it ends with (a racing payment wins)."""
        self._cancel_requested = True
        await workflow.wait_condition(lambda: self._status != OrderStatus.PENDING)
        return self._status

    @cancel.validator
    def _cancellable(self) -> None:
        if self._status != OrderStatus.PENDING:
            raise ApplicationError(f"the order is already {self._status}", type="OrderEnded")

    @workflow.update
    async def extend_deadline(self, extension: DeadlineExtension) -> datetime:
        """Move a pending order's payment deadline later; answers the deadline it has."""
        action = OperatorAction(
            order_id=self._request.order_id,
            action="extend_deadline",
            note=extension.note,
            until=extension.until,
        )
        deadline: datetime = await workflow.execute_activity_method(
            OrderActivities.extend_deadline,
            action,
            summary=f"extend the deadline to {_utc(extension.until)}",
            **DATABASE_STEP,
        )
        if self._status == OrderStatus.PENDING and deadline > self._expires_at:
            self._expires_at = deadline
            self._deadline_moved = True
        return self._expires_at

    @extend_deadline.validator
    def _extendable(self, extension: DeadlineExtension) -> None:
        self._require_operators()
        if self._instructions is None or self._status != OrderStatus.PENDING:
            raise ApplicationError(f"the order is {self._status}, not pending", type="OrderEnded")
        if extension.until.tzinfo is None:
            raise ApplicationError("the new deadline needs a time zone", type="BadDeadline")
        if extension.until <= self._expires_at:
            raise ApplicationError(
                f"the deadline is {_utc(self._expires_at)} already: it can only move later",
                type="BadDeadline",
            )
        if extension.until > self._payable_until:
            raise ApplicationError(
                f"the trade stays payable at {self._request.gateway} until "
                f"{_utc(self._payable_until)}: the deadline cannot move past that",
                type="BadDeadline",
            )

    @workflow.update
    async def retry_refund(self, retry: RefundRetry) -> OrderStatus:
        """Try again the refunds the gateway refused; answers the order's status after."""
        failed, self._failed_refunds = self._failed_refunds, []
        async with self._money:
            for order in failed:
                action = OperatorAction(
                    order_id=order.order_id, action="retry_refund", note=retry.note
                )
                still_flagged: bool = await workflow.execute_activity_method(
                    OrderActivities.reopen_refund,
                    RefundReopening(refund=order, action=action),
                    summary=f"reopen refund {order.refund_no}",
                    **DATABASE_STEP,
                )
                self._update(self._status, flagged=still_flagged)
                self._record(await refund(order))
        self._operator_acted = True
        return self._status

    @retry_refund.validator
    def _retriable(self, retry: RefundRetry) -> None:
        self._require_operators()
        if not self._failed_refunds:
            raise ApplicationError(
                "no refund of this order was refused: there is nothing to retry",
                type="NothingToRetry",
            )

    @workflow.update
    async def resolve(self, resolution: Resolution) -> OrderStatus:
        """Settle a flagged order: refund its payment, or accept it as it is, with a note."""
        action = OperatorAction(
            order_id=self._request.order_id, action=resolution.action, note=resolution.note
        )
        async with self._money:
            if resolution.action == "accept":
                await workflow.execute_activity_method(
                    OrderActivities.accept_flag, action, summary="accept the order", **DATABASE_STEP
                )
                # Whatever was refused is settled by hand now: nothing is left to retry.
                self._failed_refunds.clear()
                self._update(self._status, flagged=False)
            else:
                order: RefundOrder | None = await workflow.execute_activity_method(
                    OrderActivities.refund_paid_order,
                    action,
                    summary="decide the order's refund",
                    **DATABASE_STEP,
                )
                self._update(self._status, flagged=False)
                if order is not None:
                    self._record(await refund(order))
        self._operator_acted = True
        return self._status

    @resolve.validator
    def _resolvable(self, resolution: Resolution) -> None:
        self._require_operators()
        if not self._flagged:
            raise ApplicationError(
                "the order is not flagged: there is nothing to resolve", type="NotFlagged"
            )
        if not resolution.note.strip():
            raise ApplicationError("a resolution needs a note saying why", type="NoNote")
        if resolution.action == "refund" and self._status != OrderStatus.PAID:
            raise ApplicationError(
                f"only a paid order's money can be refunded, and this order is {self._status}"
                + (": retry its refused refund instead" if self._failed_refunds else ""),
                type="NotPaid",
            )

    def _require_operators(self) -> None:
        if not self._operators:
            raise ApplicationError(
                "this order's saga began before operators could act on sagas", type="TooOld"
            )

    @workflow.signal
    def payment_notified(self, notice: PaymentNotice) -> None:
        self._payments.append(notice)

    @workflow.signal
    def supersede(self, by: str | None = None) -> None:
        """A newer order of the reservation (`by`; older sagas did not say which) took over."""
        self._superseded = True
        self._superseded_by = by

    @workflow.query
    def status(self) -> OrderStatus:
        return self._status

    async def _supersede(self, order_ids: list[str]) -> None:
        async def tell(order_id: str) -> None:
            try:
                handle = workflow.get_external_workflow_handle(order_workflow_id(order_id))
                await handle.signal(OrderWorkflow.supersede, self._request.order_id)
            except FailureError:
                # Its saga has already ended; a payment for it still gets refunded, late.
                workflow.logger.info("superseded order %s had already ended", order_id)

        await asyncio.gather(*(tell(order_id) for order_id in order_ids))

    async def _create_payment(self, expires_at: datetime, subject: str, *, local: bool) -> str:
        """The QR code; raises one of LOCAL_STEP_FAILURES (an ActivityError, if not `local`)
        when the gateway cannot make it in time."""
        request = self._request
        workflow.set_current_details(f"creating the payment at {request.gateway}")
        qr_code: str = await self._creation_step(
            PaymentActivities.create_payment,
            PaymentRequest(
                gateway=request.gateway,
                order_id=request.order_id,
                amount_cents=request.amount_cents,
                subject=subject,
                expires_at=expires_at,
                notify_url=request.notify_url,
            ),
            summary=f"create the payment at {request.gateway}",
            start_to_close_timeout=GATEWAY_CREATE_TIMEOUT,
            retry_interval=GATEWAY_CREATE_RETRY_INTERVAL,
            local=local,
        )
        return qr_code

    async def _await_outcome(self) -> None:
        while self._status == OrderStatus.PENDING:
            remaining = max(self._expires_at - workflow.now(), timedelta(0))
            self._deadline_moved = False
            workflow.set_current_details(
                f"waiting for payment until {_utc(self._expires_at)}"
                if self._trade_made
                else f"quoted: waiting for the buyer to press Pay until {_utc(self._expires_at)}"
            )
            try:
                if not self._news_past_deadline(remaining):
                    await workflow.wait_condition(
                        self._has_news, timeout=remaining, timeout_summary="payment deadline"
                    )
            except TimeoutError:
                await self._expire()
                continue
            except asyncio.CancelledError:
                # An operator cancelled the saga (Web UI, CLI): cancel the order properly,
                # closing its trade, rather than leave it pending with no saga to end it.
                self._cancel_requested = True
            if self._payments:
                await self._settle_payments()
            elif self._superseded:
                newer = self._superseded_by or "a newer order"
                await self._end_unpaid(OrderStatus.SUPERSEDED, f"superseded by {newer}")
            elif self._cancel_requested:
                await self._end_unpaid(OrderStatus.CANCELLED, "cancelled by the client")

    def _news_past_deadline(self, remaining: timedelta) -> bool:
        """News (a cancel, a newer order, a payment) that came while the gateway was asked about
        an order past its deadline. Waiting no time at all times out before it looks at them:
        the saga would ask the gateway again, and again, and never see to them."""
        return remaining <= timedelta(0) and self._has_news() and self._has(NEWS_PAST_DEADLINE)

    def _has(self, change: str) -> bool:
        """Whether the saga runs with `change`, a patch asked for after the saga began."""
        return self._every_change or workflow.patched(change)

    def _has_news(self) -> bool:
        return (
            bool(self._payments)
            or self._superseded
            or self._cancel_requested
            or self._deadline_moved
        )

    async def _watch_over(self) -> None:
        """Stay while something can still happen to the order: a late payment of an unpaid
        one (refunded here), an operator's resolution of a flagged one."""
        # A QR code may be paid until the trade expires at the gateway (Alipay's, never scanned,
        # even after its close), and that payment notified for a while after. Zero: no watch.
        seconds = self._request.late_payment_horizon_seconds
        horizon = self._payable_until + timedelta(seconds=seconds)
        # An Alipay QR code nobody scanned stays payable after its close, and a payment's
        # notifications can all be lost: once the trade can no longer be paid, the gateway's
        # answer is final, and it is asked once (at the horizon, if that comes first).
        last_word: datetime | None = min(self._payable_until + LAST_WORD_DELAY, horizon)
        if not self._has(LAST_WORD):
            last_word = None
        while True:
            unpaid = seconds > 0 and self._trade_made and self._status in UNPAID_ENDINGS
            watching = unpaid and workflow.now() < horizon
            due = (
                unpaid
                and not self._flagged
                and last_word is not None
                and workflow.now() >= last_word
            )
            # Once the watch is over (the horizon came first), only sagas of the patch ask.
            if due and (watching or self._has(LAST_WORD_AT_HORIZON)):
                last_word = None
                await self._ask_last_word()
                continue
            if not self._flagged and not watching:
                return
            if self._flagged:
                workflow.set_current_details(
                    f"{self._status} and flagged: waiting for an operator to resolve it"
                    + (" or retry its refund" if self._failed_refunds else "")
                )
                timeout = None
            else:
                workflow.set_current_details(
                    f"{self._status}: a late payment is refunded until {_utc(horizon)}"
                )
                timeout = (last_word or horizon) - workflow.now()
            self._operator_acted = False
            try:
                await workflow.wait_condition(
                    lambda: bool(self._payments) or self._operator_acted,
                    timeout=timeout,
                    timeout_summary="late payment horizon",
                )
            except TimeoutError:
                continue
            await self._settle_payments()

    async def _ask_last_word(self) -> None:
        """Ask the gateway about the unpaid order's trade, which can no longer be paid: a
        payment nobody told us of is settled (refunded) now."""
        workflow.set_current_details(f"{self._status}: asking {self._request.gateway} once more")
        check = await ask_gateway(self._trade, "whether the trade was paid after all")
        # Refused: nothing more can be learnt, and the horizon's watch goes on.
        if check is not None and self._is_new(check):
            await self._settle_payments()

    async def _expire(self) -> None:
        if not self._trade_made:
            await self._end_untraded(OrderStatus.EXPIRED, "its quote lapsed before it was paid")
            return
        # A notification may have been lost: ask the gateway before calling the order unpaid.
        workflow.set_current_details(f"deadline passed: asking {self._request.gateway} first")
        check = await ask_gateway(self._trade, "whether the trade was paid")
        if check is None:
            # Refused: the close, next, is what makes the trade unpayable, and it decides.
            check = TradeCheck(payment=None)
        if self._is_new(check):
            await self._settle_payments()
            return
        if self._operators and (self._deadline_moved or self._has_news()):
            # An operator moved the deadline, or news came, while the gateway was asked.
            return
        await self._end_unpaid(OrderStatus.EXPIRED, "not paid before the payment timeout")

    async def _end_unpaid(self, status: OrderStatus, reason: str) -> None:
        if not self._trade_made and await self._end_untraded(status, reason):
            return
        workflow.set_current_details(f"closing trade {self._request.order_id}: {reason}")
        try:
            check: TradeCheck = await workflow.execute_activity_method(
                PaymentActivities.close_trade,
                self._trade,
                summary=f"close trade {self._request.order_id}",
                **GATEWAY_STEP,
            )
        except ActivityError as failure:
            refusal = refused_for_good(failure)
            if refusal is None:
                raise
            # The trade may stay payable at the gateway: the order still ends, flagged, and a
            # payment that comes later is refunded by a late-payment saga.
            flag = f"the gateway refused to close the trade ({refusal})"
            await self._end(status, reason, flag=flag)
            return
        if self._is_new(check):
            # Paid before the close: the payment wins, and is judged like any other.
            await self._settle_payments()
            return
        await self._end(status, reason)

    async def _end_untraded(self, status: OrderStatus, reason: str) -> bool:
        """End a deferred order that has no trade: nothing to close at the gateway. False if
        the buyer's Pay made its trade meanwhile: the order is then ended (or not) as any other."""
        async with self._paying:
            if self._trade_made:
                return False
            await self._end(status, reason)
            return True

    @property
    def _subject(self) -> str:
        """What the buyer's wallet shows the trade is for."""
        return f"Reservation {self._request.reservation_id}: {self._request.days} days"

    @property
    def _trade(self) -> TradeRef:
        return TradeRef(gateway=self._request.gateway, order_id=self._request.order_id)

    def _is_new(self, check: TradeCheck) -> bool:
        """Queue a payment the gateway reports, unless it was settled already.

        A settled one must not be settled again: that would ask the gateway forever.
        """
        if check.payment is None or check.payment.trade_no in self._settled_trades:
            return False
        self._payments.append(check.payment)
        return True

    async def _end(self, status: OrderStatus, reason: str, *, flag: str | None = None) -> None:
        ending = OrderEnding(
            order_id=self._request.order_id, status=status, reason=reason, flag=flag
        )
        ended: OrderStatus = await workflow.execute_activity_method(
            OrderActivities.end_order, ending, summary=f"end the order {status}", **DATABASE_STEP
        )
        self._update(ended, flagged=self._flagged or flag is not None)

    async def _settle_payments(self) -> None:
        async with self._money:
            while self._payments:
                notice = self._payments.pop(0)
                if notice.trade_no in self._settled_trades:
                    continue
                self._settled_trades.add(notice.trade_no)
                self._record(await settle(notice))

    def _record(self, settled: Settled) -> None:
        if settled.failed_refund is not None:
            self._failed_refunds.append(settled.failed_refund)
        self._update(settled.status, flagged=settled.flagged)

    def _update(self, status: OrderStatus, *, flagged: bool) -> None:
        """The order's status and flag, as the UI's search attributes show them."""
        status_changed, flag_changed = status != self._status, flagged != self._flagged
        self._status, self._flagged = status, flagged
        if not self._operators:
            # Sagas from before OPERATORS upserted the status alone: they replay so.
            if status_changed:
                workflow.upsert_search_attributes(
                    [search_attributes.ORDER_STATUS.value_set(status)]
                )
        elif status_changed or flag_changed:
            show_order(status, flagged=flagged)


def _utc(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"
