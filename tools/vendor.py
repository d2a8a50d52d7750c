"""Front-end libraries vendored from the npm registry into frontend/static/vendor/: no CDN, no build step.

    python tools/vendor.py          # fetch each pinned package, check its integrity, copy the files below
    python tools/vendor.py --check  # offline: the files on disk are the ones vendored (a test runs this)
    python tools/vendor.py --check --registry  # also compare them with the registry's tarballs again

Each package is pinned by version and by the registry's sha512 integrity, so a tampered or re-published
tarball is refused. To upgrade: change the version, run `npm view <name>@<version> dist.integrity`, paste
the new integrity, run this tool, and commit the result.
"""

import argparse
import base64
import hashlib
import io
import json
import logging
import sys
import tarfile
import urllib.request
from pathlib import Path

logger = logging.getLogger("vendor")

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "frontend" / "static" / "vendor"
REGISTRY = "https://registry.npmjs.org"
MANIFEST = VENDOR / "versions.json"

# name, version, sha512 integrity, {path in the package: path under vendor/<folder>/}
PACKAGES = [
    (
        "leaflet",
        "1.9.4",
        "sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA==",
        {
            "dist/leaflet.js": "leaflet.js",
            "dist/leaflet.css": "leaflet.css",
            "dist/images/layers.png": "images/layers.png",
            "dist/images/layers-2x.png": "images/layers-2x.png",
            "dist/images/marker-icon.png": "images/marker-icon.png",
            "dist/images/marker-icon-2x.png": "images/marker-icon-2x.png",
            "dist/images/marker-shadow.png": "images/marker-shadow.png",
            "LICENSE": "LICENSE",
        },
    ),
    (
        "leaflet.markercluster",
        "1.5.3",
        "sha512-vPTw/Bndq7eQHjLBVlWpnGeLa3t+3zGiuM7fJwCkiMFq+nmRuG3RI3f7f4N4TDX7T4NpbAXpR2+NTRSEGfCSeA==",
        {
            "dist/leaflet.markercluster.js": "leaflet.markercluster.js",
            "dist/MarkerCluster.css": "MarkerCluster.css",
            "dist/MarkerCluster.Default.css": "MarkerCluster.Default.css",
            "MIT-LICENCE.txt": "LICENSE",
        },
    ),
]


def package_files(name: str, version: str, integrity: str) -> dict[str, bytes]:
    """Every file of the package's tarball (paths without the leading "package/"), integrity checked."""
    url = f"{REGISTRY}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310 (a fixed https URL)
        tarball = answer.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"{name}@{version}: integrity {digest} is not the pinned {integrity}")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile():
                files[member.name.removeprefix("package/")] = archive.extractfile(member).read()
    return files


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare the vendored files, write nothing")
    parser.add_argument("--registry", action="store_true", help="with --check: fetch the tarballs to compare")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        stale = check(registry=args.registry)
        for path in stale:
            logger.error("stale: %s (run python tools/vendor.py)", path)
        return 1 if stale else 0
    manifest = {}
    for name, version, integrity, wanted in PACKAGES:
        files = package_files(name, version, integrity)
        digests = {}
        for source, target in wanted.items():
            path = VENDOR / name / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(files[source])
            digests[target] = hashlib.sha256(files[source]).hexdigest()
            logger.info("%s@%s %s -> %s", name, version, source, path.relative_to(ROOT))
        manifest[name] = {"version": version, "integrity": integrity, "sha256": digests}
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


def check(*, registry: bool = False) -> list[str]:
    """Paths that differ from what was vendored (the manifest's sha256, or the registry's tarball)."""
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    stale = []
    for name, version, integrity, wanted in PACKAGES:
        entry = manifest.get(name, {})
        if (entry.get("version"), entry.get("integrity")) != (version, integrity):
            stale.append(f"{MANIFEST.relative_to(ROOT)} ({name})")
        files = package_files(name, version, integrity) if registry else {}
        for source, target in wanted.items():
            path = VENDOR / name / target
            expected = (
                hashlib.sha256(files[source]).hexdigest() if registry else entry.get("sha256", {}).get(target)
            )
            if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
                stale.append(str(path.relative_to(ROOT)))
    return stale


if __name__ == "__main__":
    sys.exit(main())
