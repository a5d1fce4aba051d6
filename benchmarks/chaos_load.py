"""The chaos drill's load: a business's app and its buyers, over HTTP only.

Each reservation lives one story, planned up front from the seed:
- two windows: two orders at once from two API processes (the newer supersedes the older),
  sometimes a third after; the buyer pays the reservation's payable order, and sometimes first
  a window that was superseded (its late payment must be refunded, once);
- expired: an order of the short-timeout API left to expire, sometimes paid late, sometimes
  followed by a new order that is paid;
- cancelled: an order cancelled through the other API, sometimes paid late;
- renewal: a booking paid, then a renewal paid;
- abandoned: an order of the short-timeout API nobody pays.
A story's first order is sometimes POSTed to two APIs at once with one Idempotency-Key, or again
after its answer: both answers must be the one order. The app asks again as a real one would:
on a lost connection or a 5xx, the same request (the same Idempotency-Key), at the next API;
after a 503 to an order, which made nothing, a new request with a new key.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel

from core.vocabulary import Gateway
from paysaga.demo import ApiOrder
from stack.system import System

# How long the app keeps asking one request again before it gives up (a violation: the system
# was down longer than any of the drill's faults lasts).
PATIENCE_SECONDS = 120.0
# Between tries the app waits twice as long each time, up to a longest pause, give or take a
# random half: a crowd of clients retrying in step would keep a recovering system down.
FIRST_PAUSE_SECONDS = 0.25
LONGEST_PAUSE_SECONDS = 8.0
POLL_SECONDS = 1.0
# How long a story waits for an order to be paid, or to expire, before it goes on regardless.
WAIT_SECONDS = 30.0
# At most this many stories at once, so that a slowed system is not buried.
STORIES_AT_ONCE = 60
STORY_WEIGHTS = {"two_windows": 3, "expired": 2, "cancelled": 1, "renewal": 2, "abandoned": 1}


class FaultsFired(BaseModel):
    """What the sandbox's faults did since it started (`GET /sandbox/faults/fired`)."""

    gateway_calls: dict[str, int]
    gateway_calls_failed: dict[str, int]
    notifications_dropped: int
    notifications_duplicated: int

    @property
    def calls(self) -> int:
        return sum(self.gateway_calls.values())

    @property
    def failed(self) -> int:
        return sum(self.gateway_calls_failed.values())


class GaveUp(Exception):
    """A request got no usable answer within PATIENCE_SECONDS."""


@dataclass
class Journal:
    """What happened, when: the timeline printed after the run, counts, and violations."""

    began: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        line = f"{datetime.now(UTC):%H:%M:%S.%f}"[:-3] + f" +{self._elapsed():6.1f}s  {text}"
        self.lines.append(line)
        print(line, flush=True)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def violation(self, text: str) -> None:
        self.violations.append(f"+{self._elapsed():.1f}s {text}")

    def _elapsed(self) -> float:
        return time.monotonic() - self.began


@dataclass(frozen=True)
class Story:
    """One reservation's story, drawn from the seed before the run."""

    kind: str
    reservation_id: str
    # One per order the story makes, in order.
    gateways: tuple[Gateway, ...]
    days: tuple[int, ...]
    # The first order is POSTed to two APIs at once, or POSTed again after its answer.
    twin_post: bool
    repeat_post: bool
    # The buyer also pays an order that can no longer be paid.
    late_payment: bool


def plan_stories(orders: int, seed: int) -> list[Story]:
    """Stories until they make at least `orders` orders."""
    rng = random.Random(seed)
    kinds, weights = zip(*STORY_WEIGHTS.items(), strict=True)
    stories: list[Story] = []
    planned = 0
    while planned < orders:
        kind = rng.choices(kinds, weights)[0]
        count = {
            "two_windows": rng.choice((2, 2, 3)),
            "expired": rng.choice((1, 2)),
            "renewal": 2,
        }.get(kind, 1)
        # An order paid after it ended is refunded only where the gateway still takes it:
        # Alipay's QR code nobody scanned; a closed WeChat Pay order refuses the buyer.
        late = kind in ("expired", "cancelled") and rng.random() < 0.7
        first = Gateway.ALIPAY if late and rng.random() < 0.8 else rng.choice(list(Gateway))
        stories.append(
            Story(
                kind=kind,
                reservation_id=f"chaos-{seed}-{len(stories)}-{rng.getrandbits(32):08x}",
                gateways=(first, *(rng.choice(list(Gateway)) for _ in range(count - 1))),
                days=tuple(rng.randint(1, 3) for _ in range(count)),
                twin_post=rng.random() < 0.2,
                repeat_post=rng.random() < 0.2,
                late_payment=late or (kind == "two_windows" and rng.random() < 0.5),
            )
        )
        planned += count
    return stories


@dataclass
class App:
    """The business's app and its buyers: orders over the API, payments at the sandbox."""

    http: httpx.AsyncClient
    system: System
    journal: Journal
    # Every order an API answered with, by its reservation.
    told: dict[str, str] = field(default_factory=dict)
    # Orders the buyer paid at the sandbox (its answer was 200).
    paid_by_buyer: set[str] = field(default_factory=set)

    async def create(
        self, story: Story, number: int, *, window: int = 0, short: bool = False
    ) -> ApiOrder | None:
        """The story's `number`th order, through API `window` (or the short-timeout one);
        None if every request was answered 503 (no order made) until the app gave up."""
        urls = self._urls(window, short=short)
        body = {
            "reservation_id": story.reservation_id,
            "days": story.days[number],
            "gateway": story.gateways[number],
        }
        twin = story.twin_post and number == 0
        deadline = time.monotonic() + PATIENCE_SECONDS
        tries = 0
        while time.monotonic() < deadline:
            headers = {"Idempotency-Key": uuid.uuid4().hex}
            posts = [self._send("POST", urls, "/v1/orders", json=body, headers=headers)]
            if twin:
                # The same request at the same moment at the next API: a double submit.
                posts.append(
                    self._send("POST", _turned(urls), "/v1/orders", json=body, headers=headers)
                )
            answers = await asyncio.gather(*posts)
            made = [answer for answer in answers if answer.status_code == 201]
            if len(made) < len(answers) and made:
                self.journal.violation(
                    f"one order POSTed twice with Idempotency-Key {headers['Idempotency-Key']}: "
                    f"answered {[a.status_code for a in answers]} ({made[0].json()['order_id']})"
                )
            if made:
                order = self._told(made, story)
                if story.repeat_post and number == 0:
                    await self._repeat(urls, body, headers, order)
                return order
            refusal = next((a for a in answers if a.status_code != 503), None)
            if refusal is not None:
                self.journal.violation(
                    f"POST /v1/orders for {story.reservation_id} answered "
                    f"{refusal.status_code}: {refusal.text[:200]}"
                )
                return None
            for answer in answers:
                self.journal.count(f"orders refused (503: {_detail(answer)}), asked anew")
            await _pause(tries)
            tries += 1
        self.journal.violation(f"no order made for {story.reservation_id} in {PATIENCE_SECONDS} s")
        return None

    async def order(self, order_id: str) -> ApiOrder:
        answer = await self._send("GET", self._urls(0), f"/v1/orders/{order_id}", retry_503=True)
        return ApiOrder.model_validate_json(answer.content)

    async def reservation(self, reservation_id: str) -> dict[str, Any]:
        path = f"/v1/reservations/{reservation_id}"
        answer = await self._send("GET", self._urls(0), path, retry_503=True)
        body: dict[str, Any] = answer.json()
        return body

    async def cancel(self, order_id: str, *, window: int) -> None:
        path = f"/v1/orders/{order_id}/cancel"
        answer = await self._send("POST", self._urls(window), path, retry_503=True)
        # 409: it was no longer pending (superseded, paid, cancelled by the first attempt).
        self.journal.count(f"cancels answered {answer.status_code}")

    async def pay(self, order_id: str) -> bool:
        """The buyer pays the order's QR code; whether the gateway took the money."""
        answer = await self.http.post(f"{self.system.sandbox_url}/sandbox/trades/{order_id}/pay")
        if answer.status_code == 200:
            self.paid_by_buyer.add(order_id)
            self.journal.count("payments made by buyers")
            return True
        if answer.status_code != 409:
            self.journal.violation(
                f"the sandbox answered {answer.status_code} to paying {order_id}"
            )
        self.journal.count("payments refused by the gateway (order closed)")
        return False

    async def until(
        self, order_id: str, done: Callable[[ApiOrder], bool], *, seconds: float = WAIT_SECONDS
    ) -> ApiOrder:
        """The order once `done` holds of it, or as it is after `seconds`."""
        deadline = time.monotonic() + seconds
        while not done(order := await self.order(order_id)) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        return order

    async def set_faults(self, faults: dict[str, Any]) -> None:
        url = f"{self.system.sandbox_url}/sandbox/faults"
        answer = await (self.http.put(url, json=faults) if faults else self.http.delete(url))
        answer.raise_for_status()

    async def faults_fired(self) -> FaultsFired:
        answer = await self.http.get(f"{self.system.sandbox_url}/sandbox/faults/fired")
        answer.raise_for_status()
        return FaultsFired.model_validate_json(answer.content)

    def _urls(self, window: int, *, short: bool = False) -> list[str]:
        """The APIs to ask in turn, starting with the window's own."""
        if short:
            return [self.system.short_timeout_api_url]
        urls = list(self.system.api_urls)
        return urls[window:] + urls[:window]

    def _told(self, answers: Sequence[httpx.Response], story: Story) -> ApiOrder:
        orders = [ApiOrder.model_validate_json(answer.content) for answer in answers]
        if len({order.order_id for order in orders}) > 1:
            self.journal.violation(
                f"one Idempotency-Key made orders {[o.order_id for o in orders]}"
            )
        for order in orders:
            self.told[order.order_id] = story.reservation_id
        return orders[0]

    async def _repeat(
        self, urls: list[str], body: dict[str, Any], headers: dict[str, str], order: ApiOrder
    ) -> None:
        """The same POST again at the other API, as a client that lost the first answer."""
        self.journal.count("orders POSTed again with their Idempotency-Key")
        answer = await self._send("POST", _turned(urls), "/v1/orders", json=body, headers=headers)
        if answer.status_code != 201 or answer.json()["order_id"] != order.order_id:
            self.journal.violation(
                f"POSTed again, order {order.order_id}'s request answered "
                f"{answer.status_code}: {answer.text[:200]}"
            )

    async def _send(
        self, method: str, urls: list[str], path: str, *, retry_503: bool = False, **options: Any
    ) -> httpx.Response:
        """The first answer that is not a server error, asking the APIs in turn after a lost
        connection or a 5xx (a 503 is an answer where it means that nothing was done)."""
        deadline = time.monotonic() + PATIENCE_SECONDS
        for tries, url in enumerate(itertools.cycle(urls)):
            try:
                answer = await self.http.request(method, url + path, **options)
            except httpx.TransportError as error:
                problem = type(error).__name__
            else:
                if answer.status_code == 500:
                    self.journal.violation(f"{method} {path} answered 500: {answer.text[:200]}")
                if answer.status_code < 500 or (answer.status_code == 503 and not retry_503):
                    return answer
                problem = str(answer.status_code)
            self.journal.count(f"requests asked again after {problem}")
            if time.monotonic() > deadline:
                raise GaveUp(f"{method} {path}: no answer in {PATIENCE_SECONDS:.0f} s ({problem})")
            await _pause(tries)
        raise ValueError("no API to ask")


async def _pause(tries: int) -> None:
    longest = min(FIRST_PAUSE_SECONDS * 2**tries, LONGEST_PAUSE_SECONDS)
    await asyncio.sleep(random.uniform(longest / 2, longest))


def _detail(answer: httpx.Response) -> str:
    """What a problem answer says, its ids left out, so that alike answers count together."""
    try:
        detail = str(answer.json()["detail"])
    except (ValueError, KeyError):
        detail = answer.text
    return re.sub(r"\b\w*[0-9a-f]{12,}\w*\b", "…", detail)[:160]


def _turned(urls: list[str]) -> list[str]:
    """The same APIs, starting with the next one."""
    return urls[1:] + urls[:1]


async def two_windows(app: App, story: Story) -> None:
    windows = list(
        await asyncio.gather(app.create(story, 0, window=0), app.create(story, 1, window=1))
    )
    if len(story.gateways) == 3:
        windows.append(await app.create(story, 2, window=1))
    if not any(windows):
        return
    payable = (await app.reservation(story.reservation_id))["payable_order_id"]
    stale = [o.order_id for o in windows if o is not None and o.order_id != payable]
    if story.late_payment and stale:
        await app.pay(stale[0])
    if payable is not None:
        await app.pay(payable)


async def expired(app: App, story: Story) -> None:
    order = await app.create(story, 0, short=True)
    if order is None:
        return
    await app.until(order.order_id, lambda now: now.status != "pending")
    if story.late_payment:
        await app.pay(order.order_id)
    if len(story.gateways) == 2 and (again := await app.create(story, 1, window=1)):
        await app.pay(again.order_id)


async def cancelled(app: App, story: Story) -> None:
    order = await app.create(story, 0)
    if order is None:
        return
    await app.cancel(order.order_id, window=1)
    if story.late_payment:
        await app.pay(order.order_id)


async def renewal(app: App, story: Story) -> None:
    booking = await app.create(story, 0)
    if booking is None:
        return
    if await app.pay(booking.order_id):
        await app.until(booking.order_id, lambda now: now.status == "paid")
    renewing = await app.create(story, 1, window=1)
    if renewing is not None:
        await app.pay(renewing.order_id)


async def abandoned(app: App, story: Story) -> None:
    await app.create(story, 0, short=True)


STORIES: dict[str, Callable[[App, Story], Awaitable[None]]] = {
    "two_windows": two_windows,
    "expired": expired,
    "cancelled": cancelled,
    "renewal": renewal,
    "abandoned": abandoned,
}


async def run_load(
    app: App, stories: list[Story], *, seconds: float, last_fault: asyncio.Event
) -> None:
    """Every story, their starts spread evenly over `seconds`; the last tenth not before the
    last fault has begun, which restarts that came slower than planned may have delayed."""
    gate = asyncio.Semaphore(STORIES_AT_ONCE)
    began = time.monotonic()
    held_back = len(stories) - len(stories) // 10

    async def live(number: int, story: Story) -> None:
        await asyncio.sleep(began + number * seconds / len(stories) - time.monotonic())
        if number >= held_back:
            await last_fault.wait()
        async with gate:
            try:
                await STORIES[story.kind](app, story)
            except GaveUp as gave_up:
                app.journal.violation(f"{story.reservation_id}: gave up: {gave_up}")
        app.journal.count(f"stories: {story.kind}")

    await asyncio.gather(*(live(number, story) for number, story in enumerate(stories)))
    app.journal.note(f"load: every story told in {time.monotonic() - began:.0f} s")
