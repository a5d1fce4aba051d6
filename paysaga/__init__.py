"""paysaga: payment orders for booking businesses, each one a Temporal saga."""
