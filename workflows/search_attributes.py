"""Search attributes operators filter orders by in the Temporal Web UI.

Every workflow that concerns an order carries them, so that `OrderId="ord_…"` lists all of them
and `OrderStatus="refunded"` lists the refunded orders. Their values are ids, statuses and
gateway names only: search attributes are stored in clear, outside the payload codec's reach, so
no personal data and no amounts go here.
"""

from temporalio.common import SearchAttributeKey

ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
RESERVATION_ID = SearchAttributeKey.for_keyword("ReservationId")
ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
ORDER_KIND = SearchAttributeKey.for_keyword("OrderKind")
GATEWAY = SearchAttributeKey.for_keyword("Gateway")
FLAGGED = SearchAttributeKey.for_bool("Flagged")
ALL = (ORDER_ID, RESERVATION_ID, ORDER_STATUS, ORDER_KIND, GATEWAY, FLAGGED)
