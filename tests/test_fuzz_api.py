"""Schemathesis over the API's own OpenAPI schema, against the real app over HTTP: a real
database (PAYSAGA_TEST_DATABASE), a real Temporal dev server, a real worker and the sandbox.
Whatever the schema allows, and much it does not, is answered without a server error and as
the schema says."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.temporal import data_converter, payload_codec
from paysaga.temporal_server import FAST_POLLING, installed_binary
from stack.ports import free_port
from tests.databases import database_url
from tests.fuzzing import AUTHORIZATION, ODD_TEXT, api_settings, held_in_thread, report
from tests.rig import running_worker
from tests.servers import serving
from workflows import search_attributes

pytestmark = pytest.mark.slow
DATABASE_KIND = os.environ.get("PAYSAGA_TEST_DATABASE", "sqlite")
# Generated cases per operation, besides Schemathesis' own boundary cases (its coverage phase).
EXAMPLES = 150

# A callback is taken only once the gateway's signature over its body verifies, which no schema
# can state: a request the schema allows is refused as unsigned, 400, as documented. Schemathesis'
# default statuses for a request the schema allows, and that 400.
ACCEPTED_OR_UNSIGNED = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
# A webhook endpoint's URL is taken only if it is https, or in dev mode http to this machine,
# with a host and a port that is a number: a schema says only that it is a string. Those
# statuses, and that 422.
ACCEPTED_OR_NOT_AN_ENDPOINT = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
# A request the schema refuses may also be too large to read: 413, whatever it holds.
REFUSED_OR_TOO_LARGE = "400 401 403 404 405 406 409 413 415 422 428 429 5xx".split()
# The contract as the app states it; the `api` fixture checks that it is what the app serves.
CONTRACT = create_app(api_settings(Path("unused"), "sqlite://")).openapi()
schema = schemathesis.openapi.from_dict(
    CONTRACT,
    config=schemathesis.Config.from_dict(
        {
            "operations": [
                {
                    "include-path": "/v1/callbacks/{gateway}",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ACCEPTED_OR_UNSIGNED}
                    },
                },
                {
                    "include-path": "/v1/webhook-endpoints",
                    "include-method": "POST",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ACCEPTED_OR_NOT_AN_ENDPOINT
                        },
                        "negative_data_rejection": {"expected-statuses": REFUSED_OR_TOO_LARGE},
                    },
                },
            ]
        }
    ),
)
# Path parameters that name something that exists; the `api` fixture adds the orders it makes.
KNOWN: dict[str, tuple[str, ...]] = {
    "gateway": ("alipay", "wechatpay"),
    "reservation_id": ("fuzz-room-1", "fuzz-room-2"),
}


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """Besides what Schemathesis makes: names that exist, so that cases reach past 404. (Text
    the schema refuses, NUL and all, is `test_odd_path_parameters_are_refused_not_failed`'s.)"""
    if not path_parameters:
        return st.just(path_parameters)

    def replaced(name: str) -> st.SearchStrategy[dict[str, Any]]:
        existing = st.sampled_from(KNOWN[name]) if name in KNOWN else st.nothing()
        return existing.map(lambda value: {**path_parameters, name: value})

    return st.one_of(
        st.just(path_parameters), st.sampled_from(sorted(path_parameters)).flatmap(replaced)
    )


def own_idempotency_key(case: Case[Any]) -> None:
    """A key of its own for each case that sends one: generated keys repeat ("0"), and a key
    reused for another request is refused, rightly, with 422. Set on the case as it is sent,
    because schemathesis's coverage phase does not pass its cases through header hooks."""
    # Case-insensitive, as header names are.
    if case.headers is not None and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex


@asynccontextmanager
async def api_on_temporal(home: Path, database: str) -> AsyncIterator[str]:
    """The API served over HTTP, with a worker and the sandbox behind it on a Temporal dev
    server of its own; yields the API's base URL."""
    async with AsyncExitStack() as stack:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=installed_binary("temporal"),
            # The rig's worker reads what the API writes: with the payload key under `home`.
            data_converter=data_converter(payload_codec(api_settings(home, database))),
            search_attributes=search_attributes.ALL,
            dev_server_extra_args=[
                arg for value in FAST_POLLING for arg in ("--dynamic-config-value", value)
            ],
        )
        await stack.enter_async_context(env)
        # The rig's worker works on the database under test, not a SQLite file of its own.
        rig = await stack.enter_async_context(
            running_worker(env.client, home, f"fuzz-{uuid.uuid4()}", database_url=database)
        )
        settings = api_settings(
            home,
            database,
            temporal_address=env.client.service_client.config.target_host,
            task_queue=rig.task_queue,
            sandbox_url=rig.sandbox.url,
            payment_create_timeout_seconds=5,
        )
        yield await stack.enter_async_context(serving(create_app(settings), free_port()))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("fuzz-api")
    with (
        database_url(DATABASE_KIND, home) as database,
        held_in_thread(lambda: api_on_temporal(home, database)) as url,
        httpx.Client(base_url=url, headers=AUTHORIZATION, timeout=30) as http,
    ):
        assert http.get("/openapi.json").json() == CONTRACT
        pending = _created(http, {"reservation_id": "fuzz-room-1", "days": 1})
        cancelled = _created(
            http, {"reservation_id": "fuzz-room-2", "days": 2, "gateway": "wechatpay"}
        )
        assert http.post(f"/v1/orders/{cancelled}/cancel").status_code == 200
        KNOWN["order_id"] = (pending, cancelled)
        yield url


def _created(http: httpx.Client, body: dict[str, Any]) -> str:
    response = http.post("/v1/orders", json=body)
    assert response.status_code == 201, response.text
    order_id: str = response.json()["order_id"]
    return order_id


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture(scope="module")
def cases() -> Counter[str]:
    """Cases run so far in this module, by operation."""
    return Counter()


@pytest.fixture
def tally(cases: Counter[str], capsys: pytest.CaptureFixture[str]) -> Iterator[Counter[str]]:
    """The cases of one operation's test, said once it is over, with the module's total."""
    mine: Counter[str] = Counter()
    yield mine
    cases.update(mine)
    for label, count in mine.items():
        report(
            capsys,
            f"schemathesis {label} on {DATABASE_KIND}: {count} cases "
            f"(so far {sum(cases.values())} cases over {len(cases)} operations)",
        )


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # `tally` counts every case of an operation: that it outlives one case is the point.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_answers_every_request_without_a_server_error(
    case: Case[Any], api: str, session: requests.Session, tally: Counter[str]
) -> None:
    tally[case.operation.label] += 1
    own_idempotency_key(case)
    case.call_and_validate(base_url=api, session=session, headers=AUTHORIZATION, timeout=60)


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(
    path=st.sampled_from(["/v1/orders/{}", "/v1/orders/{}/cancel", "/v1/reservations/{}"]),
    name=ODD_TEXT,
)
def test_odd_path_parameters_are_refused_not_failed(
    api: str, session: requests.Session, path: str, name: str
) -> None:
    """NUL, control characters, over-long or non-ASCII ids: a 4xx that says why, never a 500
    (PostgreSQL refuses NUL in text: such an id must never reach the database)."""
    method = "POST" if path.endswith("cancel") else "GET"
    url = api + path.format(quote(name, safe=""))
    response = session.request(method, url, headers=AUTHORIZATION, timeout=30)
    assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
    assert response.json()["detail"]
