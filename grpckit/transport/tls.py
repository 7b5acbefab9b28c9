"""Mutual TLS for servers and clients, with certificates that are renewed while they serve.

Servers use grpcio's dynamic credentials: the files are checked (a stat each) whenever a
new connection arrives, so renewed certificates are picked up without a restart while
established connections keep the ones they were made with. A key and certificate are used
only as a pair that matches: a renewal swaps the two files one after the other (or a reader
catches ..data mid-swap), and a server that took a new certificate with the old key would
fail every handshake until the next change. A pair that does not match, or a file that does
not parse, is passed over until the next connection looks again.

`ExpiryWatch` logs a warning well before the certificate on disk expires (a day, or a
quarter of its lifetime when that is shorter), so a stopped renewer is noticed while every
call still works, and an error once it has expired.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from grpckit.config import TlsFiles

log = logging.getLogger("grpckit.tls")


class TlsFilesError(ValueError):
    """A certificate or key that does not parse, or a key that is not the certificate's."""


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, read and checked together."""

    cert_pem: bytes
    key_pem: bytes
    serial: int
    not_before: datetime
    not_after: datetime

    @property
    def lifetime(self) -> float:
        return (self.not_after - self.not_before).total_seconds()

    def remaining(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds()


def _public(key: object) -> bytes:
    return cast(
        bytes,
        key.public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def read_pair(cert: Path, key: Path) -> Pair:
    """`cert` and `key`, or TlsFilesError when they are not a matching pair (OSError when
    either cannot be read)."""
    cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as error:
        raise TlsFilesError(f"{cert}: not a PEM certificate ({error})") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise TlsFilesError(f"{key}: not an unencrypted PEM private key ({error})") from None
    if _public(private.public_key()) != _public(certificate.public_key()):
        raise TlsFilesError(f"{key} is not the key of {cert}")
    return Pair(
        cert_pem,
        key_pem,
        certificate.serial_number,
        certificate.not_valid_before_utc,
        certificate.not_valid_after_utc,
    )


def _stamp(*paths: Path) -> tuple[int, ...]:
    # stat follows symlinks: a ..data swap points every name at a new file.
    return tuple(s.st_mtime_ns + s.st_size + s.st_ino for s in (p.stat() for p in paths))


def _certificate_config(files: TlsFiles) -> tuple[grpc.ServerCertificateConfiguration, Pair]:
    pair = read_pair(files.cert, files.key)
    config = grpc.ssl_server_certificate_configuration(
        [(pair.key_pem, pair.cert_pem)], root_certificates=files.ca.read_bytes()
    )
    return config, pair


def _described(pair: Pair) -> dict[str, object]:
    return {"serial": f"{pair.serial:X}", "not_after": pair.not_after.isoformat()}


class _Reloader:
    """The fetcher grpcio calls per new connection: a new configuration when files changed."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._stamp = _stamp(files.cert, files.key, files.ca)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        files = self._files
        try:
            stamp = _stamp(files.cert, files.key, files.ca)
            if stamp == self._stamp:
                return None
            config, pair = _certificate_config(files)
        except (OSError, TlsFilesError) as error:
            # Mid-renewal a file may be briefly missing, or new beside an old partner: keep
            # serving with the current pair, and look again at the next connection.
            log.warning(
                "TLS files unreadable or not a pair, keeping the current ones",
                extra={"error": str(error)},
            )
            return None
        self._stamp = stamp
        log.info("TLS certificates reloaded", extra={"cert": str(files.cert), **_described(pair)})
        return config


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials that require a client certificate chained to `files.ca` (a bundle of
    several CAs during a CA rotation). Raises OSError or TlsFilesError."""
    reloader = _Reloader(files)
    config, pair = _certificate_config(files)
    log.info("TLS certificate", extra={"cert": str(files.cert), **_described(pair)})
    # The stub says the fetcher never returns None; grpcio documents None as "no change".
    fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], reloader)
    return grpc.dynamic_ssl_server_credentials(config, fetcher, require_client_authentication=True)


def warning_margin(pair: Pair) -> float:
    """How long before expiry to warn: a day, or a quarter of the lifetime if shorter."""
    return min(86400.0, pair.lifetime / 4)


class ExpiryWatch:
    """Warns once per certificate when the one at `cert` nears its expiry, and errs once when
    it has expired: the renewer should have replaced it at half its lifetime."""

    def __init__(self, cert: Path, key: Path, *, check_seconds: float | None = None) -> None:
        self._cert, self._key = cert, key
        self._check_seconds = check_seconds
        self._warned: set[tuple[int, str]] = set()

    def check(self, now: datetime | None = None) -> Pair | None:
        try:
            pair = read_pair(self._cert, self._key)
        except (OSError, TlsFilesError):
            return None  # mid-renewal; the reloader reports files that stay broken
        remaining = pair.remaining(now)
        facts = {"cert": str(self._cert), **_described(pair), "seconds_left": round(remaining)}
        if remaining <= 0 and (pair.serial, "expired") not in self._warned:
            self._warned.add((pair.serial, "expired"))
            log.error(
                "TLS certificate expired: new handshakes fail until it is renewed", extra=facts
            )
        elif 0 < remaining <= warning_margin(pair) and (pair.serial, "soon") not in self._warned:
            self._warned.add((pair.serial, "soon"))
            log.warning("TLS certificate expires soon and has not been renewed", extra=facts)
        return pair

    async def watch(self) -> None:
        while True:
            pair = self.check()
            interval = self._check_seconds
            if interval is None:
                # A twentieth of the lifetime, a minute at most: a 2-minute test leaf is
                # looked at every 6 s, a day-long one every minute.
                interval = min(60.0, max(1.0, pair.lifetime / 20)) if pair else 60.0
            await asyncio.sleep(interval)


def channel_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Client credentials; without cert and key the servers here will refuse the handshake.
    Raises OSError, or TlsFilesError when cert and key are not a pair."""
    pair = read_pair(cert, key) if cert and key else None
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=pair.key_pem if pair else None,
        certificate_chain=pair.cert_pem if pair else None,
    )


def files_stamp(*paths: Path) -> tuple[int, ...]:
    """What changes when any of `paths` is replaced (renamed over, or its ..data swapped)."""
    return _stamp(*paths)
