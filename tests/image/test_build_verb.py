"""`prodstack build`: the image `pulumi up` would push, built once, with its version.

The build has no package index here, so it runs `--offline` from the wheelhouse that
scripts/build-image.sh fills (the `app_image` fixture), on the Debian-built base.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from components.registry import build_spec

REPO = Path(__file__).resolve().parents[2]
PRODSTACK = str(Path(sys.executable).with_name("prodstack"))


def test_build_prints_the_version_pulumi_up_tags_and_the_image_id(app_image: str) -> None:
    from tests.support.docker import python_base_image

    base = python_base_image()
    command = [PRODSTACK, "build", "--offline", "--base-image", base, "--format", "json"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # The one recipe: the registry component's build arguments and content-hash tag.
    spec = build_spec(REPO / "app", base_image=base, offline=True)
    assert result["version"] == spec.tag and result["build_args"] == spec.build_args
    assert result["image"] == f"prodstack-api:{spec.tag}"
    inspect = json.loads(subprocess.run(["docker", "image", "inspect", result["image"]],
                                        capture_output=True, text=True, check=True).stdout)
    assert inspect[0]["Id"] == result["image_id"]
    labels = inspect[0]["Config"]["Labels"]
    assert labels["dev.prodstack.sbom.digest"] == spec.build_args["SBOM_DIGEST"]
    # Online and offline builds are different build arguments, so different versions.
    assert build_spec(REPO / "app", base_image=base).tag != spec.tag


def test_build_refuses_bad_usage_in_one_line(tmp_path: Path) -> None:
    for args, fragment in ((["--tag=-bad"], "--tag '-bad'"),
                           (["--platform", "linux/s390x"], "--platform linux/s390x"),
                           (["--context", str(tmp_path)], "no Dockerfile there")):  # fmt: skip
        proc = subprocess.run([PRODSTACK, "build", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
