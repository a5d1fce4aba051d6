"""Gateway breakers against the sandbox over HTTP, its fault switches making a gateway fail: the
breaker itself, a worker's breakers recorded in the database, and the API's fast refusal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import Engine

from api.app import create_app
from api.breakers import OpenBreakers, failing_gateway
from core.settings import SANDBOX_APP_ID, Settings
from core.vocabulary import Gateway
from gateways.alipay import AlipayClient, AlipayConfig, AlipayGateway
from gateways.alipay_signing import load_private_key
from gateways.breaker import Breaker
from gateways.errors import GatewayError, GatewayResponseInvalid, GatewayUnavailable, TradeNotFound
from gateways.gateway import PaymentGateway
from gateways.registry import payment_gateways
from paysaga.dev import ensure_dev_keys
from paysaga.worker import GatewayBreakers
from sandbox.app import create_app as create_sandbox_app
from stack.ports import free_port
from store import breakers
from store.db import transaction
from tests.rig import Sandbox, sandbox_settings
from tests.servers import serving

# Each gateway's query, as the sandbox's fault switch names it.
QUERY_METHOD = {Gateway.ALIPAY: "alipay.trade.query", Gateway.WECHATPAY: "wechatpay.query"}
CREATE_METHOD = {Gateway.ALIPAY: "alipay.trade.precreate", Gateway.WECHATPAY: "wechatpay.native"}


@dataclass
class World:
    settings: Settings
    sandbox: Sandbox
    gateways: dict[Gateway, PaymentGateway]


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    home = tmp_path_factory.mktemp("breaker")
    ensure_dev_keys(home / "keys")
    port = free_port()
    async with (
        serving(create_sandbox_app(sandbox_settings(home / "keys", port)), port) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        settings = Settings(home=home, sandbox_url=url)
        yield World(settings, Sandbox(http, url), payment_gateways(settings, http))


@pytest.fixture(autouse=True)
async def healthy_sandbox(world: World) -> AsyncIterator[None]:
    yield
    (await world.sandbox.http.delete(f"{world.sandbox.url}/sandbox/faults")).raise_for_status()


@pytest.fixture(params=list(Gateway))
def gateway(request: pytest.FixtureRequest) -> Gateway:
    value: Gateway = request.param
    return value


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Changes:
    """What a breaker reported, in order."""

    seen: list[tuple[bool, str]] = field(default_factory=list)

    def __call__(self, is_open: bool, reason: str) -> None:
        self.seen.append((is_open, reason))

    @property
    def states(self) -> list[bool]:
        return [is_open for is_open, _ in self.seen]


def breaker(gateway: PaymentGateway, changes: Changes, clock: Clock | None = None) -> Breaker:
    return Breaker(
        gateway,
        failure_ratio=Decimal("0.5"),
        window_seconds=5,
        min_calls=10,
        on_change=changes,
        clock=clock or Clock(),
    )


async def query_unknown_trades(guarded: PaymentGateway, calls: int) -> list[type[GatewayError]]:
    """What each query of a trade nobody made raised: TradeNotFound from a healthy gateway."""
    raised: list[type[GatewayError]] = []
    for _ in range(calls):
        with pytest.raises(GatewayError) as failure:
            await guarded.query(out_trade_no=f"nobody_{uuid.uuid4().hex[:16]}")
        raised.append(type(failure.value))
    return raised


async def test_more_than_half_failing_opens_it_and_a_probe_closes_it(
    world: World, gateway: Gateway
) -> None:
    changes = Changes()
    guarded = breaker(world.gateways[gateway], changes)
    await world.sandbox.faults(fail_methods={QUERY_METHOD[gateway]: 6}, fail_mode="http_503")
    raised = await query_unknown_trades(guarded, 10)
    assert raised == [GatewayUnavailable] * 6 + [TradeNotFound] * 4
    assert guarded.is_open and changes.states == [True]
    reason = changes.seen[0][1]
    assert reason.startswith("6 of its last 10 calls failed within 5 s, the last with:")
    assert "503" in reason

    # The sandbox answers again: the probe's TradeNotFound is a healthy answer.
    await guarded.probe()
    assert not guarded.is_open and changes.seen[1] == (False, "a call got through")


async def test_too_few_calls_or_half_of_them_failing_keep_it_closed(world: World) -> None:
    changes = Changes()
    guarded = breaker(world.gateways[Gateway.WECHATPAY], changes)
    await world.sandbox.faults(fail_methods={"wechatpay.query": 9}, fail_mode="http_503")
    await query_unknown_trades(guarded, 9)
    assert not guarded.is_open  # 9 of 9 failed, but 9 calls are too few to judge

    guarded = breaker(world.gateways[Gateway.WECHATPAY], changes)
    await world.sandbox.faults(fail_methods={"wechatpay.query": 5}, fail_mode="http_503")
    await query_unknown_trades(guarded, 10)
    assert not guarded.is_open and changes.seen == []  # 5 of 10: not more than half
    await world.sandbox.faults(fail_methods={"wechatpay.query": 1}, fail_mode="http_503")
    await query_unknown_trades(guarded, 1)
    assert guarded.is_open and changes.seen[0][1].startswith("6 of its last 11 calls failed")


async def test_failures_older_than_the_window_are_forgotten(world: World) -> None:
    changes, clock = Changes(), Clock()
    guarded = breaker(world.gateways[Gateway.ALIPAY], changes, clock)
    # Alipay's own system error (code 20000), not an HTTP failure, counts the same.
    await world.sandbox.faults(fail_methods={"alipay.trade.query": 100}, fail_mode="system_error")
    assert set(await query_unknown_trades(guarded, 9)) == {GatewayUnavailable}
    clock.now += 5
    await query_unknown_trades(guarded, 1)
    assert not guarded.is_open  # the first nine are out of the window
    clock.now += 4.9
    await query_unknown_trades(guarded, 9)
    assert guarded.is_open and changes.states == [True]


async def test_while_open_a_failing_probe_keeps_it_open_and_a_sagas_call_closes_it(
    world: World, gateway: Gateway
) -> None:
    changes = Changes()
    guarded = breaker(world.gateways[gateway], changes)
    await world.sandbox.faults(fail_methods={QUERY_METHOD[gateway]: 100}, fail_mode="http_503")
    await query_unknown_trades(guarded, 10)
    assert guarded.is_open
    await guarded.probe()
    assert guarded.is_open and changes.states == [True]

    # Creating a payment still works: a running saga's call gets through and closes it.
    qr_code = await guarded.create_qr_payment(
        out_trade_no=f"ord_{uuid.uuid4().hex[:24]}",
        amount_cents=990,
        subject="Reservation room-1: booking, 1 days",
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
    )
    assert qr_code and not guarded.is_open and changes.states == [True, False]


async def test_an_answer_that_does_not_verify_counts_as_a_failure(world: World) -> None:
    # Our Alipay client with the wrong Alipay public key: every answer fails its signature.
    keys = world.settings.keys_dir
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    distrustful = AlipayGateway(
        AlipayClient(
            AlipayConfig(
                gateway_url=world.sandbox.url + "/gateway.do",
                app_id=SANDBOX_APP_ID,
                app_private_key=load_private_key(keys / "app_private.pem"),
                alipay_public_key=impostor.public_key(),
                notify_url="http://127.0.0.1:9/v1/callbacks/alipay",
            ),
            world.sandbox.http,
        )
    )
    changes = Changes()
    guarded = breaker(distrustful, changes)
    assert set(await query_unknown_trades(guarded, 10)) == {GatewayResponseInvalid}
    assert guarded.is_open and changes.states == [True]


async def eventually(check: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


def record_elsewhere(
    engine: Engine,
    gateway: Gateway,
    *,
    is_open: bool,
    reason: str,
    at: datetime | None = None,
) -> None:
    """A breaker's change as another worker records it (at `at`, default now)."""
    with transaction(engine) as session:
        breakers.record_breaker(
            session,
            gateway=gateway,
            is_open=is_open,
            reason=reason,
            now=datetime.now(UTC) if at is None else at,
        )


def recorded(engine: Engine) -> dict[str, tuple[bool, str | None]]:
    with transaction(engine) as session:
        return {row.gateway: (row.open, row.reason) for row in breakers.read_breakers(session)}


@dataclass
class Worker:
    breakers: GatewayBreakers
    watching: asyncio.Task[None]


@pytest.fixture
async def worker(world: World, engine: Engine) -> AsyncIterator[Worker]:
    """A worker's breakers over the real gateways, recording into the database, probing every
    50 ms while open."""
    with ThreadPoolExecutor(max_workers=2) as executor:
        guarded = GatewayBreakers(
            world.gateways, settings=world.settings, engine=engine, executor=executor
        )
        watching = asyncio.create_task(guarded.watch(every=0.05))
        yield Worker(guarded, watching)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


async def test_a_worker_records_the_opening_and_the_probe_that_closes_it(
    world: World, engine: Engine, worker: Worker
) -> None:
    await world.sandbox.faults(
        fail_methods={"wechatpay.native": 1000, "wechatpay.query": 1000}, fail_mode="http_503"
    )
    wechatpay = worker.breakers.gateways[Gateway.WECHATPAY]
    for _ in range(10):
        with pytest.raises(GatewayUnavailable):
            await wechatpay.create_qr_payment(
                out_trade_no=f"ord_{uuid.uuid4().hex[:24]}",
                amount_cents=990,
                subject="Reservation room-1: booking, 1 days",
                expires_at=datetime.now(UTC) + timedelta(minutes=15),
            )
    await eventually(lambda: Gateway.WECHATPAY in recorded(engine))
    is_open, reason = recorded(engine)[Gateway.WECHATPAY]
    assert is_open and reason is not None and "10 of its last 10 calls failed" in reason
    refused = await failing_gateway(engine, Gateway.WECHATPAY)
    assert refused is not None and refused.status_code == 503
    assert refused.detail.startswith(f"wechatpay is failing: {reason}; no order was created")
    assert await failing_gateway(engine, Gateway.ALIPAY) is None

    # Probes keep failing while the sandbox does; once it answers, one gets through.
    await asyncio.sleep(0.3)
    assert recorded(engine)[Gateway.WECHATPAY][0]
    (await world.sandbox.http.delete(f"{world.sandbox.url}/sandbox/faults")).raise_for_status()
    await eventually(lambda: not recorded(engine)[Gateway.WECHATPAY][0])
    assert recorded(engine) == {Gateway.WECHATPAY: (False, "a call got through")}


async def test_a_worker_probes_an_opening_another_worker_recorded(
    engine: Engine, worker: Worker
) -> None:
    # Recorded by a worker that has since gone: nobody else's calls would close it.
    record_elsewhere(engine, Gateway.ALIPAY, is_open=True, reason="10 of 10")
    await eventually(lambda: not recorded(engine)[Gateway.ALIPAY][0])
    assert not worker.breakers.gateways[Gateway.ALIPAY].is_open


async def test_a_closing_another_worker_recorded_is_taken_over_and_failing_calls_reopen_it(
    world: World, engine: Engine, worker: Worker
) -> None:
    # A closing recorded before this worker's opening is no news to it.
    record_elsewhere(
        engine,
        Gateway.ALIPAY,
        is_open=False,
        reason="an earlier recovery",
        at=datetime.now(UTC) - timedelta(minutes=1),
    )
    await world.sandbox.faults(fail_methods={"alipay.trade.query": 1000}, fail_mode="http_503")
    alipay = worker.breakers.gateways[Gateway.ALIPAY]
    assert set(await query_unknown_trades(alipay, 10)) == {GatewayUnavailable}
    await eventually(lambda: recorded(engine)[Gateway.ALIPAY][0])
    await asyncio.sleep(0.3)  # several turns of the worker's watch
    assert alipay.is_open

    # Another worker's call got through: it recorded the closing. This worker's probes still
    # fail, yet it goes by the closing, so that its own failures are reported anew.
    record_elsewhere(engine, Gateway.ALIPAY, is_open=False, reason="a call got through")
    await eventually(lambda: not alipay.is_open)
    assert recorded(engine)[Gateway.ALIPAY] == (False, "a call got through")
    assert set(await query_unknown_trades(alipay, 10)) == {GatewayUnavailable}
    await eventually(lambda: recorded(engine)[Gateway.ALIPAY][0])
    assert alipay.is_open


async def test_the_api_reads_open_breakers_at_most_once_per_second(engine: Engine) -> None:
    clock = Clock()
    view = OpenBreakers(engine, clock=clock)
    assert await view.reasons() == {}

    record_elsewhere(engine, Gateway.ALIPAY, is_open=True, reason="why")
    clock.now += 0.9
    assert await view.reasons() == {}  # still the cached read
    clock.now += 0.1
    assert await view.reasons() == {"alipay": "why"}
    record_elsewhere(engine, Gateway.ALIPAY, is_open=False, reason="why")
    clock.now += 1
    assert await view.reasons() == {}


async def test_readiness_names_each_offered_gateways_breaker(world: World, engine: Engine) -> None:
    database_url = engine.url.render_as_string(hide_password=False)
    # Nobody listens on Temporal's port: the process is alive, but not ready.
    settings = Settings(
        home=world.settings.home,
        database_url=database_url,
        sandbox_url=world.sandbox.url,
        temporal_address=f"127.0.0.1:{free_port()}",
    )
    changed_at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    record_elsewhere(engine, Gateway.WECHATPAY, is_open=True, reason="10 of 10", at=changed_at)
    port = free_port()
    async with serving(create_app(settings), port) as url, httpx.AsyncClient() as http:
        response = await http.get(f"{url}/readyz")
        assert (await http.get(f"{url}/healthz")).status_code == 200
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready" and body["database"] == "ok"
    assert body["temporal"] != "ok"
    assert body["gateways"] == {
        "alipay": {"breaker": "closed", "reason": None, "since": None},
        "wechatpay": {"breaker": "open", "reason": "10 of 10", "since": "2026-11-23T12:00:00Z"},
    }
