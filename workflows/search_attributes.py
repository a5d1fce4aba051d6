"""Search attributes operators filter orders by in the Temporal Web UI (no personal data)."""

from temporalio.common import SearchAttributeKey

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
RESERVATION_ID = SearchAttributeKey.for_keyword("ReservationId")
ALL = (ORDER_STATUS, RESERVATION_ID)
