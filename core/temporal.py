"""The clients every paysaga process builds from its settings: Temporal and the gateway."""

from __future__ import annotations

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from gateways.alipay import AlipayClient, AlipayConfig
from gateways.alipay_signing import load_private_key, load_public_key
from paysaga.settings import Settings


async def connect_temporal(settings: Settings, *, lazy: bool = False) -> Client:
    """Lazy for the API: it starts, and answers 503 with a reason, while Temporal is down."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
    )


def alipay_config(settings: Settings) -> AlipayConfig:
    alipay = settings.alipay
    return AlipayConfig(
        gateway_url=alipay.gateway_url,
        app_id=alipay.app_id,
        app_private_key=load_private_key(alipay.app_private_key_file),
        alipay_public_key=load_public_key(alipay.alipay_public_key_file),
        notify_url=settings.notify_url,
        seller_id=alipay.seller_id,
    )


def alipay_client(settings: Settings, http: httpx.AsyncClient) -> AlipayClient:
    return AlipayClient(alipay_config(settings), http)
