"""The gateways paysaga is configured for, built from the settings: the one place that knows
which adapter serves which gateway name.

Adding a gateway is its adapter modules here in `gateways/`, its sandbox half, its settings in
`core.settings`, a name in `core.vocabulary.Gateway`, and one entry in each function below.
"""

from __future__ import annotations

import httpx

from core.settings import AlipaySettings, Settings, WechatPaySettings
from core.vocabulary import Gateway
from gateways.alipay import AlipayClient, AlipayConfig, AlipayGateway
from gateways.alipay_notification import AlipayNotifications
from gateways.alipay_signing import load_private_key, load_public_key
from gateways.gateway import NotificationVerifier, PaymentGateway
from gateways.wechatpay import WechatPayClient, WechatPayConfig
from gateways.wechatpay_notification import WechatPayNotifications
from gateways.wechatpay_signing import load_apiv3_key


def payment_gateways(settings: Settings, http: httpx.AsyncClient) -> dict[Gateway, PaymentGateway]:
    gateways: dict[Gateway, PaymentGateway] = {}
    if (alipay := settings.alipay) is not None:
        gateways[Gateway.ALIPAY] = AlipayGateway(
            AlipayClient(_alipay_config(settings, alipay), http)
        )
    if (wechatpay := settings.wechatpay) is not None:
        gateways[Gateway.WECHATPAY] = WechatPayClient(_wechatpay_config(settings, wechatpay), http)
    return gateways


def notification_verifiers(settings: Settings) -> dict[Gateway, NotificationVerifier]:
    verifiers: dict[Gateway, NotificationVerifier] = {}
    if (alipay := settings.alipay) is not None:
        verifiers[Gateway.ALIPAY] = AlipayNotifications(
            alipay_public_key=load_public_key(alipay.alipay_public_key_file),
            app_id=alipay.app_id,
            seller_id=alipay.seller_id,
        )
    if (wechatpay := settings.wechatpay) is not None:
        verifiers[Gateway.WECHATPAY] = WechatPayNotifications(
            _wechatpay_config(settings, wechatpay)
        )
    return verifiers


def _alipay_config(settings: Settings, alipay: AlipaySettings) -> AlipayConfig:
    return AlipayConfig(
        gateway_url=alipay.gateway_url,
        app_id=alipay.app_id,
        app_private_key=load_private_key(alipay.app_private_key_file),
        alipay_public_key=load_public_key(alipay.alipay_public_key_file),
        notify_url=settings.notify_url(Gateway.ALIPAY),
        seller_id=alipay.seller_id,
    )


def _wechatpay_config(settings: Settings, wechatpay: WechatPaySettings) -> WechatPayConfig:
    return WechatPayConfig(
        gateway_url=wechatpay.gateway_url,
        mchid=wechatpay.mchid,
        appid=wechatpay.appid,
        merchant_private_key=load_private_key(wechatpay.merchant_key_file),
        merchant_serial=wechatpay.merchant_serial,
        apiv3_key=load_apiv3_key(wechatpay.apiv3_key_file),
        wechatpay_public_keys={
            key_id: load_public_key(path) for key_id, path in wechatpay.public_key_files.items()
        },
        notify_url=settings.notify_url(Gateway.WECHATPAY),
    )
