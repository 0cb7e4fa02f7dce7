"""pip-audit over the locked dependencies: the image's app/requirements.txt and the whole
uv.lock export, against PyPI's vulnerability data (its JSON API).

That service does not answer from every machine. The audit probes it first: unreachable
is a skip whose reason says so, never a pass. With PRODSTACK_AUDIT_REQUIRED=1 (the CI
workflow's audit step) unreachable is a failure. A known vulnerability fails unless
.pip-audit-ignore.toml lists it with its package, a reason and a review date not yet past.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import ssl
import subprocess
import tomllib
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IGNORE_FILE = REPO / ".pip-audit-ignore.toml"
APP_REQUIREMENTS = REPO / "app" / "requirements.txt"
# pip-audit's default vulnerability service. The probe asks it what pip-audit asks, one
# release's JSON, for a release with published advisories: a mirror that serves project
# pages but not release pages or advisories (as here) counts as unreachable.
SERVICE = "PyPI JSON API"
PROBE_URL = "https://pypi.org/pypi/jinja2/2.10/json"
IGNORE_KEYS = ("id", "package", "reason", "review_by")
ADVISORY_ID = re.compile(
    r"^(PYSEC-\d{4}-\d+|GHSA(-[23456789cfghjmpqrvwx]{4}){3}|CVE-\d{4}-\d{4,})$"
)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_packages() -> set[str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {normalize(p["name"]) for p in lock["package"]}


def load_ignores(path: Path, today: dt.date) -> list[dict]:
    """The ignore file's entries; an invalid one raises ValueError naming file, entry, key."""
    try:
        entries = tomllib.loads(path.read_text()).get("ignore", [])
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path.name}: not valid TOML ({exc})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path.name}: `ignore` must be a list of [[ignore]] tables")
    known = locked_packages()
    for n, entry in enumerate(entries, 1):
        where = f"{path.name}: [[ignore]] #{n}"
        if not isinstance(entry, dict) or set(entry) != set(IGNORE_KEYS):
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"{where}: keys must be exactly {', '.join(IGNORE_KEYS)}; got {got}")
        if not isinstance(entry["id"], str) or not ADVISORY_ID.match(entry["id"]):
            raise ValueError(f"{where}: id={entry['id']!r}: expected PYSEC-, GHSA- or CVE- ID")
        if not isinstance(entry["package"], str) or normalize(entry["package"]) not in known:
            raise ValueError(f"{where}: package={entry['package']!r}: not a package in uv.lock")
        if not isinstance(entry["reason"], str) or len(entry["reason"].split()) < 5:
            raise ValueError(f"{where}: reason: expected a sentence saying why it is accepted")
        review = entry["review_by"]
        if not isinstance(review, dt.date) or isinstance(review, dt.datetime):
            raise ValueError(f"{where}: review_by={review!r}: expected a TOML date, 2027-03-01")
        if review < today:
            raise ValueError(f"{where}: review_by={review}: past; review {entry['id']} again")
    return entries


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


# --- the ignore file, checked everywhere -------------------------------------------------


def test_ignore_file_entries_are_complete_and_not_past_review() -> None:
    load_ignores(IGNORE_FILE, today_utc())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[ignore]]\nid = "GHSA-29mw-wpgm-hmr9"\npackage = "idna"\nreview_by = 2099-01-01\n',
         "keys must be exactly id, package, reason, review_by"),
        ('[[ignore]]\nid = "BAD-1"\npackage = "idna"\nreason = "not reachable from our code"\n'
         "review_by = 2099-01-01\n", "id='BAD-1'"),
        ('[[ignore]]\nid = "PYSEC-2024-1"\npackage = "nosuchpkg"\n'
         'reason = "not reachable from our code"\nreview_by = 2099-01-01\n',
         "package='nosuchpkg': not a package in uv.lock"),
        ('[[ignore]]\nid = "CVE-2024-3651"\npackage = "idna"\nreason = "fine"\n'
         "review_by = 2099-01-01\n", "reason:"),
        ('[[ignore]]\nid = "CVE-2024-3651"\npackage = "idna"\n'
         'reason = "not reachable from our code"\nreview_by = "soon"\n', "review_by='soon'"),
        ('[[ignore]]\nid = "CVE-2024-3651"\npackage = "idna"\n'
         'reason = "not reachable from our code"\nreview_by = 2026-11-30\n',
         "review_by=2026-11-30: past"),
    ],
)
def test_ignore_file_validation_rejects_a_bad_entry(tmp_path: Path, body: str, message: str):
    bad = tmp_path / ".pip-audit-ignore.toml"
    bad.write_text(body)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_ignores(bad, dt.date(2026, 12, 1))
    # The same entry with every key right is accepted.
    good = ('[[ignore]]\nid = "CVE-2024-3651"\npackage = "idna"\n'
            'reason = "not reachable from our code"\nreview_by = 2026-12-01\n')
    bad.write_text(good)
    assert load_ignores(bad, dt.date(2026, 12, 1))[0]["package"] == "idna"


# --- the audit, where its service answers -------------------------------------------------


def service_unreachable() -> str:
    """Why the vulnerability service cannot be used from here, or "" when it answers."""
    try:
        ctx = ssl.create_default_context()
        with urllib.request.urlopen(PROBE_URL, timeout=5, context=ctx) as resp:
            body = json.loads(resp.read())
        if resp.status == 200 and body.get("vulnerabilities"):
            return ""
        return f"{PROBE_URL} answered {resp.status} without the release's advisories"
    except Exception as exc:  # any failure to get an answer means "not audited"
        return f"{PROBE_URL}: {type(exc).__name__}: {exc}"


@pytest.fixture(scope="module")
def service() -> None:
    reason = service_unreachable()
    if not reason:
        return
    message = (
        f"DEPENDENCY AUDIT NOT RUN: pip-audit's vulnerability service ({SERVICE}) is "
        f"unreachable ({reason}). Nothing was audited; this is not a pass."
    )
    if os.environ.get("PRODSTACK_AUDIT_REQUIRED") == "1":
        pytest.fail(message)
    pytest.skip(message)


def pip_audit(requirements: Path) -> tuple[int, list[dict], str]:
    binary = shutil.which("pip-audit")
    assert binary, "pip-audit is not on PATH: run the tests with `uv run` after scripts/setup.sh"
    result = subprocess.run(
        [binary, "--requirement", str(requirements), "--disable-pip", "--no-deps", "--strict",
         "--vulnerability-service", "pypi", "--format", "json", "--aliases", "on",
         "--progress-spinner", "off", "--timeout", "30"],
        capture_output=True, text=True, timeout=600,
    )
    try:
        deps = json.loads(result.stdout)["dependencies"]
    except (json.JSONDecodeError, KeyError):
        deps = []
    return result.returncode, deps, result.stderr


def unaccepted(deps: list[dict], ignores: list[dict]) -> list[str]:
    accepted = {(normalize(e["package"]), e["id"]) for e in ignores}
    found = []
    for dep in deps:
        for vuln in dep.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            if not any((normalize(dep["name"]), i) in accepted for i in ids):
                found.append(f"{dep['name']}=={dep['version']}: {vuln['id']} "
                             f"(fixed in {', '.join(vuln['fix_versions']) or 'no release'})")
    return found


def lock_export(tmp_path: Path) -> Path:
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is not on PATH"
    out = tmp_path / "uv-lock-export.txt"
    subprocess.run(
        [uv, "export", "--frozen", "--all-groups", "--no-emit-project",
         "--format", "requirements.txt", "--output-file", str(out)],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    return out


@pytest.mark.parametrize("source", ["app/requirements.txt", "uv.lock"])
def test_locked_dependencies_have_no_unaccepted_vulnerability(service, tmp_path, source):
    requirements = APP_REQUIREMENTS if source == "app/requirements.txt" else lock_export(tmp_path)
    status, deps, stderr = pip_audit(requirements)
    assert deps, f"pip-audit produced no report for {source}: {stderr}"
    assert all("skip_reason" not in d for d in deps), [d for d in deps if "skip_reason" in d]
    found = unaccepted(deps, load_ignores(IGNORE_FILE, today_utc()))
    assert not found, f"{source}: known vulnerabilities not in {IGNORE_FILE.name}: {found}"
    # Any other non-zero exit is pip-audit itself failing, not an accepted finding.
    assert status == 0 or any(d.get("vulns") for d in deps), stderr


def test_audit_fails_on_a_planted_vulnerable_pin(service, tmp_path: Path) -> None:
    """Jinja2 2.10 has published advisories (CVE-2019-10906, sandbox escape), so an audit
    that reports nothing here is not looking."""
    planted = tmp_path / "requirements.txt"
    planted.write_text("jinja2==2.10\n")
    status, deps, stderr = pip_audit(planted)
    assert status == 1, stderr
    found = unaccepted(deps, [])
    assert any(f.startswith("jinja2==2.10: ") for f in found), deps
