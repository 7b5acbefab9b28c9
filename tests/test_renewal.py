"""Short-lived certificates (issue 23): the lifetime setting, renewal at half a lifetime,
a PKI of one's own left alone, pairs checked before use, servers and client channels that
follow renewals under load without failing a call, expired leaves refused, expiry warnings,
and a CA rotation that fails no call. Real servers on loopback with real certificates."""

import asyncio
import datetime
import functools
import json
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from grpckit.client.channel import ClientTls, RenewingChannel, open_channel
from grpckit.lifecycle.server import running
from grpckit.transport.tls import ExpiryWatch, TlsFilesError, read_pair, warning_margin
from tests import echo
from tests.certs_util import issue, now, presented, serial_of
from tests.conftest import ROOT, eventually, make_pki, server_settings
from tests.echo import Echo

GEN_CERTS = ROOT / "certs" / "gen-certs.sh"
DISTRIBUTE = ROOT / "certs" / "distribute.sh"


def gen_certs(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GEN_CERTS), str(directory), *args], capture_output=True, text=True, check=False
    )


def lifetime_of(path: Path) -> float:
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return (certificate.not_valid_after_utc - certificate.not_valid_before_utc).total_seconds()


# ---- the lifetime setting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "seconds"),
    [("24h", 86400), ("90m", 5400), ("30d", 30 * 86400), ("825d", 825 * 86400)],
)
def test_leaves_live_as_long_as_the_setting_says(
    tmp_path: Path, setting: str, seconds: int
) -> None:
    result = gen_certs(tmp_path, "--lifetime", setting)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    for name in ("cheese", "client", "edge", "edge-server"):
        assert lifetime_of(tmp_path / f"{name}.crt") == seconds


def test_the_default_lifetime_is_a_day(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CERT_LIFETIME", "DAYS")}
    subprocess.run([str(GEN_CERTS), str(tmp_path)], check=True, env=env, capture_output=True)
    assert lifetime_of(tmp_path / "movie.crt") == 86400


def test_a_lifetime_under_an_hour_is_accepted_with_a_warning(tmp_path: Path) -> None:
    result = gen_certs(tmp_path, "--lifetime", "2m")
    assert result.returncode == 0, result.stderr
    assert "warning: CERT_LIFETIME 2m is under 1 h" in result.stderr
    assert lifetime_of(tmp_path / "soccer.crt") == 120


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("826d", "CERT_LIFETIME 826d is over 825 days"),
        ("24", "CERT_LIFETIME must be <n>m, <n>h or <n>d (e.g. 24h, 90m, 30d), got '24'"),
        ("0h", "got '0h'"),
        ("1y", "got '1y'"),
        ("-5m", "got '-5m'"),
    ],
)
def test_a_bad_lifetime_is_refused_with_what_is_expected(
    tmp_path: Path, setting: str, error: str
) -> None:
    result = subprocess.run(
        [str(GEN_CERTS), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "CERT_LIFETIME": setting},
        check=False,
    )
    assert result.returncode == 1
    assert error in result.stderr
    assert not (tmp_path / "ca.crt").exists()


# ---- renewal -------------------------------------------------------------------------------


def test_a_leaf_is_renewed_past_half_its_lifetime_and_kept_before(tmp_path: Path) -> None:
    make_pki(tmp_path, "--lifetime", "24h")
    start = now()
    # movie: 11 h of 24 used, kept; cheese: 13 h used, renewed.
    issue(tmp_path, "movie", tmp_path, not_before=start - datetime.timedelta(hours=11),
          not_after=start + datetime.timedelta(hours=13), server=True)  # fmt: skip
    issue(tmp_path, "cheese", tmp_path, not_before=start - datetime.timedelta(hours=13),
          not_after=start + datetime.timedelta(hours=11), server=True)  # fmt: skip
    movie, cheese = serial_of(tmp_path / "movie.crt"), serial_of(tmp_path / "cheese.crt")
    result = gen_certs(tmp_path, "--lifetime", "24h")
    assert result.returncode == 0, result.stderr
    assert "created cheese;" in result.stdout
    assert serial_of(tmp_path / "movie.crt") == movie
    assert serial_of(tmp_path / "cheese.crt") != cheese
    assert lifetime_of(tmp_path / "cheese.crt") == 86400


def test_a_shorter_lifetime_setting_reissues_longer_leaves_and_renew_all_reissues_every_one(
    tmp_path: Path,
) -> None:
    make_pki(tmp_path, "--lifetime", "30d")
    assert "created cheese movie soccer edge-server client monitor edge" in (
        gen_certs(tmp_path, "--lifetime", "24h").stdout
    )
    assert lifetime_of(tmp_path / "client.crt") == 86400
    before = serial_of(tmp_path / "client.crt")
    assert "kept ca cheese" in gen_certs(tmp_path, "--lifetime", "24h").stdout
    gen_certs(tmp_path, "--lifetime", "24h", "--renew-all")
    assert serial_of(tmp_path / "client.crt") != before


def test_an_expired_leaf_is_reissued_on_the_next_run(tmp_path: Path) -> None:
    """What the pki one-shot does for a stack left off for days, before any server starts."""
    make_pki(tmp_path)
    issue(tmp_path, "edge", tmp_path, not_before=now() - datetime.timedelta(days=3),
          not_after=now() - datetime.timedelta(days=2), server=False)  # fmt: skip
    gen_certs(tmp_path)
    subprocess.run(
        ["openssl", "x509", "-checkend", "3600", "-noout", "-in", str(tmp_path / "edge.crt")],
        check=True,
    )


# ---- a PKI of one's own --------------------------------------------------------------------


def own_pki(directory: Path, foreign: Path) -> Path:
    """All the files distribute.sh needs, from a CA that gen-certs.sh did not make."""
    shutil.copy(foreign / "ca.crt", directory / "ca.crt")
    shutil.copy(foreign / "ca.key", directory / "ca.key")
    # Re-sign the CA under another name: gen-certs.sh's own subject would make it ours.
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-key", str(directory / "ca.key"), "-subj",
         "/CN=Example Corp internal CA", "-days", "30", "-out", str(directory / "ca.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    start = now()
    for name, server in [("cheese", True), ("movie", True), ("soccer", True),
                         ("edge-server", True), ("client", False), ("edge", False)]:  # fmt: skip
        days = 5 if name == "movie" else 20
        issue(directory, name, directory, not_before=start,
              not_after=start + datetime.timedelta(days=days), server=server)  # fmt: skip
    return directory


def test_own_pki_is_used_as_it_is_and_said_so_with_its_earliest_expiry(
    tmp_path: Path, pki: Path
) -> None:
    (tmp_path / "mine").mkdir()
    mine = own_pki(tmp_path / "mine", pki)
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    tls = tmp_path / "tls"
    for name in ("cheese", "movie", "soccer", "client", "edge"):
        (tls / name).mkdir(parents=True)
    result = subprocess.run(
        [str(DISTRIBUTE), str(mine), str(tls)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "PATH": f"{ROOT / 'certs'}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    [own] = [line for line in lines if "own PKI" in line["message"]]
    assert own["message"] == "using your own PKI in certs/ as it is: nothing renews it"
    assert own["earliest_expiring"] == "movie.crt"
    movie_end = x509.load_pem_x509_certificate(
        (mine / "movie.crt").read_bytes()
    ).not_valid_after_utc
    assert own["earliest_expiry"] == movie_end.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Nothing written into it: no marker, no renewed leaf.
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    # And gen-certs.sh itself refuses to renew it.
    refused = gen_certs(mine)
    assert refused.returncode == 1
    assert "is not this script's CA" in refused.stderr
    assert (tls / "movie" / "server.crt").read_bytes() == before["movie.crt"]


def test_distribute_publishes_each_set_by_one_rename_and_only_when_it_changed(
    tmp_path: Path,
) -> None:
    make_pki(tmp_path / "pki")
    tls = tmp_path / "tls"
    for name in ("cheese", "movie", "soccer", "client", "edge"):
        (tls / name).mkdir(parents=True)
    env = {**os.environ, "PATH": f"{ROOT / 'certs'}:{os.environ['PATH']}"}

    def distribute(**extra: str) -> str:
        result = subprocess.run(
            [str(DISTRIBUTE), str(tmp_path / "pki"), str(tls)],
            capture_output=True, text=True, check=True, env={**env, **extra},
        )  # fmt: skip
        return result.stderr

    distribute()
    edge = tls / "edge"
    for name in ("ca.crt", "edge.crt", "edge.key", "server.crt", "server.key"):
        assert str((edge / name).readlink()) == f"..data/{name}"
    first = str((edge / "..data").readlink())
    assert "published" not in distribute()
    assert str((edge / "..data").readlink()) == first
    assert "edge: published" in distribute(FORCE_RENEW="1")
    assert str((edge / "..data").readlink()) != first
    # The old set is gone; the new one is a matching pair.
    assert [p.name for p in edge.iterdir() if p.is_dir() and not p.is_symlink()] == [
        str((edge / "..data").readlink())
    ]
    read_pair(edge / "server.crt", edge / "server.key")


# ---- the pair check ------------------------------------------------------------------------


def test_a_key_that_is_not_the_certificates_is_refused(pki: Path, foreign_pki: Path) -> None:
    with pytest.raises(TlsFilesError, match="is not the key of"):
        read_pair(pki / "cheese.crt", foreign_pki / "cheese.key")
    with pytest.raises(TlsFilesError, match="not a PEM certificate"):
        read_pair(Path(os.devnull), pki / "cheese.key")


@asynccontextmanager
async def live_server(live: Path) -> AsyncIterator[int]:
    """An echo server on cheese's files in `live`, trusting live/ca-bundle.crt."""
    settings = replace(
        server_settings(live, "cheese", policy=echo.POLICY), tls_ca=live / "ca-bundle.crt"
    )
    async with running(settings, [Echo()]) as server:
        yield server.port


def live_client(live: Path) -> ClientTls:
    return ClientTls(ca=live / "ca-bundle.crt", cert=live / "client.crt", key=live / "client.key")


def serial_presented(port: int, live: Path) -> int:
    tls = live_client(live)
    assert tls.cert and tls.key
    return presented("127.0.0.1", port, tls.ca, tls.cert, tls.key).serial_number


async def test_a_half_renewed_pair_is_never_used_and_the_whole_one_is(tmp_path: Path) -> None:
    live = make_pki(tmp_path, "--lifetime", "1h")
    async with live_server(live) as port:
        old = serial_presented(port, live)
        # A renewal caught between its two renames: the new key beside the old certificate.
        spare = tmp_path / "spare"
        spare.mkdir()
        issue(live, "cheese", spare, not_before=now(), not_after=now() + datetime.timedelta(hours=1),
              server=True)  # fmt: skip
        (spare / "cheese.key").replace(live / "cheese.key")
        for _ in range(3):
            assert serial_presented(port, live) == old
        (spare / "cheese.crt").replace(live / "cheese.crt")

        async def renewed() -> None:
            assert serial_presented(port, live) == serial_of(live / "cheese.crt") != old

        await eventually(renewed)


# ---- renewals under load -------------------------------------------------------------------


class Load:
    """Callers on one channel, each call with a deadline, until stopped or `limit` calls."""

    def __init__(self, channel: grpc.aio.Channel, callers: int = 4, limit: int = 100_000) -> None:
        self.call = echo.echo(channel)
        self.ok = 0
        self.failed: list[str] = []
        self._limit = limit
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(callers)]

    async def _caller(self) -> None:
        while not self._stop.is_set() and self.ok + len(self.failed) < self._limit:
            try:
                assert await self.call("hi", timeout=5) == "hi"
                self.ok += 1
            except grpc.aio.AioRpcError as error:
                self.failed.append(f"{error.code().name}: {error.details()}")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def rotate_and_wait(
    port: int, live: Path, change: Callable[[], object], load: Load, channel: RenewingChannel
) -> None:
    """Runs `change`, then waits until the server presents the new leaf, the client's channel
    has taken its new certificate, and calls go on."""
    renewals = channel.renewals
    change()
    expected = serial_of(live / "cheese.crt")

    async def presented_now() -> None:
        assert serial_presented(port, live) == expected
        assert channel.renewals > renewals
        done = load.ok
        await eventually(lambda: _more(load, done), within=5)

    await eventually(presented_now, within=15)


async def _more(load: Load, than: int) -> None:
    assert load.ok > than


async def test_renewals_under_load_fail_no_call_and_the_client_presents_its_new_cert(
    tmp_path: Path,
) -> None:
    live = make_pki(tmp_path, "--lifetime", "1h")
    async with live_server(live) as port:
        channel = open_channel(f"127.0.0.1:{port}", live_client(live))
        assert isinstance(channel, RenewingChannel)
        load = Load(channel)
        try:
            for _ in range(3):
                await rotate_and_wait(
                    port,
                    live,
                    lambda: gen_certs(live, "--lifetime", "1h", "--renew-all"),
                    load,
                    channel,
                )
        finally:
            await load.stop()
            await channel.close(None)
    assert load.failed == []
    assert load.ok > 0
    assert channel.renewals >= 3


async def test_a_ca_rotation_with_overlap_fails_no_call(tmp_path: Path) -> None:
    live = make_pki(tmp_path, "--lifetime", "1h")
    first_ca = x509.load_pem_x509_certificate((live / "ca.crt").read_bytes()).subject
    async with live_server(live) as port:
        channel = open_channel(f"127.0.0.1:{port}", live_client(live))
        load = Load(channel)
        try:
            for step in ("begin", "switch", "finish"):
                result = gen_certs(live, "--lifetime", "1h", "--rotate-ca", step)
                assert result.returncode == 0, result.stderr
                trusted = (live / "ca-bundle.crt").read_text().count("BEGIN CERTIFICATE")
                assert trusted == (1 if step == "finish" else 2)
                target = load.ok + 20
                await eventually(functools.partial(_more, load, target), within=15)
            issuer = presented(
                "127.0.0.1", port, live / "ca.crt", live / "client.crt", live / "client.key"
            ).issuer
        finally:
            await load.stop()
            await channel.close(None)
    assert issuer != first_ca
    assert load.failed == []


# ---- expiry --------------------------------------------------------------------------------


async def call_with_an_expired(tmp_path: Path, name: str, *, server: bool) -> grpc.aio.AioRpcError:
    """One call between a live server and client, `name`'s leaf having expired an hour ago:
    the error it ends with."""
    live = make_pki(tmp_path)
    issue(live, name, live, not_before=now() - datetime.timedelta(hours=2),
          not_after=now() - datetime.timedelta(hours=1), server=server)  # fmt: skip
    async with live_server(live) as port:
        channel = open_channel(f"127.0.0.1:{port}", live_client(live))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await echo.echo(channel)("hi", timeout=5, wait_for_ready=False)
        finally:
            await channel.close(None)
    return error.value


async def test_an_expired_server_leaf_is_refused_with_a_clear_handshake_error(
    tmp_path: Path,
) -> None:
    error = await call_with_an_expired(tmp_path, "cheese", server=True)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in (error.details() or "")


async def test_an_expired_client_leaf_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The client sees its connection closed; the server's handshake names the cause."""
    error = await call_with_an_expired(tmp_path, "client", server=False)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "certificate has expired" in capfd.readouterr().err


def test_the_warning_margin_is_a_day_or_a_quarter_of_the_lifetime(tmp_path: Path) -> None:
    make_pki(tmp_path)
    for lifetime, margin in [(datetime.timedelta(days=30), 86400), (datetime.timedelta(hours=24), 21600),
                             (datetime.timedelta(minutes=2), 30)]:  # fmt: skip
        issue(tmp_path, "x", tmp_path, not_before=now(), not_after=now() + lifetime, server=True)
        assert warning_margin(read_pair(tmp_path / "x.crt", tmp_path / "x.key")) == margin


def test_a_leaf_near_its_expiry_is_warned_about_once_and_an_expired_one_is_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_pki(tmp_path)
    start = now()
    issue(tmp_path, "cheese", tmp_path, not_before=start,
          not_after=start + datetime.timedelta(hours=8), server=True)  # fmt: skip
    watch = ExpiryWatch(tmp_path / "cheese.crt", tmp_path / "cheese.key")
    caplog.set_level(logging.INFO, logger="grpckit.tls")
    watch.check(start + datetime.timedelta(hours=5))  # 3 h left of 8: no warning yet
    assert not caplog.records
    watch.check(start + datetime.timedelta(hours=6, minutes=30))  # 1.5 h left: under 2 h
    watch.check(start + datetime.timedelta(hours=7))
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == "TLS certificate expires soon and has not been renewed"
    # Certificates count whole seconds.
    assert abs(warning.__dict__["seconds_left"] - 5400) <= 1
    assert warning.__dict__["serial"] == f"{serial_of(tmp_path / 'cheese.crt'):X}"
    watch.check(start + datetime.timedelta(hours=9))
    assert caplog.records[-1].levelno == logging.ERROR
    assert "expired" in caplog.records[-1].getMessage()
