"""A stand-in for Alipay's OpenAPI gateway, spoken to over the real wire protocol.

Our Alipay client talks to it unchanged, given its URL and keys. It never imports our
business code: only the signing primitives both sides of the wire share.
"""

from sandbox.app import create_app, serve
from sandbox.settings import SandboxSettings

__all__ = ["SandboxSettings", "create_app", "serve"]
