"""Mutual TLS for servers and clients.

Servers use grpcio's dynamic credentials: the files are checked (a stat each) whenever a
new connection arrives, so rotated certificates are picked up without a restart while
established connections keep the ones they were made with.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc

from grpckit.config import TlsFiles

log = logging.getLogger(__name__)


def _stamp(files: TlsFiles) -> tuple[int, ...]:
    return tuple(
        s.st_mtime_ns + s.st_size for s in (p.stat() for p in (files.cert, files.key, files.ca))
    )


def _certificate_config(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(files.key.read_bytes(), files.cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
    )


class _Reloader:
    """The fetcher grpcio calls per new connection: a new configuration when files changed."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._stamp = _stamp(files)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = _stamp(self._files)
            if stamp == self._stamp:
                return None
            config = _certificate_config(self._files)
        except OSError as error:
            # Mid-rotation a file may be briefly missing: keep serving with the old ones.
            log.warning(
                "TLS files unreadable, keeping the current ones", extra={"error": str(error)}
            )
            return None
        self._stamp = stamp
        log.info("TLS certificates reloaded", extra={"cert": str(self._files.cert)})
        return config


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials that require a client certificate chained to `files.ca`."""
    # The stub says the fetcher never returns None; grpcio documents None as "no change".
    fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], _Reloader(files))
    return grpc.dynamic_ssl_server_credentials(
        _certificate_config(files), fetcher, require_client_authentication=True
    )


def channel_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Client credentials; without cert and key the servers here will refuse the handshake."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
