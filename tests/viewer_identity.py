"""A second client identity, `viewer`, for the stack suites whose clients must not share
the budgets of `client` (`make stress`: the floods are `client`; `make rollout-test`: the
page beside the load and the command-line viewers). Its certificate is minted by the test
from the stack's CA; the run's authorization policies are each service's own
(<service>/authz.json) with `viewer` added wherever `client` is a principal, so nothing is
granted to a test identity in the policies the stack ships. tests/viewer-identity.yml points
the servers at them (through COMPOSE_FILE, as the Makefile's `with-viewer` does).

    python -m tests.viewer_identity DIR    # writes DIR/cheese.json, movie.json, soccer.json
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from grpckit.client.channel import ClientTls
from tests.conftest import ROOT

SERVICES = ("cheese", "movie", "soccer")
IDENTITY = "viewer"


def with_viewer(policy: dict[str, Any]) -> dict[str, Any]:
    for rule in policy.get("allow_rules", []):
        principals = rule.get("source", {}).get("principals", [])
        if "client" in principals and IDENTITY not in principals:
            principals.append(IDENTITY)
    return policy


def main(directory: Path) -> None:
    for service in SERVICES:
        policy = with_viewer(json.loads((ROOT / service / "authz.json").read_text()))
        target = directory / f"{service}.json"
        target.write_text(json.dumps(policy, indent=2) + "\n")
        # Read by the servers' user, uid 10001.
        target.chmod(0o644)


def mint_identity(directory: Path, name: str) -> ClientTls:
    """A client certificate for `name` (CN and DNS SAN), signed by the stack's CA with the
    same extensions as certs/gen-certs.sh gives `client`."""
    key, csr, crt, ext = (directory / f"{name}.{x}" for x in ("key", "csr", "crt", "ext"))
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = clientAuth\n"
        f"subjectAltName = DNS:{name}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    ca = ROOT / "certs"
    for command in (
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
        ["openssl", "req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca / "ca.crt", "-CAkey", ca / "ca.key",
         "-days", "2", "-sha256", "-set_serial", str(int(time.time() * 1000)), "-extfile", ext,
         "-out", crt],
    ):  # fmt: skip
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return ClientTls(ca / "ca.crt", crt, key)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
