"""The pushed image's SBOM digest label, as the real program registers it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from prodstack_cloud_harness import Manifest

from components.registry import sbom_digest

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "app" / "requirements.txt"


def cli_sbom_digest(requirements: Path) -> str:
    """The digest from cyclonedx-py's own command line, as a user verifies a label."""
    binary = shutil.which("cyclonedx-py")
    assert binary, "cyclonedx-py is not on PATH: run the tests with `uv run`"
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    out = subprocess.run(
        [binary, "requirements", "--output-reproducible", "--of", "JSON", "--sv", "1.6",
         str(requirements)], check=True, capture_output=True, env=env,
    ).stdout
    return "sha256:" + hashlib.sha256(out).hexdigest()


def test_pushed_image_is_labelled_with_the_sbom_digest_of_app_requirements(
    both: list[Manifest],
) -> None:
    expected = cli_sbom_digest(REQUIREMENTS)
    for m in both:
        args = m.one("docker:index/image:Image")["build"]["args"]
        assert args["SBOM_DIGEST"] == expected, m.data["stack"]
    # app/Dockerfile is what turns the build argument into the label.
    dockerfile = (REPO / "app" / "Dockerfile").read_text()
    assert 'ARG SBOM_DIGEST=""' in dockerfile
    assert "dev.prodstack.sbom.digest=${SBOM_DIGEST}" in dockerfile


def test_sbom_digest_is_reproducible_and_follows_the_requirements(tmp_path: Path) -> None:
    copy = tmp_path / "requirements.txt"
    copy.write_bytes(REQUIREMENTS.read_bytes())
    first = sbom_digest(copy)
    # Another path, a time stamp in the environment: same lock, same digest.
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        assert sbom_digest(REQUIREMENTS) == first
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    copy.write_text(REQUIREMENTS.read_text().replace("idna==", "idna==0", 1))
    assert sbom_digest(copy) != first


def test_sbom_failure_is_one_line_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(RuntimeError, match=r"^SBOM of .*nope\.txt: cyclonedx-py failed"):
        sbom_digest(missing)
