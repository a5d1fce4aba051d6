"""What the API reads and writes. Amounts leave it as strings with two decimals ("29.70")."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from core.vocabulary import Gateway, PaymentTiming

# 0.01 to 999999999.99, two decimals at most.
POSITIVE_AMOUNT = r"^(0\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,8}(\.[0-9]{1,2})?)$"
# Ids — ours, and the gateways' trade numbers — are plain and short: anything else names nothing
# of ours, and must not reach the database (PostgreSQL refuses NUL in text; id columns hold 64).
PLAIN_ID = r"^[A-Za-z0-9_-]+$"
ID_CHARS = 64
# An absolute http(s) URL: a host name (or IPv4 address), a port, then printable ASCII (no
# credentials, no spaces, nothing PostgreSQL would refuse to store).
WEB_URL = r"^https?://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?([/?#][!-~]*)?$"
ReservationId = Annotated[str, Field(min_length=1, max_length=ID_CHARS, pattern=PLAIN_ID)]


def is_plain_id(text: str) -> bool:
    return 0 < len(text) <= ID_CHARS and re.fullmatch(PLAIN_ID, text) is not None


def _whole_number(value: object) -> object:
    # JSON does not tell 3 from 3.0, so neither do we; strings and booleans stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reservation_id: ReservationId
    days: Annotated[int, Field(ge=1, le=365, strict=True), BeforeValidator(_whole_number)]
    # Left out: the service's default gateway (PAYSAGA_DEFAULT_GATEWAY).
    gateway: Gateway | None = None
    # `deferred`: a quote now, the trade and its QR code only when the buyer presses Pay on the
    # checkout page (`POST /v1/orders/{id}/payment`).
    payment: PaymentTiming = PaymentTiming.IMMEDIATE
    # Where the checkout page sends the buyer once paid: an absolute https URL (http too in
    # dev mode).
    return_url: Annotated[str | None, Field(max_length=2000, pattern=WEB_URL)] = None
    expected_amount: Annotated[
        Decimal | None,
        Field(default=None, gt=0, max_digits=11, decimal_places=2),
        # What the field takes, said exactly: an amount as a string of digits with at most two
        # decimals ("29.70"), or a whole number of yuan. (A JSON number with decimals is taken
        # too, but binary floats cannot state "two decimals at most" in a schema.)
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": 999999999},
                    {"type": "string", "pattern": POSITIVE_AMOUNT},
                    {"type": "null"},
                ]
            }
        ),
    ] = None


class Problem(BaseModel):
    """Every error answer: a sentence a developer can act on."""

    detail: str


class PriceChanged(Problem):
    amount: str
    currency: str
