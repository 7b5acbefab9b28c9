"""Validate rendered manifests offline, then check the project's rules on them.

    python deploy/k8s/check.py --kubernetes-version 1.30 [--kubernetes-version ...] FILE...

Schemas: the strict ones bundled with the pinned kubernetes-validate (unknown fields are
errors), read from the installed package; nothing is fetched. Unlike its command line, a
kind it has no schema for is an error here, not a warning, so a typo in `kind` or
`apiVersion` cannot pass. scripts/k8s-check.sh renders the FILEs with kustomize.
"""

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

UID = 10001
TMP = "/tmp"  # noqa: S108 - the path every container must mount, not a file we create
TERMINATION_MARGIN = 1  # seconds: SHUTDOWN_DRAIN (1 s) comes before SHUTDOWN_GRACE

Doc = dict[str, Any]


def pod_spec(doc: Doc) -> Doc | None:
    if doc["kind"] in ("Deployment", "Job"):
        spec: Doc = doc["spec"]["template"]["spec"]
        return spec
    return None


def env_of(container: Doc) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def rules(docs: list[Doc]) -> Iterator[str]:
    """The project's rules; each yields a message naming what breaks it."""
    by_kind: dict[str, dict[str, Doc]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc)
        if spec is None:
            continue
        if spec.get("automountServiceAccountToken") is not False:
            yield f"{name}: automountServiceAccountToken must be false"
        want = {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        pod_sc = spec.get("securityContext", {})
        for key, value in want.items():
            if pod_sc.get(key) != value:
                yield f"{name}: securityContext.{key} must be {value}"
        for volume in spec.get("volumes", []):
            if "secret" in volume and volume["secret"].get("defaultMode") != 0o440:
                yield f"{name}: secret volume {volume['name']} must have defaultMode 0440"
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name} container {container['name']}"
            sc = container.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                yield f"{where}: allowPrivilegeEscalation must be false"
            if sc.get("readOnlyRootFilesystem") is not True:
                yield f"{where}: readOnlyRootFilesystem must be true"
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                yield f"{where}: capabilities must drop ALL"
            if container.get("imagePullPolicy") != "IfNotPresent":
                yield f"{where}: imagePullPolicy must be IfNotPresent"
            if TMP not in {m["mountPath"] for m in container.get("volumeMounts", [])}:
                yield f"{where}: needs a writable /tmp (the root filesystem is read-only)"
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if set(resources.get(part, {})) != {"cpu", "memory"}:
                    yield f"{where}: resources.{part} must set cpu and memory"
        if doc["kind"] == "Deployment":
            yield from server_rules(name, doc, spec, by_kind)


def server_rules(
    name: str, doc: Doc, spec: Doc, by_kind: dict[str, dict[str, Doc]]
) -> Iterator[str]:
    server = spec["containers"][0]
    env = env_of(server)
    ports = {p.get("name"): p["containerPort"] for p in server.get("ports", [])}
    if set(ports) != {"grpc", "health"}:
        yield f"{name}: ports must be named grpc and health"
    if str(ports.get("grpc")) != env.get("PORT") or str(ports.get("health")) != env.get(
        "HEALTH_PORT"
    ):
        yield f"{name}: ports grpc and health must be PORT and HEALTH_PORT"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        port = server.get(probe, {}).get("grpc", {}).get("port")
        if str(port) != env.get("HEALTH_PORT"):
            yield f"{name}: {probe} must be a gRPC probe on HEALTH_PORT"
    replica: Doc = next((e for e in server.get("env", []) if e["name"] == "REPLICA_NAME"), {})
    if replica.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        yield f"{name}: REPLICA_NAME must come from metadata.name"
    grace = float(env.get("SHUTDOWN_GRACE", "10"))
    if spec.get("terminationGracePeriodSeconds", 30) <= grace + TERMINATION_MARGIN:
        yield f"{name}: terminationGracePeriodSeconds must outlast drain + SHUTDOWN_GRACE"
    rolling = doc["spec"].get("strategy", {}).get("rollingUpdate", {})
    if rolling.get("maxUnavailable") != 0:
        yield f"{name}: rollingUpdate.maxUnavailable must be 0"
    labels = doc["spec"]["selector"]["matchLabels"]
    service = by_kind.get("Service", {}).get(doc["metadata"]["name"])
    if service is None or service["spec"].get("selector") != labels:
        yield f"{name}: needs a Service of the same name selecting its pods"
    elif service["spec"].get("clusterIP") != "None":
        yield f"{name}: its Service must be headless (clients balance themselves)"
    pdbs = by_kind.get("PodDisruptionBudget", {}).values()
    if not any(p["spec"]["selector"].get("matchLabels") == labels for p in pdbs):
        yield f"{name}: needs a PodDisruptionBudget"


def validate(path: Path, versions: list[str]) -> int:
    docs: list[Doc] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    failures = 0
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(p) for p in error.path)
                print(f"{path}: {name} (Kubernetes {version}): {where}: {error.message}")
                failures += 1
            except Exception as error:  # no schema for the kind, unknown version, ...
                reason = getattr(error, "message", None) or repr(error)
                print(f"{path}: {name} (Kubernetes {version}): {reason}")
                failures += 1
    for message in rules(docs):
        print(f"{path}: {message}")
        failures += 1
    if failures == 0:
        print(f"{path}: {len(docs)} objects valid for Kubernetes {', '.join(versions)}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubernetes-version", action="append", required=True)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    failures = sum(validate(path, args.kubernetes_version) for path in args.files)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
