"""The `prodstack` command as a user runs it: real processes, exit codes, stdout and stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prodstack import planfile
from prodstack.cloud_plan import REPO
from tests.plan.conftest import checkout_copy

# The console script `uv run prodstack` runs (`python -m` would import a checkout in cwd).
PRODSTACK = str(Path(sys.executable).with_name("prodstack"))


def prodstack(*args: str, cwd: Path = REPO, env: dict | None = None):
    return subprocess.run([PRODSTACK, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})  # fmt: skip


def one_line_error(proc, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    # Progress may come first (what the command was doing); the error is one line, last.
    *doing, error = proc.stderr.strip().splitlines()
    assert all(PROGRESS.match(line) for line in doing), proc.stderr
    for fragment in fragments:
        assert fragment in error, error
    return error


PROGRESS = re.compile(r"prodstack: (planning |stack \S+( at size \w+)?: inputs unchanged)")


@pytest.mark.parametrize("command", ["plan", "diff", "cost", "choose", "check-image", "rollback",
                                     "comment"])
def test_every_subcommand_has_help_with_examples(command):
    proc = prodstack(command, "--help")
    assert proc.returncode == 0
    assert "examples:" in proc.stdout and f"prodstack {command}" in proc.stdout


def test_no_command_and_unknown_flag_are_usage_errors():
    assert prodstack().returncode == 2
    one_line_error(prodstack("plan", "--stack", "prod", "--bogus"), "unrecognized arguments")


@pytest.fixture
def tiny_plan(tmp_path) -> Path:
    path = tmp_path / "tiny.json"
    planfile.write(planfile.new_plan("cloud", "prod"), path)
    return path


def test_corrupt_plan_file(tmp_path, tiny_plan):
    broken = tmp_path / "broken.json"
    broken.write_text(tiny_plan.read_text()[:40])
    one_line_error(prodstack("diff", str(broken), str(tiny_plan)), str(broken),
                   "corrupt plan file")


def test_foreign_plan_file(tmp_path, tiny_plan):
    foreign = tmp_path / "terraform.json"
    foreign.write_text(json.dumps({"format_version": "1.2", "resource_changes": []}))
    one_line_error(prodstack("diff", str(tiny_plan), str(foreign)), str(foreign),
                   "not a prodstack plan")


def test_plan_file_with_a_malformed_resource(tmp_path, tiny_plan):
    bad = tmp_path / "bad.json"
    plan = planfile.new_plan("cloud", "prod")
    plan["resources"] = [{"id": "x"}]
    bad.write_text(json.dumps(plan))
    one_line_error(prodstack("diff", str(tiny_plan), str(bad)), "resources[0]", "`type`")


def test_missing_plan_file():
    one_line_error(prodstack("cost", "--plan", "/nonexistent/plan.json"), "no such plan file")


def test_unwritable_output_file():
    one_line_error(prodstack("plan", "--profile", "vps", "-o", "/nonexistent/dir/plan.json"),
                   "/nonexistent/dir/plan.json", "cannot write")


def test_secrets_never_go_on_the_command_line():
    line = one_line_error(prodstack("plan", "--stack", "prod", "--config",
                                    "api_token=Zq9xZq9xZq9xZq9xZq9xZq9xZq9xZq9x12"),
                          "--config api_token", "pulumi config set --secret")
    assert "Zq9x" not in line


def test_a_plaintext_secret_in_a_stack_file_is_refused_and_never_echoed(tmp_path):
    root = checkout_copy(tmp_path / "root")
    stack_file = root / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text() + "  prodstack:api_token: Zq9xZq9xZq9xZq9xZq9x\n")
    line = one_line_error(prodstack("plan", "--stack", "dev", "--root", str(root)),
                          "Pulumi.dev.yaml", "prodstack:api_token", "plain text")
    assert "Zq9x" not in line


def test_a_broken_program_is_one_line_naming_the_file(tmp_path):
    root = checkout_copy(tmp_path / "root")
    program = root / "stacks" / "program.py"
    program.write_text(program.read_text().replace(
        '    """Create the whole stack from a validated config; returns the stack outputs."""',
        '    """Create the whole stack from a validated config; returns the stack outputs."""\n'
        '    raise RuntimeError("boom")', 1))
    one_line_error(prodstack("plan", "--stack", "dev", "--root", str(root)),
                   "the Pulumi program failed", "stacks/program.py:", "RuntimeError: boom")


def test_unknown_stack():
    one_line_error(prodstack("plan", "--stack", "staging"), "--stack staging", "unknown stack",
                   "dev, prod")


def test_config_error_names_the_key():
    line = one_line_error(prodstack("plan", "--stack", "dev", "--config", "replicas=0"),
                          "Pulumi.dev.yaml", "invalid configuration", "prodstack:replicas")
    assert line.count("prodstack:replicas") >= 1


def test_unknown_config_key():
    one_line_error(prodstack("plan", "--stack", "dev", "--config", "replica=2"),
                   "--config replica", "unknown key")


def test_profile_mismatch_is_refused():
    one_line_error(prodstack("plan", "--stack", "prod", "--data", "size=small"),
                   "--data is for --profile vps")


def test_vps_data_errors_name_the_key():
    one_line_error(prodstack("plan", "--profile", "vps", "--data", "szie=large"), "szie")
    one_line_error(prodstack("plan", "--profile", "vps", "--data", "size=huge"), "size")


def test_missing_git_ref():
    one_line_error(prodstack("diff", "--base", "no-such-branch", "--head", "HEAD",
                             "--stack", "prod"), "--base no-such-branch", "no such git ref")


def test_fail_on_exits_1_only_when_blocking(cloud_plan_files):
    risky = prodstack("diff", str(cloud_plan_files["prod"]), str(cloud_plan_files["prod-vpc-cidr"]),
                      "--fail-on", "risk")
    assert risky.returncode == 1 and "blocking" in risky.stderr and "VPC" in risky.stdout
    calm = prodstack("diff", str(cloud_plan_files["prod"]), str(cloud_plan_files["prod-replicas"]),
                     "--fail-on", "risk,policy")
    assert calm.returncode == 0, calm.stderr
    one_line_error(prodstack("diff", str(cloud_plan_files["prod"]),
                             str(cloud_plan_files["prod"]), "--fail-on", "everything"),
                   "--fail-on everything")


def test_diff_json_and_full_file(tmp_path, cloud_plan_files):
    full = tmp_path / "full.md"
    proc = prodstack("diff", str(cloud_plan_files["dev"]), str(cloud_plan_files["prod"]),
                     "--max-chars", "20000", "--full", str(full))
    assert proc.returncode == 0 and len(proc.stdout) <= 20000
    assert len(full.read_text()) > 20000 and "left out" not in full.read_text()
    as_json = prodstack("diff", str(cloud_plan_files["dev"]), str(cloud_plan_files["prod"]),
                        "--format", "json")
    data = json.loads(as_json.stdout)
    assert data["format"] == "prodstack.diff" and data["cost"]["after"] > data["cost"]["before"]


def test_plan_is_byte_identical_across_processes_hash_seeds_and_time_zones(tmp_path):
    outputs = []
    for seed, tz in (("1", "UTC"), ("4242", "Pacific/Kiritimati")):
        out = tmp_path / f"plan-{seed}.json"
        proc = prodstack("plan", "--stack", "prod", "-o", str(out),
                         env={"PYTHONHASHSEED": seed, "TZ": tz})  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("### prodstack plan: cloud stack `prod`")
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_plan_is_identical_twice_in_one_process():
    script = (
        "from prodstack import cloud_plan, planfile\n"
        "a = planfile.dumps(cloud_plan.plan_cloud('dev'))\n"
        "b = planfile.dumps(cloud_plan.plan_cloud('dev'))\n"
        "print(a == b, len(a))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    same, size = proc.stdout.split()
    assert same == "True" and int(size) > 10_000


def test_diff_of_git_refs_plans_both_worktrees_and_cleans_up(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(repo)], check=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    stack_file = repo / "Pulumi.prod.yaml"
    stack_file.write_text(stack_file.read_text().replace(
        "prodstack:backup_retention_days: 30", "prodstack:backup_retention_days: 14"))
    (repo / "Pulumi.staging.yaml").write_text((repo / "Pulumi.dev.yaml").read_text())
    subprocess.run([*git, "add", "Pulumi.staging.yaml"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-am", "two weeks of backups; staging"],
                   check=True)  # fmt: skip
    proc = prodstack("diff", "--base", "HEAD~1", "--head", "HEAD", "--stack", "prod", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "`backupRetentionPeriod`: `30` → `14`" in proc.stdout
    assert "| cloud stack `prod` | 0 | 1 | 0 | 0 | 0 | 0 |" in proc.stdout  # one change
    # A stack the base doesn't have yet is all additions.
    new = prodstack("diff", "--base", "HEAD~1", "--head", "HEAD", "--stack", "staging",
                    "--format", "json", cwd=repo)
    assert new.returncode == 0, new.stderr
    assert "has no Pulumi.staging.yaml" in new.stderr
    summary = json.loads(new.stdout)["summary"]
    assert summary["add"] > 50 and summary["remove"] == summary["update"] == 0
    worktrees = subprocess.run([*git, "worktree", "list"], capture_output=True, text=True)
    assert len(worktrees.stdout.strip().splitlines()) == 1, worktrees.stdout


@pytest.mark.parametrize("value", ["vps", "vps:huge", "gcp:small"])
def test_choose_refuses_a_bad_current_before_planning(value):
    proc = prodstack("choose", "--current", value)
    one_line_error(proc, f"--current '{value}'", "cloud | vps", "small | medium | large")
    assert "planning" not in proc.stderr


def test_choose_help_shows_current():
    proc = prodstack("choose", "--help")
    assert "--current PROFILE:SIZE" in proc.stdout
    assert "prodstack choose --current vps:medium" in proc.stdout
