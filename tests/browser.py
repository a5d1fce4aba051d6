"""A real browser for the tests that look at pages: Debian's Chromium (`make browser`) driven by
Playwright, whose own browser download is never used. Screenshots are kept under
`PAYSAGA_TEST_ARTIFACTS` (default `.artifacts` in the checkout)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

from tests.system import DATABASE_KIND

ARTIFACTS = Path(os.environ.get("PAYSAGA_TEST_ARTIFACTS", Path(__file__).parents[1] / ".artifacts"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    # Chromium refuses to run as root with its sandbox.
    "--no-sandbox",
    "--disable-gpu",
    # Without these Chromium calls Google's services at start, and a closed network refuses
    # those connections.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def screenshots(kind: str) -> Path:
    """Where the screenshots of `kind` on this run's database are kept."""
    return ARTIFACTS / kind / DATABASE_KIND


def emptied(directory: Path) -> None:
    """Ready for this run's screenshots: an earlier run's are gone."""
    for old in directory.glob("*.png"):
        old.unlink()
    directory.mkdir(parents=True, exist_ok=True)


async def screenshot(page: Page, directory: Path, name: str) -> None:
    path = directory / f"{name}.png"
    await page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")


@asynccontextmanager
async def chromium(directory: Path) -> AsyncIterator[Browser]:
    """Chromium, headless; on a failure, each page open then is kept as `failure-<n>.png`."""
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        except BaseException:
            pages = [page for context in browser.contexts for page in context.pages]
            for n, page in enumerate(pages):
                await screenshot(page, directory, f"failure-{n}")
            raise
        finally:
            await browser.close()
