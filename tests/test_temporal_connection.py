"""Secured connections to Temporal, for real.

The Temporal dev server serves plain gRPC only, so a TLS-terminating proxy of ours stands in
front of it, as a secured cluster would: it presents a server certificate from a CA of the
test's own, demands a client certificate signed by that CA (mutual TLS), and keeps the bytes the
client sent once decrypted, where its `authorization` header can be found.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings, SettingsError
from core.temporal import connect_temporal
from paysaga.temporal_server import temporal_binary
from stack.ports import free_port

CLIENT_NAME = "paysaga-worker"
# HPACK's static Huffman code (RFC 7541, appendix B) for the characters our test API key is
# made of: gRPC clients send header values Huffman-coded, so this is how the key looks on the
# wire. Every one of these has a 5-bit code.
HUFFMAN_5_BIT = {char: format(code, "05b") for code, char in enumerate("012aceiost")}


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    client_cert_file: Path
    client_key_file: Path
    server: ssl.SSLContext


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *extensions: tuple[x509.ExtensionType, bool],
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_cert, issuer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, *items: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    chunks = [
        item.public_bytes(serialization.Encoding.PEM)
        if isinstance(item, x509.Certificate)
        else item.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for item in items
    ]
    path.write_bytes(b"".join(chunks))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue(
        "paysaga test CA",
        ca_key,
        None,
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
    )

    def leaf(name: str, usage: x509.ObjectIdentifier, *names: x509.GeneralName) -> Path:
        key = ec.generate_private_key(ec.SECP256R1())
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([usage]), False),
        ]
        if names:
            extensions.append((x509.SubjectAlternativeName(list(names)), False))
        cert = _issue(name, key, (ca, ca_key), *extensions)
        _pem(folder / f"{name}.key", key)
        return _pem(folder / f"{name}.pem", cert)

    server_cert = leaf(
        "temporal.test",
        ExtendedKeyUsageOID.SERVER_AUTH,
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    )
    client_cert = leaf(CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_file = _pem(folder / "ca.pem", ca)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    server.load_cert_chain(server_cert, folder / "temporal.test.key")
    server.verify_mode = ssl.CERT_REQUIRED
    server.set_alpn_protocols(["h2"])
    return Pki(ca_file, client_cert, folder / f"{CLIENT_NAME}.key", server)


@pytest.fixture(scope="module")
async def temporal() -> AsyncIterator[str]:
    """A plain Temporal dev server; yields its address."""
    port = free_port()
    environment = await WorkflowEnvironment.start_local(
        port=port, dev_server_existing_path=temporal_binary()
    )
    yield f"127.0.0.1:{port}"
    await environment.shutdown()


@dataclass
class TlsTerminator:
    """Who completed a TLS handshake (their certificate's common name), and what they sent."""

    client_names: list[str] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)

    def sent_in_huffman(self, text: str) -> bool:
        """Whether `text` went out as an HPACK Huffman-coded string, at any bit offset."""
        wanted = "".join(HUFFMAN_5_BIT[char] for char in text)
        return wanted in "".join(format(byte, "08b") for byte in self.received)


@asynccontextmanager
async def tls_terminator(
    context: ssl.SSLContext, upstream: str
) -> AsyncIterator[tuple[str, TlsTerminator]]:
    """TLS on a loopback port, plain TCP to `upstream`; yields the port's address."""
    seen = TlsTerminator()
    connections: list[asyncio.StreamWriter] = []
    host, _, port = upstream.rpartition(":")

    async def pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, keep: bytearray | None
    ) -> None:
        while data := await source.read(65536):
            if keep is not None:
                keep.extend(data)
            sink.write(data)
            await sink.drain()
        sink.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = dict(item[0] for item in writer.get_extra_info("peercert")["subject"])
        seen.client_names.append(subject["commonName"])
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        connections.extend([writer, upstream_writer])
        try:
            await asyncio.gather(
                pipe(reader, upstream_writer, seen.received), pipe(upstream_reader, writer, None)
            )
        except (ConnectionError, ssl.SSLError):
            pass  # the client went away: the test is over

    listen_port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", listen_port, ssl=context)
    try:
        yield f"127.0.0.1:{listen_port}", seen
    finally:
        server.close()
        for connection in connections:
            connection.close()
        await server.wait_closed()


@asynccontextmanager
async def first_bytes_recorder() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A port that keeps the first bytes each connection sends, then hangs up."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(24))
        writer.close()
        await writer.wait_closed()

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield f"127.0.0.1:{port}", received
    finally:
        server.close()
        await server.wait_closed()


def settings(address: str, **secured: Any) -> Settings:
    return Settings(temporal_address=address, **secured)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client makes the dev mode's payload encryption key under PAYSAGA_HOME: the test's own.
    monkeypatch.setenv("PAYSAGA_HOME", str(tmp_path))


@pytest.fixture
def mutual_tls(pki: Pki) -> dict[str, Path]:
    return {
        "temporal_tls_ca_file": pki.ca_file,
        "temporal_tls_cert_file": pki.client_cert_file,
        "temporal_tls_key_file": pki.client_key_file,
    }


async def test_mutual_tls_with_the_configured_ca_and_client_certificate(
    pki: Pki, temporal: str, mutual_tls: dict[str, Path]
) -> None:
    async with tls_terminator(pki.server, temporal) as (address, seen):
        client = await connect_temporal(settings(address, **mutual_tls))
        answer = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace="default")
        )
    assert answer.namespace_info.name == "default"
    assert seen.client_names and set(seen.client_names) == {CLIENT_NAME}


async def test_without_its_client_certificate_the_client_is_refused(
    pki: Pki, temporal: str
) -> None:
    async with tls_terminator(pki.server, temporal) as (address, seen):
        with pytest.raises(RuntimeError, match="[Cc]onnect"):
            await connect_temporal(settings(address, temporal_tls_ca_file=pki.ca_file))
    assert seen.client_names == []


async def test_without_the_ca_the_server_is_not_trusted(
    pki: Pki, temporal: str, mutual_tls: dict[str, Path]
) -> None:
    system_roots = {**mutual_tls, "temporal_tls_ca_file": None, "temporal_tls": True}
    async with tls_terminator(pki.server, temporal) as (address, seen):
        with pytest.raises(RuntimeError, match="[Cc]onnect"):
            await connect_temporal(settings(address, **system_roots))
    assert seen.client_names == []


async def test_the_api_key_is_sent_as_a_bearer_token(
    pki: Pki, temporal: str, mutual_tls: dict[str, Path]
) -> None:
    key = "".join(secrets.choice("012aceiost") for _ in range(40))
    async with tls_terminator(pki.server, temporal) as (address, seen):
        client = await connect_temporal(settings(address, temporal_api_key=key, **mutual_tls))
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace="default")
        )
    assert seen.sent_in_huffman(key) or f"Bearer {key}".encode() in seen.received
    assert not seen.sent_in_huffman(key[::-1])  # the search finds what was sent, not anything


async def test_an_api_key_alone_turns_tls_on(temporal: str) -> None:
    async with first_bytes_recorder() as (address, received):
        with pytest.raises(RuntimeError):
            await connect_temporal(settings(address))
        with pytest.raises(RuntimeError):
            await connect_temporal(settings(address, temporal_api_key="k" * 32))
    plain, secured = received[0], received[-1]
    assert plain.startswith(b"PRI * HTTP/2.0")  # HTTP/2's preface, in the clear
    # A TLS handshake record (22) opening with a ClientHello (1): the key is not sent in clear.
    assert secured[0] == 22 and secured[5] == 1


async def test_a_client_certificate_needs_its_key(pki: Pki) -> None:
    with pytest.raises(SettingsError, match="PAYSAGA_TEMPORAL_TLS_KEY_FILE"):
        await connect_temporal(
            settings("127.0.0.1:7233", temporal_tls_cert_file=pki.client_cert_file)
        )


async def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(SettingsError, match=f"PAYSAGA_TEMPORAL_TLS_CA_FILE: cannot read {missing}"):
        await connect_temporal(settings("127.0.0.1:7233", temporal_tls_ca_file=missing))
