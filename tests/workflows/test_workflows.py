"""The GitHub workflows shipped in `.github/workflows/`: linted by actionlint (with its
shellcheck integration), held to their security invariants, and plan.yml's steps run for
real on this machine against two commits of a throwaway repository made from this one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
NAMES = ("ci", "plan", "preview", "deploy")
MARKER = "<!-- prodstack-plan -->"
# GitHub refuses an issue comment longer than this many characters.
GITHUB_COMMENT_LIMIT = 65536

# Every job's permissions, exactly. Widening one (or adding a job without them) fails here.
PERMISSIONS = {
    "ci": {"test": {"contents": "read"}},
    "plan": {"plan": {"contents": "read"}, "comment": {"pull-requests": "write"}},
    "preview": {
        "configured": {"contents": "read"},
        "preview": {"contents": "read", "id-token": "write", "pull-requests": "write"},
    },
    "deploy": {"deploy": {"contents": "read", "id-token": "write"}},
}
# Only least-privilege workflow defaults: nothing, or read-only contents.
WORKFLOW_PERMISSIONS = {"ci": {"contents": "read"}, "plan": {}, "preview": {}, "deploy": {}}

USES_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses:\s*\S+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def action(step: dict[str, Any]) -> str:
    return step.get("uses", "").split("@")[0]


def stacks() -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in REPO.glob("Pulumi.*.yaml"))


def locked_version(package: str) -> str:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


# --- actionlint ---------------------------------------------------------------------------


def actionlint(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("actionlint")
    assert binary, "actionlint is not on PATH: run the tests with `uv run` after scripts/setup.sh"
    shellcheck = shutil.which("shellcheck") or ""
    return subprocess.run(
        [binary, "-color=false", f"-shellcheck={shellcheck}", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def test_shellcheck_is_installed_for_actionlint() -> None:
    # Without it actionlint silently skips every `run:` script.
    assert shutil.which("shellcheck"), "shellcheck is missing: scripts/setup.sh installs it"


def test_actionlint_finds_nothing_in_the_shipped_workflows() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert [Path(f).stem for f in files] == sorted(NAMES)
    result = actionlint(*files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_reports_a_broken_workflow_and_a_shell_bug(tmp_path: Path) -> None:
    """The linter above can fail: an unknown context and an unquoted variable are caught."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo ${{ github.no_such_field_at_all }}\n"
        "      - run: |\n          f=$(ls)\n          cat $f\n"
    )
    result = actionlint(str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "no_such_field_at_all" in result.stdout
    if shutil.which("shellcheck"):
        assert "SC2086" in result.stdout, result.stdout


# --- invariants ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_job_has_exactly_its_listed_permissions(name: str) -> None:
    workflow = load(name)
    assert workflow.get("permissions") == WORKFLOW_PERMISSIONS[name], "workflow permissions"
    jobs = workflow["jobs"]
    assert set(jobs) == set(PERMISSIONS[name])
    for job_name, job in jobs.items():
        assert "permissions" in job, f"{name}.yml job {job_name} has no explicit permissions"
        assert job["permissions"] == PERMISSIONS[name][job_name], f"{name}.yml job {job_name}"


@pytest.mark.parametrize("name", NAMES)
def test_every_action_is_pinned_to_a_commit_with_its_version(name: str) -> None:
    text = (WORKFLOWS / f"{name}.yml").read_text()
    for step in steps(load(name)):
        if "uses" in step:
            assert USES_PINNED.match(step["uses"]), step["uses"]
    uses_lines = [line.strip() for line in text.splitlines() if "uses:" in line]
    assert uses_lines
    for line in uses_lines:
        assert VERSION_COMMENT.search(line), f"{name}.yml: {line!r} needs `@<sha> # vX.Y.Z`"


@pytest.mark.parametrize("name", NAMES)
def test_no_expression_is_expanded_inside_a_shell_script(name: str) -> None:
    """`${{ }}` in `run:` is pasted into the script before bash sees it (script injection);
    values reach scripts through `env:` instead."""
    for step in steps(load(name)):
        assert "${{" not in step.get("run", ""), step.get("name", step["run"][:60])


@pytest.mark.parametrize("name", NAMES)
def test_checkouts_leave_no_token_in_the_clone(name: str) -> None:
    checkouts = [s for s in steps(load(name)) if action(s) == "actions/checkout"]
    assert checkouts
    for step in checkouts:
        assert step["with"]["persist-credentials"] is False


def test_ci_runs_the_readme_test_command_on_push_and_pull_request() -> None:
    workflow = load("ci")
    assert {"push", "pull_request"} <= set(triggers(workflow))
    assert "scripts/test.sh" in (REPO / "README.md").read_text()
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    runs = [s["run"].strip() for s in steps(workflow) if "run" in s]
    assert runs == ["scripts/test.sh"]


def test_plan_runs_on_pull_request_and_never_on_pull_request_target() -> None:
    assert set(triggers(load("plan"))) == {"pull_request"}


def test_plan_uses_no_secrets_at_all() -> None:
    text = (WORKFLOWS / "plan.yml").read_text()
    assert not re.search(r"secrets\s*[.\[]", text)


def test_plan_runs_repository_code_only_without_write_permissions() -> None:
    for job_name, job in load("plan")["jobs"].items():
        writes = {k for k, v in job["permissions"].items() if v == "write"}
        runs_code = any("run" in s or action(s) == "actions/checkout" for s in job["steps"])
        assert not (writes and runs_code), f"plan.yml job {job_name} runs code with {writes}"


def test_plan_comment_is_found_by_its_marker() -> None:
    jobs = load("plan")["jobs"]
    plan_script = "\n".join(s.get("run", "") for s in jobs["plan"]["steps"])
    assert f"marker='{MARKER}'" in plan_script
    post = next(s for s in jobs["comment"]["steps"] if action(s) == "actions/github-script")
    assert post["env"]["MARKER"] == MARKER
    assert "updateComment" in post["with"]["script"]
    assert "createComment" in post["with"]["script"]
    # Fork pull requests get a read-only token: the comment job is skipped, not failed.
    assert "github.event.pull_request.head.repo.full_name == github.repository" in (
        jobs["comment"]["if"]
    )


def test_preview_runs_the_policy_checked_preview_only_when_credentials_exist() -> None:
    workflow = load("preview")
    assert set(triggers(workflow)) == {"pull_request"}
    jobs = workflow["jobs"]
    gate = jobs["configured"]
    assert "if" not in gate
    # The gate reads secrets only to say whether they are set, never their values.
    gate_text = yaml.safe_dump(gate)
    for ref in re.findall(r"secrets\.\w+[^&}]*", gate_text):
        assert ref.rstrip().endswith("!= ''"), ref
    for job_name, job in jobs.items():
        if job_name == "configured":
            continue
        text = yaml.safe_dump(job)
        if "secrets." in text or "vars.AWS" in text or "pulumi/actions" in text:
            assert job["needs"] == "configured"
            assert job["if"] == "${{ needs.configured.outputs.ready == 'true' }}", job_name
    pulumi = [s for s in steps(workflow) if action(s) == "pulumi/actions"]
    assert len(pulumi) == 1
    assert pulumi[0]["with"]["command"] == "preview"
    assert pulumi[0]["with"]["comment-on-pr"] is True
    assert pulumi[0]["with"]["policyPacks"] == "policies"
    assert (REPO / "policies" / "PulumiPolicy.yaml").is_file()
    aws = next(s for s in steps(workflow) if action(s) == "aws-actions/configure-aws-credentials")
    assert aws["with"]["role-to-assume"] == "${{ vars.AWS_PREVIEW_ROLE_ARN }}"


def test_deploy_is_manual_gated_by_an_environment_and_policy_checked() -> None:
    workflow = load("deploy")
    on = triggers(workflow)
    assert set(on) == {"workflow_dispatch"}
    assert on["workflow_dispatch"]["inputs"]["stack"]["options"] == stacks()
    job = workflow["jobs"]["deploy"]
    assert job["environment"] == "${{ inputs.stack }}"
    assert "default_branch" in job["if"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    pulumi = [s for s in job["steps"] if action(s) == "pulumi/actions"]
    assert len(pulumi) == 1
    assert pulumi[0]["with"]["command"] == "up"
    assert pulumi[0]["with"]["policyPacks"] == "policies"


@pytest.mark.parametrize("name", ["preview", "deploy"])
def test_pulumi_cli_matches_the_locked_sdk(name: str) -> None:
    pulumi = next(s for s in steps(load(name)) if action(s) == "pulumi/actions")
    assert str(pulumi["with"]["pulumi-version"]) == locked_version("pulumi")
