"""The image's SBOM and OCI labels, as scripts/build-image.sh makes them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

from components.registry import sbom_digest
from tests.support.docker import build_app_image

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "app" / "requirements.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", flags=re.M)


def labels(ref: str) -> dict[str, str]:
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", ref],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out) or {}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sbom_file(app_image: str) -> Path:
    return REPO / ".prodstack" / "sbom" / f"{app_image.rsplit(':', 1)[1]}.cdx.json"


def sbom_packages(path: Path) -> dict[str, str]:
    bom = json.loads(path.read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    return {normalize(c["name"]): c["version"] for c in bom["components"]}


def test_image_carries_oci_labels_and_the_sbom_digest(app_image: str) -> None:
    found = labels(app_image)
    path = sbom_file(app_image)
    assert path.is_file(), f"build-image.sh wrote no SBOM at {path}"
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert found["dev.prodstack.sbom.digest"] == digest
    # The same digest the cloud registry component puts on the image it pushes.
    assert digest == sbom_digest(REQUIREMENTS)
    revision = found["org.opencontainers.image.revision"]
    assert re.fullmatch(r"[0-9a-f]{40}", revision), revision
    assert subprocess.run(["git", "cat-file", "-e", f"{revision}^{{commit}}"],
                          cwd=REPO).returncode == 0
    assert found["org.opencontainers.image.source"]
    assert "@" not in found["org.opencontainers.image.source"]  # no credentials from a remote
    created = dt.datetime.strptime(found["org.opencontainers.image.created"],
                                   "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    now = dt.datetime.now(dt.UTC)
    assert now - dt.timedelta(hours=12) < created <= now + dt.timedelta(minutes=1)
    assert found["org.opencontainers.image.version"]


def test_sbom_lists_every_required_package_at_its_version(app_image: str) -> None:
    pinned = {normalize(n): v for n, v in PIN.findall(REQUIREMENTS.read_text())}
    assert len(pinned) >= 10, pinned
    assert sbom_packages(sbom_file(app_image)) == pinned


def test_sbom_matches_what_the_image_has_installed(app_image: str) -> None:
    script = (
        "import importlib.metadata as m, json, sys\n"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions(path=[p"
        " for p in sys.path if p.startswith('/opt/venv')])}))"
    )
    out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python3", app_image, "-c",
                          script], check=True, capture_output=True, text=True).stdout
    installed = {normalize(n): v for n, v in json.loads(out).items()}
    assert installed == sbom_packages(sbom_file(app_image))


def test_rebuild_keeps_the_content_tag_though_the_build_date_differs(app_image: str) -> None:
    """The created label is added after the tag is taken from a build without it. Two
    builds back to back with one version (the tree and its commit stay put meanwhile)."""
    created = "org.opencontainers.image.created"
    first = build_app_image(app_version="sbom-rebuild-test")
    first_created = labels(first)[created]
    time.sleep(1.1)  # the created label has one-second resolution
    second = build_app_image(app_version="sbom-rebuild-test")
    assert first == second
    assert labels(second)[created] > first_created
