"""Data access for signature nonces: a nonce seen twice within its freshness window is a
replay, whichever API process sees it."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

from sqlalchemy import tuple_
from sqlmodel import Session, col, delete, select

from store.models import SeenNonce
from store.rows import insert_ignoring_conflict

NONCE_CHARS = 64
# One sighting in PURGE_EVERY forgets expired nonces, at most PURGE_BATCH of them, so a
# sighting stays short: a purge costs a DELETE, as much as the sighting itself, and most find
# little to forget. That is more than one a sighting, so the table still shrinks to a window's
# worth.
PURGE_EVERY = 16
PURGE_BATCH = 100


def first_sighting(
    session: Session, *, scope: str, nonce: str, now: datetime, window: timedelta
) -> bool:
    """Remember `nonce` in `scope`; False if it was seen within `window` already (a replay)."""
    nonce = nonce.replace("\x00", "\ufffd")[:NONCE_CHARS]
    if purges(nonce):
        _forget_expired(session, scope=scope, now=now, window=window)
    return insert_ignoring_conflict(
        session,
        SeenNonce,
        # A longer nonce is cut (above): its head still tells replays apart, and it fits.
        {"scope": scope, "nonce": nonce, "seen_at": now},
        conflict_on=["scope", "nonce"],
    )


def purges(nonce: str) -> bool:
    """Whether this sighting forgets expired nonces: drawn from the nonce, the gateway's
    random, so that every process shares the work without counting anything."""
    return zlib.crc32(nonce.encode(errors="replace")) % PURGE_EVERY == 0


def _forget_expired(session: Session, *, scope: str, now: datetime, window: timedelta) -> None:
    # Nonces older than the window can no longer pass the timestamp check: forget them, so
    # the table holds only a window's worth of requests. Each sighting takes expired rows no
    # other holds: purging the same rows, concurrent callbacks of unrelated orders would wait
    # on each other's commits (PostgreSQL; SQLite has one writer anyway).
    expired = (
        select(SeenNonce.scope, SeenNonce.nonce)
        .where(col(SeenNonce.scope) == scope, col(SeenNonce.seen_at) < now - window)
        .limit(PURGE_BATCH)
        .with_for_update(skip_locked=True)
    )
    session.exec(
        delete(SeenNonce).where(tuple_(col(SeenNonce.scope), col(SeenNonce.nonce)).in_(expired))
    )
