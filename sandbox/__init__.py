"""A stand-in for two payment gateways, spoken to over their real wire protocols: Alipay's
OpenAPI gateway and WeChat Pay's APIv3 (Native QR payments), in one process.

Our gateway clients talk to it unchanged, given its URL and keys. It imports nothing of ours:
the signing, encryption and formats of each protocol are written here again from the
gateway's side, so a mistake our client makes is not made in step by the sandbox too.

- `sandbox.alipay`: `POST /gateway.do`; QR codes at `/qr/{out_trade_no}`.
- `sandbox.wechatpay`: `/v3/pay/transactions/…`, `/v3/refund/domestic/refunds…`; code_urls at
  `/wxpay/bizpayurl?pr=…`.
- Shared by both: the buyer's JSON routes (`/sandbox/trades/{out_trade_no}/scan|pay|finish`),
  inspection (`/sandbox/trades`, `/sandbox/ledger`), one fault switch (`/sandbox/faults`, and
  what it fired: `/sandbox/faults/fired`) and the notifier that resends on each gateway's
  schedule.
"""

from sandbox.app import create_app, serve
from sandbox.settings import SandboxSettings

__all__ = ["SandboxSettings", "create_app", "serve"]
