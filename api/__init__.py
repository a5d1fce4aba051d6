"""The HTTP API: orders for the business's app, callbacks for the gateway."""
