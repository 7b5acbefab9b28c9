"""The stress run's authorization policies: each service's own (<service>/authz.json), with
the legitimate clients' identity `viewer` added wherever `client` is a principal, so the
run proves per-identity budgets with two identities without granting a test identity
anything in the policies the stack ships.

    python -m tests.stress.policies DIR    # writes DIR/cheese.json, movie.json, soccer.json
"""

import json
import sys
from pathlib import Path
from typing import Any

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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
