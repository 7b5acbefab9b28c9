"""Write an image tarball as `docker save` does, from a folder, with no engine or registry.

    python3 mkimage.py NAME:TAG OUT.tar ROOTFS_DIR [--entrypoint JSON] [--cmd JSON]

The lab imports it with `ctr -n k8s.io images import OUT.tar` (up.sh does).
"""

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path

CREATED = "2026-01-01T00:00:00Z"


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _layer(rootfs: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name, filter=_root_owned)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref")
    parser.add_argument("out", type=Path)
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("--entrypoint", default="null")
    parser.add_argument("--cmd", default="null")
    args = parser.parse_args()

    layer = _layer(args.rootfs)
    layer_sha = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": CREATED,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Entrypoint": json.loads(args.entrypoint),
                "Cmd": json.loads(args.cmd),
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_sha}"]},
            "history": [{"created": CREATED, "created_by": "mkimage.py"}],
        }
    ).encode()
    config_sha = hashlib.sha256(config).hexdigest()
    manifest = [
        {
            "Config": f"{config_sha}.json",
            "RepoTags": [args.ref],
            "Layers": [f"{layer_sha}/layer.tar"],
        }
    ]
    with tarfile.open(args.out, "w") as tar:
        _add(tar, f"{layer_sha}/layer.tar", layer)
        _add(tar, f"{config_sha}.json", config)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    print(args.ref, args.out, "layer", len(layer), "bytes")


if __name__ == "__main__":
    main()
