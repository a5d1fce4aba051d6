"""What the fuzz tests share: the API's settings under fuzz, the odd text they send, a stack held
on a thread of its own for tests that call it synchronously, and how each run says how many
cases it made."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import strategies as st

from core.settings import Settings

T = TypeVar("T")

API_KEY = "psk_fuzz_" + "0123456789abcdef" * 3
AUTHORIZATION = {"Authorization": f"Bearer {API_KEY}"}


def texts(*, min_size: int = 0, max_size: int | None = None) -> st.SearchStrategy[str]:
    """Any text UTF-8 can carry: no lone surrogates, which no request can hold."""
    return st.text(st.characters(codec="utf-8"), min_size=min_size, max_size=max_size)


# Text the generators of Schemathesis and Hypothesis seldom make, and databases and parsers
# trip on: NUL (which PostgreSQL's text cannot hold), control characters, over-long and
# non-ASCII strings.
ODD_TEXT = st.one_of(
    st.builds("{}\x00{}".format, texts(max_size=20), texts(max_size=20)),
    st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=20),
    # Around the columns' lengths (16, 32, 64, 128, 500), and far past them.
    st.integers(min_value=15, max_value=520).map("x".__mul__),
    st.integers(min_value=521, max_value=8000).map("x".__mul__),
    st.text(st.characters(min_codepoint=0x80, codec="utf-8"), min_size=1, max_size=40),
)
# However fast the fuzzer knocks, it must meet the answers under test, never the rate limit.
UNLIMITED = 1_000_000_000


def api_settings(home: Path, database_url: str, **settings: Any) -> Settings:
    return Settings(
        home=home,
        database_url=database_url,
        api_keys=API_KEY,
        rate_limit_requests=UNLIMITED,
        **settings,
    )


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Say how many cases a run made, on the terminal, whether or not pytest captures output."""
    with capsys.disabled():
        print(f"\n[fuzz] {line}")


@contextmanager
def held_in_thread(enter: Callable[[], AbstractAsyncContextManager[T]]) -> Iterator[T]:
    """Enter an async context on an event loop of its own thread, for as long as the `with`.

    Schemathesis calls the API synchronously, from the test's thread: the servers it calls
    must keep serving while that thread waits for their answers.
    """
    entered: Future[tuple[asyncio.AbstractEventLoop, asyncio.Event, T]] = Future()
    ended: Future[None] = Future()

    async def hold() -> None:
        stop = asyncio.Event()
        try:
            async with enter() as value:
                entered.set_result((asyncio.get_running_loop(), stop, value))
                await stop.wait()
        except BaseException as error:
            if entered.done():
                raise
            entered.set_exception(error)

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as error:
            ended.set_exception(error)
        else:
            ended.set_result(None)

    thread = threading.Thread(target=run, name="fuzzed-stack", daemon=True)
    thread.start()
    try:
        loop, stop, value = entered.result()
    except BaseException:
        thread.join()
        raise
    try:
        yield value
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()
    ended.result()
