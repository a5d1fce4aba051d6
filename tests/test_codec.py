"""The payload codec: what Temporal keeps of an order is ciphertext, and keys rotate.

The saga runs for real (Temporal's time-skipping test server, our worker, the sandbox over
HTTP); its history is then read as anyone with access to Temporal would read it, without the
key, and as the real `temporal` CLI reads it through our codec server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import History, HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from api.app import create_app
from api.timeline import LOCAL_ACTIVITY_MARKER
from core.codec import ENCODING, KEY_BYTES, CodecError, EncryptionCodec
from core.contracts import OrderRequest
from core.settings import Settings
from core.temporal import data_converter, payload_codec
from core.vocabulary import Gateway, OrderStatus, order_workflow_id
from paysaga.temporal_server import installed_binary, register_search_attributes
from paysaga.worker import WORKFLOWS
from stack.ports import free_port
from store import orders
from store.db import transaction
from tests.history_paths import payloads_in
from tests.rig import running_worker
from tests.servers import serving
from tests.test_replay import recorded
from workflows.order import OrderWorkflow

KEY_A, KEY_B = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)
# Digits no id, pid or timestamp of a history would hold by chance, unlike "2970".
AMOUNT_CENTS = 987654321
ADMIN_KEY = "pak_test_" + "0123456789abcdef" * 2
# Temporal's own index, outside any codec's reach by design (ids and statuses only), and
# headers (trace context): not our payloads.
NOT_OURS = frozenset({"search_attributes", "header"})
# The SDK's own record of a `workflow.patched` call, written in clear: the patch's id alone.
PATCH_MARKER = "core_patch"


def order_payload(amount_cents: int = 2970) -> Payload:
    request = OrderRequest(
        order_id="ord_codec",
        reservation_id="room-42",
        days=3,
        amount_cents=amount_cents,
        currency="CNY",
        gateway=Gateway.WECHATPAY,
        request_fingerprint="f",
        payment_timeout_seconds=900,
        payment_create_timeout_seconds=20,
    )
    return pydantic_data_converter.payload_converter.to_payloads([request])[0]


async def test_a_payload_is_encrypted_under_its_key_id_and_decrypted_again() -> None:
    codec = EncryptionCodec({"a": KEY_A}, encrypt_with="a")
    plain = order_payload()
    (sealed,) = await codec.encode([plain])
    assert dict(sealed.metadata) == {"encoding": ENCODING, "encryption-key-id": b"a"}
    assert b"room-42" not in sealed.data and b"2970" not in sealed.data
    assert b"json/plain" not in sealed.SerializeToString()  # the metadata is sealed too
    assert await codec.decode([sealed]) == [plain]
    # A fresh nonce each time: the same payload never looks the same twice.
    (again,) = await codec.encode([plain])
    assert again.data[:12] != sealed.data[:12] and again.data != sealed.data


async def test_keys_rotate_without_breaking_old_histories() -> None:
    before = EncryptionCodec({"a": KEY_A}, encrypt_with="a")
    history = await before.encode([order_payload(2970), order_payload(990)])
    rotated = EncryptionCodec({"a": KEY_A, "b": KEY_B}, encrypt_with="b")
    assert await rotated.decode(history) == [order_payload(2970), order_payload(990)]
    (new,) = await rotated.encode([order_payload()])
    assert new.metadata["encryption-key-id"] == b"b"
    assert await rotated.decode([new]) == [order_payload()]
    # A process that does not have the new key yet says so; it never reads it as something.
    with pytest.raises(CodecError, match="encrypted with key 'b', which is not among"):
        await before.decode([new])


async def test_an_altered_payload_or_a_wrong_key_is_an_error() -> None:
    codec = EncryptionCodec({"a": KEY_A, "b": KEY_B}, encrypt_with="a")
    (sealed,) = await codec.encode([order_payload()])
    flipped = Payload()
    flipped.CopyFrom(sealed)
    flipped.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    renamed = Payload()
    renamed.CopyFrom(sealed)
    renamed.metadata["encryption-key-id"] = b"b"
    for altered in (flipped, renamed):
        with pytest.raises(CodecError, match="fails its authentication"):
            await codec.decode([altered])
    impostor = EncryptionCodec({"a": KEY_B}, encrypt_with="a")
    with pytest.raises(CodecError, match="fails its authentication"):
        await impostor.decode([sealed])
    with pytest.raises(CodecError, match="not among the known keys"):
        await EncryptionCodec({"c": KEY_A}, encrypt_with="c").decode([sealed])
    with pytest.raises(CodecError, match="is 16 bytes, not 32"):
        EncryptionCodec({"a": KEY_A[:16]}, encrypt_with="a")
    with pytest.raises(CodecError, match="no key 'z' to encrypt with"):
        EncryptionCodec({"a": KEY_A}, encrypt_with="z")


async def test_payloads_written_before_the_codec_are_read_as_they_are() -> None:
    codec = EncryptionCodec({"a": KEY_A}, encrypt_with="a")
    plain = order_payload()
    (decoded,) = await codec.decode([plain])
    assert decoded is plain


async def test_histories_recorded_before_the_codec_still_replay() -> None:
    converter = data_converter(EncryptionCodec({"a": KEY_A}, encrypt_with="a"))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=converter)
    results = await replayer.replay_workflows(recorded(), raise_on_replay_failure=False)
    assert results.replay_failures == {}


async def test_a_failures_message_is_encrypted_too() -> None:
    converter = data_converter(EncryptionCodec({"a": KEY_A}, encrypt_with="a"))
    failure = Failure()
    await converter.encode_failure(ApplicationError("room-42 owes 29.70"), failure)
    assert "room-42" not in failure.message and b"room-42" not in failure.SerializeToString()
    assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.message == "room-42 owes 29.70"


# --- an order's history, as Temporal keeps it -----------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("codec")


@pytest.fixture(scope="module")
async def env(home: Path) -> AsyncIterator[WorkflowEnvironment]:
    """The test server, reached as our processes reach Temporal: through the dev mode's key."""
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed_binary("temporal-test-server"),
        data_converter=data_converter(payload_codec(Settings(home=home))),
    )
    await register_search_attributes(environment.client)
    yield environment
    await environment.shutdown()


async def expired_order(env: WorkflowEnvironment, home: Path) -> tuple[str, str, str]:
    """An order run to its end by our worker: its workflow id, reservation and QR code."""
    order_id = f"ord_{uuid.uuid4().hex[:24]}"
    reservation = f"suite-{uuid.uuid4().hex[:12]}"
    async with running_worker(env.client, home, f"codec-{uuid.uuid4()}") as rig:
        handle = await env.client.start_workflow(
            OrderWorkflow.run,
            OrderRequest(
                order_id=order_id,
                reservation_id=reservation,
                days=3,
                amount_cents=AMOUNT_CENTS,
                currency="CNY",
                gateway=Gateway.ALIPAY,
                request_fingerprint="f",
                payment_timeout_seconds=900,
                payment_create_timeout_seconds=20,
            ),
            id=order_workflow_id(order_id),
            task_queue=rig.task_queue,
            # What an operator reads in the UI's list: the SDK encodes it as a payload.
            static_summary=f"{reservation}: {AMOUNT_CENTS} cents",
        )
        assert (await handle.result()).status == OrderStatus.EXPIRED
        with transaction(rig.engine) as session:
            order = orders.get_order(session, order_id)
            assert order is not None and order.qr_code is not None
            return handle.id, reservation, order.qr_code


async def test_temporal_keeps_no_amount_reservation_or_qr_code_in_clear(
    env: WorkflowEnvironment, home: Path
) -> None:
    workflow_id, reservation, qr_code = await expired_order(env, home)
    # Anyone who can read Temporal, but has not the key.
    keyless = Client(env.client.service_client, data_converter=pydantic_data_converter)
    history = await keyless.get_workflow_handle(workflow_id).fetch_history()
    kept = History(events=history.events)
    for event in kept.events:
        kind = event.WhichOneof("attributes")
        assert kind is not None
        attributes = getattr(event, kind)
        for field in NOT_OURS & set(attributes.DESCRIPTOR.fields_by_name):
            attributes.ClearField(field)
    raw, text = kept.SerializeToString(), json_format.MessageToJson(kept)
    for secret in (str(AMOUNT_CENTS), "9876543.21", reservation, qr_code):
        assert secret.encode() not in raw and secret not in text
    ours = [payload for event in history.events for payload in _ours(event)]
    assert len(ours) >= 10
    assert {payload.metadata["encoding"] for payload in ours} == {ENCODING}

    # With the key, the order's input is the order.
    started = history.events[0].workflow_execution_started_event_attributes
    (request,) = await env.client.data_converter.decode(started.input.payloads, [OrderRequest])
    assert request.amount_cents == AMOUNT_CENTS and request.reservation_id == reservation


def _ours(event: HistoryEvent) -> Iterator[Payload]:
    """The event's payloads that the saga wrote."""
    marker = event.marker_recorded_event_attributes
    if marker.marker_name == PATCH_MARKER:
        return
    if marker.marker_name == LOCAL_ACTIVITY_MARKER:
        # The SDK's own note in clear (the activity's type, attempt and times), and the
        # activity's result, which is ours.
        assert set(marker.details) == {"data", "result"}
        yield from marker.details["result"].payloads
        return
    yield from payloads_in(event, skipping=NOT_OURS)


async def test_the_temporal_cli_reads_the_history_through_the_codec_server(
    env: WorkflowEnvironment, home: Path
) -> None:
    workflow_id, reservation, qr_code = await expired_order(env, home)
    address = env.client.service_client.config.target_host
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'cli.db'}",
        temporal_address=address,
        admin_keys=ADMIN_KEY,
    )
    async with serving(create_app(settings), free_port()) as api:

        def shown(*codec: str) -> str:
            command = [installed_binary("temporal"), "workflow", "show", "-w", workflow_id]
            command += ["--address", address, "--output", "json", *codec]
            return subprocess.run(
                command, capture_output=True, text=True, check=True, timeout=60
            ).stdout

        # On a thread: the codec server answers it from this event loop.
        through_codec = await asyncio.to_thread(
            shown, "--codec-endpoint", f"{api}/codec", "--codec-auth", f"Bearer {ADMIN_KEY}"
        )
        without = await asyncio.to_thread(shown)
    encrypted = shown_payloads(without)
    assert not any(qr_code.encode() in payload["data"] for payload in encrypted)
    decoded = shown_payloads(through_codec)
    assert len(decoded) == len(encrypted)
    assert ENCODING not in {payload["metadata"]["encoding"] for payload in decoded}
    assert any(qr_code.encode() in payload["data"] for payload in decoded)
    started = json.loads(through_codec)["events"][0]["workflowExecutionStartedEventAttributes"]
    (request,) = shown_payloads(json.dumps(started["input"]))
    assert json.loads(request["data"])["amount_cents"] == AMOUNT_CENTS


def shown_payloads(history_json: str) -> list[dict[str, Any]]:
    """The payloads of a history as the CLI prints it (proto3 JSON), their bytes decoded."""
    found: list[dict[str, Any]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("metadata"), dict) and "encoding" in node["metadata"]:
                found.append(
                    {
                        "metadata": {
                            name: base64.b64decode(value)
                            for name, value in node["metadata"].items()
                        },
                        "data": base64.b64decode(node.get("data", "")),
                    }
                )
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return found
