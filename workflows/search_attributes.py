"""Search attributes operators filter orders by in the Temporal Web UI.

Every workflow that concerns an order carries them, so that `OrderId="ord_…"` lists all of them
and `OrderStatus="refunded"` lists the refunded orders. Their values are ids, statuses and
gateway names only: search attributes are stored in clear, outside the payload codec's reach, so
no personal data and no amounts go here.
"""

from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
RESERVATION_ID = SearchAttributeKey.for_keyword("ReservationId")
ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
ORDER_KIND = SearchAttributeKey.for_keyword("OrderKind")
GATEWAY = SearchAttributeKey.for_keyword("Gateway")
FLAGGED = SearchAttributeKey.for_bool("Flagged")
ALL = (ORDER_ID, RESERVATION_ID, ORDER_STATUS, ORDER_KIND, GATEWAY, FLAGGED)


def of_order(
    order_id: str,
    *,
    gateway: str,
    reservation_id: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    flagged: bool = False,
) -> TypedSearchAttributes:
    """What a workflow that concerns an order starts with (what is known of it then)."""
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(ORDER_ID, order_id),
        SearchAttributePair(GATEWAY, gateway),
        SearchAttributePair(FLAGGED, flagged),
    ]
    if reservation_id is not None:
        pairs.append(SearchAttributePair(RESERVATION_ID, reservation_id))
    if kind is not None:
        pairs.append(SearchAttributePair(ORDER_KIND, kind))
    if status is not None:
        pairs.append(SearchAttributePair(ORDER_STATUS, status))
    return TypedSearchAttributes(pairs)
