"""app/Dockerfile linted by hadolint: no finding at any level, and the only inline ignore
is DL3008 (unpinned apt packages), kept with its reason in the Dockerfile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "app" / "Dockerfile"


def hadolint(dockerfile: Path, *args: str) -> tuple[int, list[dict]]:
    binary = shutil.which("hadolint")
    assert binary, "hadolint is not on PATH: run the tests with `uv run` after scripts/setup.sh"
    # From the Dockerfile's own folder with no config file there: the rule set is
    # hadolint's defaults plus inline pragmas, and findings down to `style` fail.
    assert not list(dockerfile.parent.glob(".hadolint.y*ml")), "no hadolint config expected"
    result = subprocess.run(
        [binary, "--no-color", "--format", "json", "--failure-threshold", "style", *args,
         str(dockerfile)],
        cwd=dockerfile.parent, capture_output=True, text=True, timeout=60,
    )
    return result.returncode, json.loads(result.stdout or "[]")


def codes(findings: list[dict]) -> list[str]:
    return sorted(f["code"] for f in findings)


def test_dockerfile_has_no_hadolint_finding() -> None:
    status, findings = hadolint(DOCKERFILE)
    assert findings == [] and status == 0, findings


def test_the_only_inline_ignore_is_dl3008_with_its_reason() -> None:
    text = DOCKERFILE.read_text()
    pragmas = re.findall(r"^# hadolint ignore=(\S+)$", text, flags=re.M)
    assert pragmas == ["DL3008"]
    assert "point release" in text  # the reason stays next to the ignore
    # Without pragmas, DL3008 is all that shows: DL4006 is fixed, not hidden.
    status, findings = hadolint(DOCKERFILE, "--disable-ignore-pragma")
    assert status == 1 and codes(findings) == ["DL3008"], findings


def test_hadolint_reports_planted_findings_in_a_copy(tmp_path: Path) -> None:
    """The lint above can fail: the Dockerfile copied with an unpinned apt package and a
    pipe in a stage without pipefail is caught on both counts."""
    planted = tmp_path / "Dockerfile"
    planted.write_text(
        DOCKERFILE.read_text()
        + "\nFROM debian:bookworm-slim@sha256:" + "0" * 64 + " AS planted\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends curl \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
        "RUN curl -fsS https://example.invalid/ | tar -x\n"
    )
    status, findings = hadolint(planted)
    assert status == 1
    assert codes(findings) == ["DL3008", "DL4006"], findings
    # Both on the planted lines, after the real Dockerfile's last line.
    first_planted = len(DOCKERFILE.read_text().splitlines()) + 1
    assert all(f["line"] > first_planted for f in findings), findings
