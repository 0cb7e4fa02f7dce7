"""`prodstack rollback` and the stack-file editor, as a user runs them.

ECR is moto's server over HTTP on loopback; the Pulumi CLI is absent here, so the
`pulumi config set` path is checked against a stand-in `pulumi` on PATH that records its
arguments (the command line is what this code owns).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from prodstack.errors import UsageError
from prodstack.release import set_stack_config
from tests.plan.conftest import checkout_copy
from tests.plan.test_cli import PRODSTACK, REPO, one_line_error
from tests.support.moto import moto_server

DIGEST = "sha256:" + "ab" * 32
ACCOUNT = "123456789012"  # moto's account
REPOSITORY = "prodstack-registry-repo-1a2b3c4"
URL = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/{REPOSITORY}"
# No credentials from anywhere: files, environment, or the instance metadata service.
NO_AWS = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
          "AWS_EC2_METADATA_DISABLED": "true",
          "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}  # fmt: skip


def prodstack(*args: str, cwd: Path = REPO, env: dict | None = None):
    """The CLI with this environment minus any AWS settings of the machine's, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([PRODSTACK, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**base, **(env or {})})  # fmt: skip

STACK_FILE = """\
# Production. Comments, order and quoting must survive an edit.
config:
  aws:region: eu-west-1
  prodstack:size: large   # docs/targets.md's large
  prodstack:replicas: "3"
  # the image, when pinned:
  prodstack:image: old-value  # pinned by a rollback
  prodstack:api_token:
    secure: v1:abc
"""


# ---- the editor ------------------------------------------------------------------------

def test_editor_changes_only_the_keys_line_and_keeps_its_comment(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(STACK_FILE)
    assert set_stack_config(path, "prodstack:image", f"{URL}:src-1@{DIGEST}") is True
    old, new = STACK_FILE.splitlines(), path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert changed == [("  prodstack:image: old-value  # pinned by a rollback",
                        f"  prodstack:image: {URL}:src-1@{DIGEST}  # pinned by a rollback")]
    # The same value again changes nothing.
    assert set_stack_config(path, "prodstack:image", f"{URL}:src-1@{DIGEST}") is False


def test_editor_adds_a_missing_key_as_one_line_at_the_end_of_config(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(STACK_FILE + "# trailing comment\n")
    set_stack_config(path, "prodstack:restore_from", "rds:prodstack-final-2026-12-01")
    lines = path.read_text().splitlines()
    assert len(lines) == len(STACK_FILE.splitlines()) + 2
    # After the last entry (the secret's nested line), before the trailing comment.
    assert lines[-2] == "  prodstack:restore_from: rds:prodstack-final-2026-12-01"
    assert lines[-1] == "# trailing comment"


@pytest.mark.parametrize("value", [
    "has: colon-space", "with # hash", "'quoted'", '"double"', "yes", "null", "~", "",
    "- dash", "[list]", "{map}", "*alias", "&anchor", "!tag", "%x", "@at", "`tick`",
    "x" * 5000, "trailing space ", "ünïcödé",
])
def test_editor_writes_any_one_line_value_so_it_reads_back_the_same(tmp_path, value):
    import yaml

    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(STACK_FILE)
    set_stack_config(path, "prodstack:image", value)
    assert yaml.safe_load(path.read_text())["config"]["prodstack:image"] == value


@pytest.mark.parametrize("key, value, fragment", [
    ("prodstack:image", "a\nprodstack:teardown: true", "one line"),
    ("prodstack:image", "a\rb", "one line"),
    ("prodstack:image", "a\x00b", "one line"),
    ("prodstack:api_token", "plain", "not a one-line value"),  # a secure: mapping
    ("image\nx", "v", "not a config key"),
    ("prodstack:", "v", "not a config key"),
])
def test_editor_refuses_and_leaves_the_file_alone(tmp_path, key, value, fragment):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(STACK_FILE)
    with pytest.raises(UsageError, match=fragment):
        set_stack_config(path, key, value)
    assert path.read_text() == STACK_FILE


def test_editor_refuses_a_layout_it_cannot_edit_by_line(tmp_path):
    """A flow-style `config: {...}` has no line per key: a line edit would add a second
    `config:` and lose the first. Reading the result back catches it."""
    path = tmp_path / "Pulumi.prod.yaml"
    text = 'config: {"aws:region": eu-west-1, "prodstack:size": large}\n'
    path.write_text(text)
    with pytest.raises(UsageError, match="without changing other settings"):
        set_stack_config(path, "prodstack:image", "v")
    assert path.read_text() == text


def test_editor_keeps_the_file_mode(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(STACK_FILE)
    path.chmod(0o640)
    set_stack_config(path, "prodstack:image", "v")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# ---- rollback, cloud -------------------------------------------------------------------

@pytest.fixture
def copy(tmp_path) -> Path:
    return checkout_copy(tmp_path / "copy")


def test_rollback_without_credentials_takes_the_digest_and_edits_one_line(copy):
    before = (copy / "Pulumi.prod.yaml").read_text()
    proc = prodstack("rollback", "--stack", "prod", "--to", "src-0123456789abcdef", "--digest",
                     DIGEST, "--repository", URL, "--format", "json", cwd=copy, env=NO_AWS)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    ref = f"{URL}:src-0123456789abcdef@{DIGEST}"
    assert result["image"] == ref and result["next"] == "pulumi up --stack prod"
    after = (copy / "Pulumi.prod.yaml").read_text()
    assert after.splitlines() == before.splitlines() + [f"  prodstack:image: {ref}"]
    # A second rollback to another version rewrites that same line, and nothing else;
    # the repository now comes from the stack's own `image`.
    again = prodstack("rollback", "--stack", "prod", "--to", "v1.4.2", "--digest",
                      "sha256:" + "cd" * 32, cwd=copy, env=NO_AWS)
    assert again.returncode == 0, again.stderr
    assert "pulumi up --stack prod" in again.stdout
    assert (copy / "Pulumi.prod.yaml").read_text().splitlines() == before.splitlines() + [
        f"  prodstack:image: {URL}:v1.4.2@sha256:{'cd' * 32}"]


@pytest.mark.parametrize("args, fragment", [
    (("--to", "src-1"), "--digest: no AWS credentials"),
    (("--to", "src-1", "--digest", "sha256:abc"), "--digest 'sha256:abc': expected sha256:<64"),
    (("--to", "bad tag", "--digest", DIGEST), "--to 'bad tag'"),
    (("--digest", DIGEST), "--to VERSION: required"),
    (("--to", "src-1", "--digest", DIGEST, "--repository", "docker.io/x"), "--repository"),
    (("--to", "src-1", "--digest", DIGEST, "--repository", URL, "-i", "inv.py"),
     "--inventory: only with --profile vps"),
])
def test_rollback_refuses_bad_input_in_one_line(copy, args, fragment):
    before = (copy / "Pulumi.prod.yaml").read_text()
    repository = () if "--repository" in args else ("--repository", URL)
    proc = prodstack("rollback", "--stack", "prod", *repository, *args, cwd=copy, env=NO_AWS)
    one_line_error(proc, fragment)
    assert (copy / "Pulumi.prod.yaml").read_text() == before


def test_rollback_without_a_known_repository_says_to_pass_one(copy):
    proc = prodstack("rollback", "--stack", "prod", "--to", "src-1", "--digest", DIGEST,
                     cwd=copy, env=NO_AWS)
    one_line_error(proc, "--repository", "pulumi stack output image")


def test_rollback_goes_through_pulumi_config_set_when_the_cli_is_installed(copy, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.json"
    fake = bin_dir / "pulumi"
    record = "json.dumps([os.getcwd(), sys.argv[1:]]) + '\\n'"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"open({str(calls)!r}, 'a').write({record})\n")
    fake.chmod(0o755)
    before = (copy / "Pulumi.prod.yaml").read_text()
    env = {**NO_AWS, "PATH": f"{bin_dir}:{NO_AWS['PATH']}"}
    proc = prodstack("rollback", "--stack", "prod", "--to", "src-1", "--digest", DIGEST,
                     "--repository", URL, cwd=copy, env=env)
    assert proc.returncode == 0, proc.stderr
    (cwd, argv), = [json.loads(line) for line in calls.read_text().splitlines()]
    assert Path(cwd) == copy
    assert argv == ["config", "set", "--stack", "prod", "prodstack:image", f"{URL}:src-1@{DIGEST}"]
    assert (copy / "Pulumi.prod.yaml").read_text() == before  # the CLI owns the file then


def refused(proc, fragment: str) -> None:
    """Exit 2, nothing on stdout, and the error as the last line (progress may precede it)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert fragment in proc.stderr.strip().splitlines()[-1], proc.stderr


@pytest.fixture(scope="module")
def ecr(tmp_path_factory):
    """moto's server on loopback, with one repository holding two tagged images."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield _ecr_images(url)


def _ecr_images(url: str):
    import boto3

    client = boto3.client("ecr", endpoint_url=url, region_name="eu-west-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_repository(repositoryName=REPOSITORY)
    digests = {}
    for tag in ("src-1111111111111111", "src-2222222222222222"):
        manifest = json.dumps({"schemaVersion": 2, "config": {"digest": tag}, "layers": [],
                               "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
        image = client.put_image(repositoryName=REPOSITORY, imageManifest=manifest,
                                 imageTag=tag)["image"]  # fmt: skip
        digests[tag] = image["imageId"]["imageDigest"]
    env = {**NO_AWS, "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    return env, digests


def test_rollback_with_credentials_resolves_the_version_in_ecr(copy, ecr):
    env, digests = ecr
    proc = prodstack("rollback", "--stack", "prod", "--to", "src-1111111111111111",
                     "--repository", URL, "--format", "json", cwd=copy, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "DescribeImages" in proc.stderr
    digest = digests["src-1111111111111111"]
    assert digest.startswith("sha256:") and json.loads(proc.stdout)["digest"] == digest
    assert f"prodstack:image: {URL}:src-1111111111111111@{digest}" in (
        copy / "Pulumi.prod.yaml").read_text()


@pytest.mark.parametrize("args, fragment", [
    (("--to", "src-9999999999999999"), "no image with that tag"),
    (("--to", "src-1111111111111111", "--digest", DIGEST), "ECR says src-1111111111111111 is"),
])
def test_rollback_refuses_what_ecr_contradicts(copy, ecr, args, fragment):
    env, _ = ecr
    proc = prodstack("rollback", "--stack", "prod", "--repository", URL, *args, cwd=copy,
                     env=env)
    refused(proc, fragment)


def test_rollback_names_a_missing_repository(copy, ecr):
    env, _ = ecr
    proc = prodstack("rollback", "--stack", "prod", "--to", "src-1111111111111111",
                     "--repository", f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/nope",
                     cwd=copy, env=env)
    refused(proc, "no such ECR repository")


# ---- rollback, VPS ---------------------------------------------------------------------

def test_vps_rollback_is_handed_to_the_vps_release_module(tmp_path, monkeypatch):
    """The verb's contract with prodstack.vps_release: rollback(inventory=, to=, host=);
    that module's own tests run the real pyinfra rollback behind it."""
    from prodstack import cli, vps_release

    seen = {}
    monkeypatch.setattr(vps_release, "rollback", lambda **kwargs: seen.update(kwargs) or 0)
    inventory = tmp_path / "inventory.py"
    inventory.write_text("web = ['10.0.0.1']\n")
    assert cli.main(["rollback", "--profile", "vps", "-i", str(inventory), "--to",
                     "src-1111111111111111", "--host", "web-1"]) == 0
    assert seen == {"inventory": inventory, "to": "src-1111111111111111", "host": "web-1"}


@pytest.mark.parametrize("args, fragment", [
    (("--profile", "vps"), "rollback --profile vps needs -i INVENTORY"),
    (("--profile", "vps", "-i", "/nonexistent/inv.py"), "no such inventory file"),
    (("--profile", "vps", "-i", "x.py", "--stack", "prod"), "cloud only"),
])
def test_vps_rollback_refuses_bad_usage(args, fragment):
    one_line_error(prodstack("rollback", *args, env=NO_AWS), fragment)


def test_build_and_rollback_have_help_with_examples():
    for command in ("build", "rollback"):
        proc = prodstack(command, "--help")
        assert proc.returncode == 0 and "examples:" in proc.stdout, proc.stderr
    assert os.access(Path(sys.executable).with_name("prodstack"), os.X_OK)
