"""The `observability` profile on the running stack: Prometheus scrapes every replica and
evaluates the rules, stopping a service fires its alert, Jaeger holds a trace that goes from
the client into a server, and the console page shows it all in a real browser.

Needs the stack started with COMPOSE_PROFILES=observability (make e2e does), so that
Prometheus and Jaeger run and the servers and the client export traces to Jaeger. They are
reached on their published ports (PROMETHEUS_PORT, JAEGER_PORT; 9090 and 16686 by default),
the browser is Debian's chromium (CHROMIUM, default /usr/bin/chromium; make e2e installs it
where it can). The page's screenshot is kept in build/artifacts/.
"""

import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import ROOT
from tests.e2e.test_compose import compose, wait_healthy
from tests.e2e.test_replicas import popen, replicas

pytestmark = pytest.mark.e2e

PROMETHEUS = f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"
JAEGER = f"http://127.0.0.1:{os.environ.get('JAEGER_PORT', '16686')}"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "artifacts"

SERVICES = ("cheese", "movie", "soccer")
# Every business method (docs/contracts.md), as gRPC's metrics name them.
METHODS = {
    "cheese": {"cheesefarm.CheeseService/Order"},
    "movie": {
        "Movie/GetMovieByID",
        "Movie/GetListMovies",
        "Movie/GetMovieByTitle",
        "Movie/GetMoviesByDirector",
    },
    "soccer": {"stream.Soccer/Watch"},
}
RULE_GROUPS = {"grpc", "soccer", "availability", "calls", "soccer-alerts"}
ALERTS = {
    "GrpcServiceDown",
    "GrpcReplicaDown",
    "GrpcErrorRatioHigh",
    "GrpcLatencyP99High",
    "SoccerViewersSkippingFrames",
}
SCALED = 2

T = TypeVar("T")


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def prometheus(path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    answer = get_json(f"{PROMETHEUS}/api/v1/{path}{query}")
    assert answer["status"] == "success", answer
    return answer["data"]


def query(expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = prometheus("query", query=expr)["result"]
    return result


def eventually(probe: Callable[[], T | None], within: float, what: str, step: float = 1) -> T:
    """Polls `probe` until it returns something other than None (or False), then returns
    that; fails naming `what` and the last answer after `within` seconds."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            answer = probe()
        except (OSError, AssertionError) as error:  # not up yet, or not answering yet
            last = error
        else:
            if answer is not None and answer is not False:
                return answer
            last = answer
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within:g} s; last: {last!r}")
        time.sleep(step)


def in_client(*args: str) -> list[str]:
    """`docker compose` arguments that run the client container on the running services
    (--no-deps: compose keeps their scale)."""
    return ["run", "--rm", "--no-deps", "client", *args]


def client(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return compose(*in_client(*args), timeout=timeout)


def addresses(service: str) -> set[str]:
    """host:8081 of every running replica, as Prometheus' DNS discovery names its targets."""
    found = set()
    for container in replicas(service).values():
        ips = subprocess.run(
            ["docker", "inspect", "--format",
             "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert len(ips) == 1, f"{service} {container} on networks {ips}"
        found.add(f"{ips[0]}:8081")
    return found


def firing(alertname: str) -> list[dict[str, str]]:
    alerts = prometheus("alerts")["alerts"]
    return [
        alert["labels"]
        for alert in alerts
        if alert["labels"]["alertname"] == alertname and alert["state"] == "firing"
    ]


@pytest.fixture(scope="module", autouse=True)
def profile_running() -> None:
    """The profile's services run and answer; anything else is a setup mistake, said plainly."""
    running = set(compose("ps", "--services", "--status=running").stdout.split())
    missing = {"prometheus", "jaeger"} - running
    assert not missing, (
        f"{sorted(missing)} not running: start the stack with COMPOSE_PROFILES=observability "
        "(make e2e, or scripts/stack-test.sh with it set)"
    )
    eventually(lambda: get_json(f"{PROMETHEUS}/api/v1/status/buildinfo"), 60, "Prometheus answers")
    eventually(lambda: get_json(f"{JAEGER}/api/services"), 60, "Jaeger's query API answers")


def test_prometheus_loads_the_rules_and_alerts() -> None:
    groups = prometheus("rules")["groups"]
    assert {group["name"] for group in groups} == RULE_GROUPS
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules if rule["type"] == "alerting"} == ALERTS
    # Every rule evaluates (a typo in a metric name evaluates fine; a broken expression not).
    assert all(rule["health"] != "err" for rule in rules), [
        (rule["name"], rule.get("lastError")) for rule in rules if rule["health"] == "err"
    ]


def test_every_replica_is_a_target_and_answers() -> None:
    """One job per service, one target per replica (Docker's DNS), each scraped successfully:
    its /metrics on the maintenance port answers in Prometheus' text format."""

    def all_up() -> dict[str, set[str]]:
        targets = prometheus("targets", state="active")["activeTargets"]
        up = {
            job: {
                t["labels"]["instance"]
                for t in targets
                if t["labels"]["job"] == job and t["health"] == "up"
            }
            for job in SERVICES
        }
        running = {job: addresses(job) for job in SERVICES}
        assert up == running, (
            f"up: {up}; replicas: {running}; errors: "
            f"{ {t['scrapeUrl']: t['lastError'] for t in targets if t['lastError']} }"
        )
        return up

    eventually(all_up, 60, "every replica of every service scraped and up")


@pytest.fixture
def scaled() -> Iterator[dict[str, set[str]]]:
    flags = [f"--scale={service}={SCALED}" for service in SERVICES]
    compose("up", "--detach", "--wait", *flags, timeout=300)
    try:
        found = {service: addresses(service) for service in SERVICES}
        assert all(len(found[service]) == SCALED for service in SERVICES), found
        yield found
    finally:
        compose("up", "--detach", "--wait", *(f"--scale={s}=1" for s in SERVICES), timeout=300)


def test_call_durations_of_every_method_of_every_replica(scaled: dict[str, set[str]]) -> None:
    """After traffic, the call-duration histogram of every method exists for every replica,
    with its status, and the recording rules the page and alerts read are computed from it.
    The client balances each call over the replicas (round_robin), so smoke runs (every RPC of
    every service) go on until every replica has served every method."""
    wanted = {
        (job, instance, method)
        for job in SERVICES
        for instance in scaled[job]
        for method in METHODS[job]
    }

    def seen(expr: str) -> set[tuple[str, str, str]]:
        return {
            (s["metric"]["job"], s["metric"]["instance"], s["metric"]["grpc_method"])
            for s in query(expr)
        }

    def covered() -> bool:
        missing = wanted - seen(
            "sum by (job, instance, grpc_method) (grpc_server_call_duration_seconds_count)"
        )
        if missing:
            client("smoke")
        assert not missing, f"no series yet for {sorted(missing)}"
        return True

    eventually(covered, 240, "call durations of every method of every replica", step=0)
    # Each series carries its status, and every smoke call succeeded.
    statuses = {
        s["metric"]["grpc_status"]
        for s in query(
            'grpc_server_call_duration_seconds_bucket{job=~"cheese|movie|soccer",le="+Inf"}'
        )
        if s["metric"]["grpc_method"] in set().union(*METHODS.values())
    }
    assert "OK" in statuses, statuses
    # The recording rules see the same, once a rate has two scrapes to go on.
    eventually(
        lambda: wanted <= seen("instance_grpc_method:grpc_server_calls:rate1m") or None,
        60, "per replica and method call rates (recording rule)",
    )  # fmt: skip


def test_stopping_a_service_fires_its_down_alert() -> None:
    # Up to begin with: the alert must be caused by the stop, not be there already.
    eventually(
        lambda: not any(labels["job"] == "cheese" for labels in firing("GrpcServiceDown")),
        60, "cheese not reported down before the stop",
    )  # fmt: skip
    compose("stop", "cheese")
    try:
        labels = eventually(
            lambda: next((a for a in firing("GrpcServiceDown") if a["job"] == "cheese"), None),
            90, "GrpcServiceDown firing for cheese",
        )  # fmt: skip
        assert labels["severity"] == "critical"
        # Only the stopped service is down.
        assert {a["job"] for a in firing("GrpcServiceDown")} == {"cheese"}
    finally:
        compose("start", "cheese")
        wait_healthy("cheese")
    eventually(
        lambda: not any(a["job"] == "cheese" for a in firing("GrpcServiceDown")),
        90, "GrpcServiceDown for cheese resolved after the restart",
    )  # fmt: skip


def jaeger_traces(service: str, since_us: int) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"service": service, "start": since_us, "limit": 50})
    data: list[dict[str, Any]] = get_json(f"{JAEGER}/api/traces?{params}")["data"]
    return data


def span_kind(span: dict[str, Any]) -> str | None:
    return next((tag["value"] for tag in span["tags"] if tag["key"] == "span.kind"), None)


def test_one_trace_holds_the_client_span_and_the_server_span_of_a_call() -> None:
    """`client cheese order brie` in the client container, sampled by its own choice (the
    stack's default traces one call in a hundred): its span and cheese's span of the same
    call are in one trace, the server's a child of the client's (W3C traceparent), whose
    decision the server follows."""
    since_us = int(time.time() * 1_000_000)
    compose("run", "--rm", "--no-deps", "-e", "OTEL_TRACES_SAMPLER=always_on", "client",
            "cheese", "order", "brie")  # fmt: skip

    def linked_pair() -> tuple[dict[str, Any], dict[str, Any]] | None:
        services: list[str] = get_json(f"{JAEGER}/api/services")["data"] or []
        for service in services:
            for trace in jaeger_traces(service, since_us):
                spans = trace["spans"]
                names = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
                for server in spans:
                    if (
                        span_kind(server) != "server"
                        or "CheeseService/Order" not in server["operationName"]
                    ):
                        continue
                    parents = {
                        r["spanID"] for r in server["references"] if r["refType"] == "CHILD_OF"
                    }
                    for caller in spans:
                        if (
                            caller["spanID"] in parents
                            and span_kind(caller) == "client"
                            and names[caller["processID"]] != names[server["processID"]]
                        ):
                            return caller, server
        return None

    caller, server = eventually(linked_pair, 60, "a trace with the client's span and cheese's span")
    assert caller["traceID"] == server["traceID"]
    assert server["startTime"] >= since_us


@pytest.fixture
def traffic() -> Iterator[None]:
    """Calls to every service for the length of a test: unary load on cheese and movie, and a
    JPEG viewer of the demo match (10 s long, so watched again and again), so the page has
    rates, latencies and a live viewer."""
    # Named, so that they can be removed: ending `docker compose run` leaves its container.
    names = [f"obs-traffic-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    loads = [
        popen(["run", "--rm", "--no-deps", f"--name={name}", "client", "load", service,
               "--seconds", "90", "--concurrency", "2"])
        for name, service in zip(names, ("cheese", "movie"), strict=True)
    ]  # fmt: skip
    stop = threading.Event()
    viewer: list[subprocess.Popen[str]] = []

    def watch_again_and_again() -> None:
        while not stop.is_set():
            name = f"obs-traffic-{uuid.uuid4().hex[:12]}"
            names.append(name)
            viewer[:] = [
                popen(["run", "--rm", "--no-deps", f"--name={name}", "client",
                       "soccer", "watch", "demo", "--encoding", "jpeg"])
            ]  # fmt: skip
            viewer[0].communicate()

    watching = threading.Thread(target=watch_again_and_again, daemon=True)
    watching.start()
    try:
        yield
    finally:
        stop.set()
        for run in [*loads, *viewer]:
            run.terminate()
        watching.join(timeout=30)
        subprocess.run(["docker", "rm", "--force", *names], capture_output=True, check=False)
        for run in loads:
            try:
                run.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                run.kill()
                run.communicate()


def test_the_console_page_shows_every_service_with_data(traffic: None) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), (
        f"no browser at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # This machine's network is closed: no background calls home, no QUIC.
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.on("pageerror", lambda error: errors.append(str(error)))

            def rendered() -> bool | None:
                # Only the page that passes is judged: an attempt retried because the
                # rates were not in yet may have lost a script on a busy host, and its
                # inline code then failed to find what that script defines.
                errors.clear()
                page.goto(f"{PROMETHEUS}/consoles/grpc.html", wait_until="networkidle")
                for job in SERVICES:
                    rates = page.locator(
                        f'table.calls[data-job="{job}"] tr.call-row td.rate'
                    ).all_inner_texts()
                    if not any(float(rate) > 0 for rate in rates):
                        return None
                viewers = page.locator("tr.viewer-row td.num").all_inner_texts()
                # A row is viewers, frames/s sent, per viewer, skipped/s.
                rows = [viewers[i : i + 4] for i in range(0, len(viewers), 4)]
                if not any(row[0] != "0" and row[1] not in {"-", "0.0"} for row in rows):
                    return None
                return True

            eventually(
                rendered,
                120,
                "the page with call rates for every service and a live viewer",
                step=2,
            )
            # The graphs drew: Rickshaw renders each into an SVG with a line per series.
            for job in SERVICES:
                graph = page.locator(f"#graph-{job}-calls svg path")
                graph.first.wait_for(state="attached", timeout=30_000)
            page.locator("#graph-soccer-viewers svg path").first.wait_for(
                state="attached", timeout=30_000
            )
            page.screenshot(path=str(ARTIFACTS / "observability-console.png"), full_page=True)
            # Every service up, as the stack is.
            assert page.locator("section.service h2 .down").count() == 0
        finally:
            browser.close()
    assert not errors, errors
