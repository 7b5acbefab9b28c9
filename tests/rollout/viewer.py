"""The viewer page (viewer/, served by the edge) playing a match while something breaks its
stream: what it showed, read from its own counters (frames shown, frames lost, times it
resumed, the longest gap between two frames)."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.test_edge import HTTPS

VIEWER = f"https://{HTTPS[0]}:{HTTPS[1]}"

Figures = Callable[[], dict[str, Any]]


def viewer_context(browser: Any, certs: Path, **options: Any) -> Any:
    """A browser context that shows the client certificate to the page and its calls, as
    curl does, and accepts the development CA, which is not the browser's."""
    return browser.new_context(
        client_certificates=[{
            "origin": VIEWER,
            "certPath": str(certs / "client.crt"),
            "keyPath": str(certs / "client.key"),
        }],
        ignore_https_errors=True,
        **options,
    )  # fmt: skip


def page_figures(page: Any) -> dict[str, Any]:
    def number(element: str) -> int:
        text: str = page.locator(f"#{element}").inner_text()
        return int(text) if text.lstrip("-").isdigit() else -1

    return {
        "status": page.locator("#status").inner_text(),
        "shown": number("shown"),
        "frame": number("frame"),
        "lost": number("lost"),
        "resumed": number("resumed"),
        "gap_ms": number("gap"),
        "error": page.locator("#error").inner_text(),
    }


def open_page(page: Any, attempts: int = 3) -> None:
    """The page, loaded. Chromium aborts a navigation with ERR_NETWORK_CHANGED when the
    host's interfaces change under it, as they do each time a container starts (the test's
    clients on the compose network are containers): that is the host's, not the edge's, so
    the page is loaded again, a bounded number of times."""
    for attempt in range(attempts):
        try:
            page.goto(f"{VIEWER}/viewer/", wait_until="load")
            return
        except Exception as error:
            if "ERR_NETWORK_CHANGED" not in str(error) or attempt == attempts - 1:
                raise


def viewer_page(browser: Any, match: str, certs: Path) -> Callable[[], Figures]:
    """A callable that opens the page, plays `match` until its first frames show and
    returns another that waits for the match's end (at most 3 minutes) and gives the
    page's figures."""

    def start() -> Figures:
        context = viewer_context(browser, certs)
        page = context.new_page()
        open_page(page)
        page.locator("#match").fill(match)
        page.locator("#play").click()
        status = page.locator("#status")
        deadline = time.monotonic() + 30
        while page_figures(page)["shown"] < 30:
            assert time.monotonic() < deadline, f"the page shows no frames: {page_figures(page)}"
            time.sleep(0.2)

        def finish() -> dict[str, Any]:
            try:
                deadline = time.monotonic() + 180
                while status.inner_text() not in ("ended", "failed", "stopped"):
                    assert time.monotonic() < deadline, f"no end: {page_figures(page)}"
                    time.sleep(0.5)
                return page_figures(page)
            finally:
                context.close()

        return finish

    return start
