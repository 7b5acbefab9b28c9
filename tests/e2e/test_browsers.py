"""What a person does in a browser, in Debian's chromium driven by Playwright: grpcui (the
`tools` profile) lists the three services and calls GetMovieByID through the edge; the match
viewer page (served by the edge on 8443, over gRPC-Web with mutual TLS) plays the demo
match, shows its replica, lists the movies and orders a cheese. Screenshots are kept in
build/artifacts/.
"""

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e.test_compose import MARTIAN, compose
from tests.e2e.test_edge import CERTS
from tests.e2e.test_observability import ARTIFACTS, CHROMIUM
from tests.e2e.test_replicas import replicas
from tests.rollout.harness import at_scale
from tests.rollout.viewer import VIEWER, open_page, page_figures, viewer_context

pytestmark = pytest.mark.e2e

T = TypeVar("T")
GRPCUI = "http://127.0.0.1:8080"
SERVICES = {"cheesefarm.CheeseService", "Movie", "stream.Soccer"}
# This machine's network is closed: no background calls home, no QUIC.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


def eventually(probe: Callable[[], T | None], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        found = probe()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"not within {within:g} s: {what}"
        time.sleep(0.5)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"no browser at {CHROMIUM} (make browser, or set CHROMIUM)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def grpcui() -> Iterator[None]:
    compose("--profile", "tools", "up", "--detach", "--no-deps", "grpcui", timeout=300)
    yield
    compose("--profile", "tools", "rm", "--stop", "--force", "grpcui")


def test_grpcui_lists_the_services_and_calls_get_movie_by_id(browser: Any, grpcui: None) -> None:
    from playwright.sync_api import Error as PlaywrightError

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def loaded() -> bool | None:
        try:
            page.goto(GRPCUI, wait_until="networkidle", timeout=5000)
        except PlaywrightError:  # grpcui still starting: connection refused
            return None
        return True if page.locator("#grpc-service option").count() else None

    eventually(loaded, 60, "grpcui's page with its service list")
    listed = set(page.locator("#grpc-service option").all_inner_texts())
    assert listed >= SERVICES, listed
    page.select_option("#grpc-service", "Movie")
    page.select_option("#grpc-method", "GetMovieByID")
    # The field `id`: its presence ticked, then its value.
    field = page.locator("#grpc-request-form tr.message_field").first
    field.locator("td.toggle_presence input[type=checkbox]").check()
    field.locator("textarea").fill(MARTIAN)
    page.locator("#grpc-request-tab button.grpc-invoke").click()
    # The answer, as JSON in the response tab's text area, and the replica in its trailers.
    answer = page.locator("#grpc-response-data textarea")

    def answered() -> str | None:
        text: str = answer.input_value() if answer.count() else ""
        return text or None

    movie = json.loads(eventually(answered, 30, "grpcui's answer"))
    assert (movie["id"], movie["title"]) == (MARTIAN, "The Martian")
    assert page.locator("#grpc-response-trailers").get_by_text("served-by").count() == 1
    page.screenshot(path=str(ARTIFACTS / "grpcui-get-movie.png"), full_page=True)
    assert not errors, errors


def green_share(page: Any) -> float:
    """How much of the canvas is the pitch's grass (demo_video paints it (36..44, 112..128,
    36..44) in RGB, stripes and all)."""
    share: float = page.evaluate(
        """() => {
          const canvas = document.getElementById("pitch");
          const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
          let green = 0;
          for (let i = 0; i < data.length; i += 4) {
            if (data[i + 1] > data[i] + 40 && data[i + 1] > data[i + 2] + 40) green++;
          }
          return green / (data.length / 4);
        }"""
    )
    return share


def test_the_viewer_plays_the_match_lists_movies_and_orders_a_cheese(browser: Any) -> None:
    context = viewer_context(browser, CERTS, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{VIEWER}/", wait_until="load")
        assert page.url == f"{VIEWER}/viewer/"

        def frame() -> int | None:
            text = page.locator("#frame").inner_text()
            return int(text) if text.isdigit() else None

        first = eventually(frame, 30, "a first frame on the canvas")
        eventually(lambda: True if (frame() or 0) >= first + 30 else None, 30, "frames advancing")
        replica = page.locator("#replica").inner_text()
        assert replica in replicas("soccer"), replica
        assert int(page.locator("#fps").inner_text()) > 0
        assert green_share(page) > 0.5
        page.screenshot(path=str(ARTIFACTS / "viewer-playing.png"), full_page=True)

        movies = page.locator("#movies li")
        movies.first.wait_for(timeout=10_000)
        assert any("The Martian" in text for text in movies.all_inner_texts())
        page.locator("#order").click()
        cheese = page.locator("#cheese")
        eventually(lambda: cheese.inner_text() or None, 10, "the cheese ordered")
        assert cheese.inner_text().startswith("BRIE, aged ")
        assert page.locator("#error").inner_text() == ""
        # The demo match is 10 s: its stream ends by itself (closing the page mid-stream can
        # crash the driver's client-certificate proxy: a Node HTTP/2 assertion).
        status = page.locator("#status")
        eventually(lambda: True if status.inner_text() == "ended" else None, 30, "the match's end")
    finally:
        context.close()
    assert not errors, errors


def test_the_viewer_needs_a_client_certificate_too(browser: Any) -> None:
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        with pytest.raises(PlaywrightError, match="ERR_"):
            page.goto(f"{VIEWER}/viewer/", timeout=10_000)
    finally:
        context.close()


@pytest.fixture
def two_soccers() -> Iterator[None]:
    at_scale("soccer", 2)
    yield
    at_scale("soccer", 1)  # the other e2e modules expect one of each


def test_the_viewer_resumes_from_the_next_frame_when_its_stream_breaks(
    browser: Any, two_soccers: None
) -> None:
    """The page's replica stopped mid-match (it drains: the stream ends UNAVAILABLE through
    the edge): the page calls again from the next frame, on the other replica, and shows
    every frame of the demo once (viewer/src/main.js)."""
    context = viewer_context(browser, CERTS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        open_page(page)
        eventually(lambda: True if page_figures(page)["frame"] >= 60 else None, 30, "frame 60")
        first = page.locator("#replica").inner_text()
        containers = replicas("soccer")
        assert first in containers, (first, containers)
        subprocess.run(["docker", "stop", containers[first]], check=True, capture_output=True)
        status = page.locator("#status")
        eventually(lambda: True if status.inner_text() == "ended" else None, 60, "the end")
        figures = page_figures(page)
        second = page.locator("#replica").inner_text()
    finally:
        context.close()
    print(json.dumps({"viewer_resumed": figures}), file=sys.stderr)
    assert (figures["shown"], figures["frame"], figures["lost"]) == (300, 299, 0), figures
    assert figures["resumed"] >= 1, figures
    assert second != first, (first, second)
    assert not errors, errors
