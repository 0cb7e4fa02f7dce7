"""End to end: the release history on the session's shared host (conftest.py's `stack`).

Four releases are built inside the host from the session's first image (each differs in
APP_VERSION only, so /health names it), deployed with the real pyinfra deploy, rolled back
with the real rollback.py, and read back from `prodstack-release history --json`. Then a
release with a new migration shows a rollback below the schema being refused. Tests run
in order; the host is left serving the session's first image again, as after test_e2e.py.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from prodstack import vps_release
from tests.vps.e2e import PYINFRA_DIR, REPO

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(2400)]

RELEASES = ("rel-a", "rel-b", "rel-c", "rel-d")
FIRST_LEVEL = "0001_create_alerts"
PROBE_LEVEL = "0002_release_probe"
ARCHIVE = "/usr/local/lib/prodstack/prodstack-host.pyz"


def image(version: str) -> str:
    return f"prodstack-api:{version}"


def history(stack) -> list[dict]:
    return json.loads(stack.host.run("prodstack-release history --json").stdout)["releases"]


def image_id(stack, ref: str) -> str | None:
    out = stack.host.run(f"docker image inspect --format '{{{{.Id}}}}' {ref}", check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def journal(stack) -> str:
    return stack.host.run("journalctl -t prodstack-release --no-pager -o cat").stdout


def failed(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-5000:]


def test_three_deploys_are_recorded_with_digest_revision_and_migration_level(stack, images):
    for version in RELEASES:
        dockerfile = f"FROM {images['v1']}\nENV APP_VERSION={version}\n"
        stack.host.run(f"docker build -q -t {image(version)} -", input=dockerfile, timeout=180)
    # Shipped images arrive through `docker load`, which records no parent image: without
    # this round trip each would pin the session's image (a parent cannot be removed), and
    # pruning could not show its effect. test_e2e.py's broken image pins its base likewise.
    refs = " ".join(image(v) for v in RELEASES)
    stack.host.run(f"docker save -o /var/lib/prodstack/releases.tar {refs} && docker rmi {refs}"
                   " && docker load -q -i /var/lib/prodstack/releases.tar && "
                   "rm /var/lib/prodstack/releases.tar", timeout=300)  # fmt: skip
    stack.host.run("docker rmi prodstack-api:broken", check=False)
    before = len(history(stack))
    # A host of an earlier version had each tool as its own file at the command's path: the
    # next deploy replaces it with the link to the one archive.
    stack.host.run(f"cp --remove-destination {ARCHIVE} /usr/local/sbin/prodstack-release")
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
    for version in RELEASES[:3]:
        result = stack.pyinfra(image=image(version))
        assert result.returncode == 0, failed(result)
        assert stack.version() == version
    for name in ("prodstack-release", "prodstack-audit", "prodstack-backup"):
        assert stack.host.run(f"readlink /usr/local/sbin/{name}").stdout.strip() == ARCHIVE
    assert stack.host.run(f"stat -c %a {ARCHIVE}").stdout.strip() == "755"
    # The operation name says which release each deploy replaces.
    assert f"Deploy {image('rel-c')}, replacing rel-b (" in result.stdout
    releases = history(stack)[before:]
    assert [(e["version"], e["kind"]) for e in releases] == [
        ("rel-a", "deploy"), ("rel-b", "deploy"), ("rel-c", "deploy")]  # fmt: skip
    assert [e["replaced"] for e in releases[1:]] == ["rel-a", "rel-b"]
    for e in releases:
        assert e["digest"] == image_id(stack, e["image"])  # the image ID, not the tag
        assert e["git_revision"].startswith(revision)
        assert "@" in e["deployed_by"]
        assert e["migration_level"] == FIRST_LEVEL
        assert e["deployed_at"].endswith("Z") and e["retained"] is True
    status = json.loads(stack.host.run("prodstack-release status --json").stdout)
    assert (status["version"], status["rollback_to"]) == ("rel-c", "rel-b")


def test_rollback_twice_stays_on_the_second(stack):
    first = stack.pyinfra("rollback.py")
    assert first.returncode == 0, failed(first)
    assert stack.version() == "rel-b"
    entries = len(history(stack))
    second = stack.pyinfra("rollback.py")
    assert second.returncode == 0, failed(second)
    assert stack.version() == "rel-b"  # not rel-c again, and not further back either
    assert len(history(stack)) == entries
    assert "already rolled back: rel-b serves" in journal(stack)
    last = history(stack)[-1]
    assert (last["version"], last["kind"], last["replaced"]) == ("rel-b", "rollback", "rel-c")
    assert last["migration_level"] == FIRST_LEVEL


def test_rollback_to_the_first(stack, monkeypatch, capfd):
    # Through prodstack's own entry point, as `prodstack rollback --profile vps` runs it.
    for name, value in (("PRODSTACK_HOST", stack.host.address),
                        ("PRODSTACK_SSH_KEY", str(stack.host.key)),
                        ("PRODSTACK_SSH_KNOWN_HOSTS", "/dev/null"),
                        ("PRODSTACK_SSH_USER", stack.ssh_user),
                        ("PRODSTACK_SSH_PORT", str(stack.ssh_port))):  # fmt: skip
        monkeypatch.setenv(name, value)
    assert vps_release.rollback(PYINFRA_DIR / "inventory.py", "rel-a", None) == 0
    out, err = capfd.readouterr()
    assert out == ""  # pyinfra's progress goes to stderr
    assert "Roll back to rel-a" in err
    assert stack.version() == "rel-a"
    last = history(stack)[-1]
    assert (last["version"], last["kind"], last["replaced"]) == ("rel-a", "rollback", "rel-b")


def test_rollback_to_an_unknown_version_is_refused_before_any_change(stack):
    result = stack.pyinfra("rollback.py", rollback_to="no-such-release")
    assert result.returncode != 0
    assert "no-such-release is not in this host's release history" in journal(stack)
    assert stack.version() == "rel-a"
    hostile = stack.pyinfra("rollback.py", rollback_to="rel-a; touch /tmp/pwned")
    assert hostile.returncode != 0
    assert "rollback_to: 'rel-a; touch /tmp/pwned' is invalid" in hostile.stdout
    assert stack.host.run("test -e /tmp/pwned", check=False).returncode == 1


def test_a_fourth_deploy_after_rollback_says_what_it_replaces_and_keeps_three(stack):
    result = stack.pyinfra(image=image("rel-d"), keep_releases=3)
    assert result.returncode == 0, failed(result)
    assert stack.version() == "rel-d"
    assert f"Deploy {image('rel-d')}, replacing rel-a, serving after a rollback (" in result.stdout
    said = journal(stack)
    assert "deploy rel-d (sha256:" in said and ") replaces rel-a (" in said
    assert "note: rel-a serves after a rollback from rel-b; this deploy replaces it with rel-d" \
        in said
    releases = history(stack)
    retained = {e["version"] for e in releases if e["retained"]}
    assert retained == {"rel-d", "rel-a", "rel-b"}  # the newest three to have served
    assert image_id(stack, image("rel-c")) is None
    assert image_id(stack, images_of(releases, "rel-b")) is not None


def images_of(releases: list[dict], version: str) -> str:
    return next(e["image"] for e in reversed(releases) if e["version"] == version)


def test_history_shows_every_deploy_and_rollback(stack):
    rows = [(e["version"], e["kind"]) for e in history(stack)][-6:]
    assert rows == [("rel-a", "deploy"), ("rel-b", "deploy"), ("rel-c", "deploy"),
                    ("rel-b", "rollback"), ("rel-a", "rollback"), ("rel-d", "deploy")]  # fmt: skip
    table = stack.host.run("prodstack-release history").stdout.splitlines()
    assert table[0].split()[:3] == ["version", "kind", "deployed_at"]
    assert table[-1].startswith("*") and "rel-d" in table[-1]
    assert any("rel-c" in line and "(pruned)" in line for line in table)


def test_rollback_below_the_database_schema_is_refused(stack):
    migration = "CREATE TABLE release_probe (id int PRIMARY KEY);"
    dockerfile = (
        f"FROM {image('rel-d')}\nENV APP_VERSION=rel-m\nUSER root\n"
        f"RUN printf '%s\\n' '{migration}' > /srv/app/app/migrations/{PROBE_LEVEL}.sql\n"
        "USER 10001:10001\n"
    )
    stack.host.run(f"docker build -q -t {image('rel-m')} -", input=dockerfile, timeout=180)
    result = stack.pyinfra(image=image("rel-m"), keep_releases=3)
    assert result.returncode == 0, failed(result)
    assert history(stack)[-1]["migration_level"] == PROBE_LEVEL
    refused = stack.pyinfra("rollback.py")
    assert refused.returncode != 0
    assert (f"refused: rel-d was released at migration level {FIRST_LEVEL}, but the database "
            f"is at {PROBE_LEVEL} now") in journal(stack)  # fmt: skip
    assert stack.version() == "rel-m"
    assert history(stack)[-1]["version"] == "rel-m"


def test_host_is_left_serving_the_session_image(stack, images):
    # Deploys are never refused: the session's image runs against the newer schema (one
    # more table), as any fix-forward would.
    result = stack.pyinfra()
    assert result.returncode == 0, failed(result)
    assert stack.version() == "e2e-1"
    assert history(stack)[-1]["image"] == images["v1"]
