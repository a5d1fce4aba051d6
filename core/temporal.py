"""The Temporal client every paysaga process builds from its settings, and how its failures
read.

Its payloads are pydantic models as JSON, encrypted by the payload codec (core.codec) with the
keys of PAYSAGA_CODEC_KEYS, or the dev mode's own key, made on first use by whichever process
comes first; failures' messages and stack traces are moved into the encrypted part too, since
they may quote an amount or a reservation.

A secured cluster or Temporal Cloud: TLS once `PAYSAGA_TEMPORAL_TLS` is true or any of its files
is given (a CA to trust instead of the system's, a client certificate and key for mutual TLS),
and `PAYSAGA_TEMPORAL_API_KEY` sent as `Authorization: Bearer …`. An API key alone turns TLS on
too (the SDK's rule, and Temporal Cloud's): the key must never travel in the clear.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from core.codec import EncryptionCodec, ensure_key
from core.settings import Settings, SettingsError


async def connect_temporal(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """Lazy for the API: it starts, and answers 503 with a reason, while Temporal is down. A
    worker passes the runtime that exports its metrics: its workers take the client's."""
    api_key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(payload_codec(settings)),
        tls=temporal_tls(settings),
        api_key=None if api_key is None else api_key.get_secret_value(),
        lazy=lazy,
        runtime=runtime,
    )


def data_converter(codec: EncryptionCodec) -> DataConverter:
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def payload_codec(settings: Settings) -> EncryptionCodec:
    """The codec of PAYSAGA_CODEC_KEYS, or in dev mode, when unset, of the dev key (made now if
    it is not there yet); SettingsError for a key file it cannot use."""
    if settings.codec_keys is None:
        for path in settings.codec_key_files.values():
            ensure_key(path)
    return EncryptionCodec(
        settings.read_codec_keys(), encrypt_with=settings.codec_encrypting_key_id
    )


def temporal_tls(settings: Settings) -> TLSConfig | None:
    """The TLS to speak to Temporal; None leaves it to the SDK (on only with an API key)."""
    cert_file, key_file = settings.temporal_tls_cert_file, settings.temporal_tls_key_file
    if (cert_file is None) != (key_file is None):
        raise SettingsError(
            "mutual TLS with Temporal needs both PAYSAGA_TEMPORAL_TLS_CERT_FILE and "
            "PAYSAGA_TEMPORAL_TLS_KEY_FILE, or neither"
        )
    ca_file = settings.temporal_tls_ca_file
    if not settings.temporal_tls and ca_file is None and cert_file is None:
        return None
    return TLSConfig(
        server_root_ca_cert=_read("PAYSAGA_TEMPORAL_TLS_CA_FILE", ca_file),
        client_cert=_read("PAYSAGA_TEMPORAL_TLS_CERT_FILE", cert_file),
        client_private_key=_read("PAYSAGA_TEMPORAL_TLS_KEY_FILE", key_file),
    )


def _read(setting: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as failure:
        raise SettingsError(f"{setting}: cannot read {path}: {failure.strerror}") from failure


def failure_reason(failure: ActivityError | ApplicationError | WorkflowUpdateFailedError) -> str:
    """What went wrong, in the words of the step that failed (its ApplicationError's message)
    rather than Temporal's wrapper around it (a local activity's own error comes unwrapped)."""
    if isinstance(failure, ApplicationError):
        return failure.message
    cause = failure.cause
    return cause.message if isinstance(cause, FailureError) else str(failure)
