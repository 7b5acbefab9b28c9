"""certs/gen-certs.sh: the names the deployment relies on, and a CA that is never replaced."""

import subprocess
from pathlib import Path

from tests.conftest import ROOT, make_pki

FILES = ["ca.crt"] + [
    f"{s}.{e}"
    for s in ("cheese", "movie", "soccer", "client", "monitor", "edge", "edge-server")
    for e in ("crt", "key")
]


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout


def test_creates_the_expected_files_with_service_sans(pki: Path) -> None:
    assert all((pki / name).is_file() for name in FILES)
    for service, name in [
        ("cheese",) * 2,
        ("movie",) * 2,
        ("soccer",) * 2,
        ("edge-server", "edge"),
    ]:
        sans = openssl(
            "x509", "-in", str(pki / f"{service}.crt"), "-noout", "-ext", "subjectAltName"
        )
        assert f"DNS:{name}" in sans
        assert "DNS:localhost" in sans
        assert "IP Address:127.0.0.1" in sans
    openssl(
        "verify",
        "-CAfile",
        str(pki / "ca.crt"),
        *(str(pki / f) for f in FILES if f.endswith(".crt")),
    )
    assert (pki / "client.key").stat().st_mode & 0o077 == 0
    # The edge's two faces: a client towards the servers, a server towards its clients.
    ca = str(pki / "ca.crt")
    openssl("verify", "-CAfile", ca, "-purpose", "sslclient", str(pki / "edge.crt"))
    openssl("verify", "-CAfile", ca, "-purpose", "sslserver", str(pki / "edge-server.crt"))


def test_rerunning_keeps_the_ca_unless_forced(tmp_path: Path) -> None:
    make_pki(tmp_path)
    ca = (tmp_path / "ca.crt").read_bytes()
    (tmp_path / "movie.key").unlink()
    make_pki(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert (tmp_path / "movie.key").is_file()
    subprocess.run([str(ROOT / "certs" / "gen-certs.sh"), str(tmp_path), "--force-ca"], check=True)
    assert (tmp_path / "ca.crt").read_bytes() != ca
