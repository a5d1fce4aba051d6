"""Alipay's OpenAPI answer envelope: result codes and signed `*_response` bodies."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.signatures import sign

Node = dict[str, str]

SUCCESS: Node = {"code": "10000", "msg": "Success"}
INVALID_PARAMETER = "ACQ.INVALID_PARAMETER"


class GatewayError(Exception):
    """A call Alipay answers with a failure code in the response node."""

    def __init__(self, code: str, msg: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(f"{code} {sub_code}: {sub_msg}")
        self.node: Node = {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}


def missing_argument(sub_code: str, sub_msg: str) -> GatewayError:
    return GatewayError("40001", "Missing Required Arguments", sub_code, sub_msg)


def invalid_argument(sub_code: str, sub_msg: str) -> GatewayError:
    return GatewayError("40002", "Invalid Arguments", sub_code, sub_msg)


def business_failed(sub_code: str, sub_msg: str) -> GatewayError:
    return GatewayError("40004", "Business Failed", sub_code, sub_msg)


def service_unavailable() -> GatewayError:
    return GatewayError("20000", "Service Currently Unavailable", "ACQ.SYSTEM_ERROR", "系统繁忙")


def signed_body(node_name: str, node: Node, private_key: rsa.RSAPrivateKey) -> str:
    """`{"<node_name>": {...}, "sign": "..."}` with the signature over the node's exact text.

    Clients verify the characters of the node as they stand in the body, so the node is
    serialised once and that very text is both signed and embedded.
    """
    text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
    signature = json.dumps(sign(text.encode("utf-8"), private_key))
    return f'{{{json.dumps(node_name)}:{text},"sign":{signature}}}'
