"""No secret in a VPS plan, a diff or a pull-request comment. Each way a credential can
reach the planner is planted for real (a `--data` flag, a group_data file committed to
git, the secrets file) and the `prodstack` command is run as a user runs it; every output
it writes is then searched for the token. Credentials given as data exit 2 naming the key;
a secret from the secrets file shows only as `[secret:NAME@VERSION]`. plan.yml's whole
comment is searched in tests/workflows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from prodstack import planfile
from prodstack.cloud_plan import REPO
from tests.plan.test_cli import one_line_error, prodstack
from tests.plan.test_vps_plan import copy_checkout, files

TOKEN = "SECRETTOKEN"
WEBHOOK = f"https://hooks.slack.com/services/T000/B000/{TOKEN}"
ALERTMANAGER = "/etc/prometheus/alertmanager.yml"


def outputs_of(*procs, paths=()) -> str:
    """Everything the commands printed and every file they wrote."""
    texts = [p.stdout + p.stderr for p in procs]
    texts += [Path(p).read_text() for p in paths if Path(p).exists()]
    return "\n".join(texts)


# --- Credentials as data: exit 2, naming the key, never the value --------------------------


@pytest.mark.parametrize(
    ("item", "key"),
    [
        (f"alert_webhook_url={WEBHOOK}", "alert_webhook_url"),
        (f"alert_heartbeat_url=https://hc-ping.com/{TOKEN}", "alert_heartbeat_url"),
        # Quotes and a newline: the value pyinfra parses is a string that would end a quoted
        # string in a config file.
        (f'POSTGRES_PASSWORD="{TOKEN}"\n  x: "y', "POSTGRES_PASSWORD"),
        (f"domain=https://ops:{TOKEN}@example.com", "domain"),
    ],
    ids=["webhook", "heartbeat", "password-hostile", "url-userinfo"],
)
def test_a_credential_in_a_data_flag_exits_2_naming_the_key(tmp_path, item, key):
    out = tmp_path / "plan.json"
    plan = prodstack("plan", "--profile", "vps", "--data", item, "-o", str(out))
    one_line_error(plan, f"invalid configuration: {key}: (value not shown) is invalid")
    as_json = prodstack("plan", "--profile", "vps", "--data", item, "--format", "json")
    one_line_error(as_json, f"{key}: (value not shown)")
    cost = prodstack("cost", "--profile", "vps", "--data", item)
    one_line_error(cost, f"{key}: (value not shown)")
    assert not out.exists()
    assert TOKEN not in outputs_of(plan, as_json, cost)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                    *args], check=True, capture_output=True)  # fmt: skip


@pytest.mark.parametrize(
    ("group_file", "line", "key"),
    [
        ("all.py", f'alert_webhook_url = "{WEBHOOK}"', "alert_webhook_url"),
        ("web.py", f'alert_webhook_url = "{WEBHOOK}"', "alert_webhook_url"),
        # Set, and (before this check) silently unused: the deploy reads secrets only.
        ("all.py", f'POSTGRES_PASSWORD = "{TOKEN}\\"\\n\'"', "POSTGRES_PASSWORD"),
    ],
    ids=["all-webhook", "web-webhook", "all-postgres-password-hostile"],
)
def test_a_credential_committed_to_group_data_fails_the_diff_naming_the_key(
    tmp_path, group_file, line, key
):
    """What plan.yml runs on a pull request: `diff --base --head` of two commits, with a
    cut comment (`--max-chars`) and the full diff (`--full`)."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(repo)], check=True)
    path = repo / "pyinfra" / "group_data" / group_file
    path.write_text((path.read_text() if path.exists() else "") + line + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "a credential as data")
    full = tmp_path / "full.md"
    proc = prodstack("diff", "--base", "HEAD~1", "--head", "HEAD", "--profile", "vps",
                     "--max-chars", "4000", "--full", str(full), cwd=repo)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and not full.exists()
    assert (f"--head HEAD: invalid configuration: {key}: (value not shown) is invalid"
            in proc.stderr)
    assert TOKEN not in outputs_of(proc)
    # The same data through the real deploy's validation, as `pyinfra deploy.py` runs it.
    plan = prodstack("plan", "--profile", "vps", "--root", str(repo))
    one_line_error(plan, f"{key}: (value not shown)")
    assert TOKEN not in outputs_of(plan)


# --- Secrets from the secrets file: only a version --------------------------------------------

HOSTILE_SMTP = "pa\"ss'w\\ord: {x} # y"  # the file holds one line; quotes and YAML in it


def secrets_file(root: Path, webhook_token: str) -> None:
    (root / "pyinfra" / "secrets.env").write_text(
        f"ALERT_WEBHOOK_URL=https://hooks.slack.com/services/T000/B000/{webhook_token}\n"
        f"ALERT_SMTP_PASSWORD={HOSTILE_SMTP}\n"
    )


def test_a_webhook_in_the_secrets_file_is_planned_as_a_versioned_secret(tmp_path):
    root = copy_checkout(tmp_path)
    smtp = ["--data", "alert_email=ops@example.com",
            "--data", "alert_smarthost=smtp.example.com:587",
            "--data", "alert_smarthost_user=ops"]  # fmt: skip
    plans = {}
    procs = []
    for side, token in (("base", TOKEN + "A"), ("head", TOKEN + "B")):
        secrets_file(root, token)
        out = tmp_path / f"{side}.json"
        proc = prodstack("plan", "--profile", "vps", "--root", str(root), *smtp, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        procs.append(proc)
        plans[side] = out
    full = tmp_path / "full.md"
    diff = prodstack("diff", str(plans["base"]), str(plans["head"]), "--max-chars", "4000",
                     "--full", str(full))  # fmt: skip
    diff_json = prodstack("diff", str(plans["base"]), str(plans["head"]), "--format", "json")
    assert diff.returncode == 0 and diff_json.returncode == 0, diff.stderr + diff_json.stderr
    everything = outputs_of(*procs, diff, diff_json, paths=[*plans.values(), full])
    assert TOKEN not in everything
    assert HOSTILE_SMTP not in everything and "w\\ord" not in everything

    # The plan shows the receiver the deploy configures, in Slack's format, redacted.
    base = planfile.load(plans["base"])
    config = yaml.safe_load(files(base)[ALERTMANAGER])
    webhook = planfile.value_version("ALERT_WEBHOOK_URL", WEBHOOK.replace(TOKEN, TOKEN + "A"))
    people = next(r for r in config["receivers"] if r["name"] == "people")
    assert people["slack_configs"][0]["api_url"] == f"[secret:ALERT_WEBHOOK_URL@{webhook}]"
    smtp_version = planfile.value_version("ALERT_SMTP_PASSWORD", HOSTILE_SMTP)
    assert config["global"]["smtp_auth_password"] == f"[secret:ALERT_SMTP_PASSWORD@{smtp_version}]"

    # A changed secret is a change, shown only as one.
    assert f"`{ALERTMANAGER}`" in diff.stdout or ALERTMANAGER in diff.stdout
    assert "`content`: secret changed" in diff.stdout
    assert "restarts prometheus-alertmanager.service" in diff.stdout
    changed = json.loads(diff_json.stdout)
    assert changed["summary"]["update"] == 1


@pytest.mark.parametrize("url", [f'https://hooks.slack.com/services/T0/B0/{TOKEN}"x',
                                 f"https://u:{TOKEN}@hooks.example.com/x"])
def test_a_hostile_webhook_in_the_secrets_file_exits_2_naming_the_secret(tmp_path, url):
    root = copy_checkout(tmp_path)
    (root / "pyinfra" / "secrets.env").write_text(f"ALERT_WEBHOOK_URL={url}\n")
    proc = prodstack("plan", "--profile", "vps", "--root", str(root))
    one_line_error(proc, "ALERT_WEBHOOK_URL: (value not shown) is invalid")
    assert TOKEN not in outputs_of(proc)


def test_a_webhook_in_the_environment_is_redacted_too(tmp_path):
    root = copy_checkout(tmp_path)
    proc = prodstack("plan", "--profile", "vps", "--root", str(root), "--format", "json",
                     env={"PRODSTACK_ALERT_WEBHOOK_URL": WEBHOOK})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in outputs_of(proc)
    assert "[secret:ALERT_WEBHOOK_URL@" in proc.stdout
