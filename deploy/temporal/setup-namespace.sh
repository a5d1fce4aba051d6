#!/bin/sh
# paysaga's namespace and search attributes on the running Temporal cluster, run by
# temporalio/admin-tools with TEMPORAL_ADDRESS, NAMESPACE and RETENTION in its environment.
# Idempotent: an existing namespace is kept as it is, and registering a search attribute again
# with the same type succeeds (with another type it fails, as it should).
#
# The attributes are those of workflows/search_attributes.py (tests/test_deploy.py holds the two
# lists to each other); `paysaga temporal setup` registers the same ones from paysaga's image.
set -eu

: "${TEMPORAL_ADDRESS:?}" "${NAMESPACE:?}" "${RETENTION:?}"

# Retries for up to two minutes: the frontend answers a while before it serves, and a namespace
# just registered reaches every frontend's cache only after a few seconds.
retry() {
    attempt=1
    until "$@"; do
        if [ "$attempt" -ge 60 ]; then
            echo "gave up after $attempt attempts: $*" >&2
            return 1
        fi
        attempt=$((attempt + 1))
        sleep 2
    done
}

namespace_exists_or_is_made() {
    temporal operator namespace describe --address "$TEMPORAL_ADDRESS" --namespace "$NAMESPACE" \
        >/dev/null 2>&1 ||
        temporal operator namespace create --address "$TEMPORAL_ADDRESS" \
            --namespace "$NAMESPACE" --retention "$RETENTION"
}

retry temporal operator cluster health --address "$TEMPORAL_ADDRESS"
retry namespace_exists_or_is_made
retry temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" \
    --namespace "$NAMESPACE" --type Keyword \
    --name OrderId --name ReservationId --name OrderStatus --name OrderKind --name Gateway
retry temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" \
    --namespace "$NAMESPACE" --type Bool \
    --name Flagged
echo "namespace $NAMESPACE is ready, with paysaga's search attributes"
