"""The GitHub workflows shipped in `.github/workflows/`: linted by actionlint (with its
shellcheck integration), held to their security invariants, and plan.yml's steps run for
real on this machine against two commits of a throwaway repository made from this one.
"""

from __future__ import annotations

import json
import os
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


def test_ci_runs_the_readme_test_command_as_test_lint_and_audit_stages() -> None:
    workflow = load("ci")
    assert {"push", "pull_request"} <= set(triggers(workflow))
    assert "scripts/test.sh" in (REPO / "README.md").read_text()
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    runs = [s for s in steps(workflow) if "run" in s]
    assert [s["name"] for s in runs] == ["test", "lint", "audit"]
    commands = {s["name"]: s["run"].strip().split() for s in runs}
    for name, command in commands.items():
        assert command[0] == "scripts/test.sh", name
    # The three stages together are the whole suite, each test file in exactly one stage.
    assert commands["test"][1:] == ["--ignore=tests/lint"]
    lint_files = sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("tests/lint/test_*.py"))
    assert sorted(commands["lint"][1:] + commands["audit"][1:]) == lint_files
    assert commands["audit"][1:] == ["tests/lint/test_audit.py"]
    # Every stage reports, and an unreachable vulnerability service fails the audit there.
    assert all(s["if"] == "${{ !cancelled() }}" for s in runs[1:])
    assert runs[2]["env"] == {"PRODSTACK_AUDIT_REQUIRED": "1"}


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


# --- plan.yml run locally -----------------------------------------------------------------
# The plan job's `run:` steps, in order, with bash as GitHub runs them, inside a throwaway
# repository made from this working tree: a base commit on `main`, a pull request that
# changes prod's `replicas` and the VPS `size`, and the merge commit a pull_request run
# checks out. `uses:` steps are GitHub's (checkout, setup-python, upload-artifact); their
# effect is what the repository set-up below provides. scripts/setup.sh runs for real: its
# Debian packages are already here, uv is on PATH, and `uv sync` fills the clone's own
# .venv from uv's cache (hard links, offline, about a second). Syncing this checkout's
# .venv for the clone instead would repoint its editable install at the throwaway copy.

RUN_STEP_KEYS = {"name", "id", "run", "env"}
PR_REPLICAS = "4"
PR_SIZE = "large"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


# The pull request: (file, pattern, replacement), each pattern matching exactly once.
PULL_REQUEST = (
    ("Pulumi.prod.yaml", r'^(  prodstack:replicas: )"\d+"$', rf'\g<1>"{PR_REPLICAS}"'),
    ("pyinfra/group_data/all.py", r'^size = "(?!large")\w+"$', f'size = "{PR_SIZE}"'),
)


def throwaway_repository(root: Path, edits=PULL_REQUEST) -> tuple[Path, str, str]:
    """(repo, base sha, merge sha): this working tree's files, then the pull request."""
    repo = root / "repo"
    listed = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for rel in filter(None, listed.split("\0")):
        source = REPO / rel
        if source.is_file() and not source.is_symlink():
            target = repo / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    for key, value in (("user.name", "prodstack test"), ("user.email", "test@example.invalid")):
        git(repo, "config", key, value)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD")

    git(repo, "checkout", "-q", "-b", "feature")
    for rel, pattern, replacement in edits:
        path = repo / rel
        text, count = re.subn(pattern, replacement, path.read_text(), flags=re.M)
        assert count == 1, f"{rel}: {pattern!r} matched {count} times"
        path.write_text(text)
    git(repo, "commit", "-q", "-am", "the pull request")

    # What actions/checkout gives a pull_request run with fetch-depth 0: the base branch
    # as origin/main, and HEAD detached at GitHub's merge of the pull request into it.
    git(repo, "update-ref", "refs/remotes/origin/main", base)
    git(repo, "checkout", "-q", "--detach", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge feature into main", "feature")
    return repo, base, git(repo, "rev-parse", "HEAD")


def parse_output_file(path: Path) -> dict[str, str]:
    """`key=value` and `key<<DELIM ... DELIM` lines, as the runner reads GITHUB_OUTPUT."""
    values: dict[str, str] = {}
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            values[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def run_job(
    job: dict[str, Any], workdir: Path, env: dict[str, str], temp: Path, failing: str = ""
) -> dict:
    """Runs a job's `run:` steps like the runner; returns {step id: outputs}. The step
    whose id is `failing` must exit non-zero, and ends the job as it would on GitHub."""
    outputs: dict[str, dict[str, str]] = {}
    env = dict(env)
    for index, step in enumerate(job["steps"]):
        if "uses" in step:
            continue
        assert set(step) <= RUN_STEP_KEYS, f"step {index} uses {set(step) - RUN_STEP_KEYS}"
        step_env = {k: str(v) for k, v in step.get("env", {}).items()}
        assert not any("${{" in v for v in step_env.values()), step_env
        files = {
            name: temp / f"step{index}.{name.lower()}"
            for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH")
        }
        for path in files.values():
            path.write_text("")
        script = temp / f"step{index}.sh"
        script.write_text(step["run"])
        # GitHub's default shell on Linux runners.
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workdir, env={**env, **step_env, **{k: str(v) for k, v in files.items()}},
            capture_output=True, text=True, timeout=600,
        )
        if step.get("id") == failing and failing:
            assert result.returncode != 0, f"step {failing!r} passed\n{result.stderr[-4000:]}"
            outputs[failing] = parse_output_file(files["GITHUB_OUTPUT"])
            return outputs
        assert result.returncode == 0, (
            f"step {step.get('name', index)!r} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
        for line in reversed(files["GITHUB_PATH"].read_text().splitlines()):
            env["PATH"] = f"{line}{os.pathsep}{env['PATH']}"
        env.update(parse_output_file(files["GITHUB_ENV"]))
        if "id" in step:
            outputs[step["id"]] = parse_output_file(files["GITHUB_OUTPUT"])
    assert not failing, f"no step {failing!r} ran"
    return outputs


def uv_directory() -> str:
    uv = os.environ.get("UV") or shutil.which("uv") or str(REPO / ".prodstack/tools/bin/uv")
    assert Path(uv).is_file(), "uv not found: run the tests with `uv run` (scripts/test.sh)"
    return str(Path(uv).resolve().parent)


def pull_request_env(repo: Path, temp: Path, base: str, merge: str) -> dict[str, str]:
    event = temp / "event.json"
    event.write_text(json.dumps({
        "number": 7,
        "pull_request": {
            "number": 7,
            "base": {"ref": "main", "sha": base, "repo": {"full_name": "example/prodstack"}},
            "head": {"ref": "feature", "repo": {"full_name": "example/prodstack"}},
        },
    }))
    runner_temp = temp / "runner"
    runner_temp.mkdir()
    summary = temp / "step_summary.md"
    summary.write_text("")
    # This session's virtualenv and uv settings must not leak into the clone's.
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("UV_", "VIRTUAL_ENV", "PYTHON", "GITHUB_", "RUNNER_"))
    }
    env.update(
        PATH=f"{uv_directory()}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        UV_OFFLINE="1",
        CI="true",
        GITHUB_ACTIONS="true",
        GITHUB_EVENT_NAME="pull_request",
        GITHUB_EVENT_PATH=str(event),
        GITHUB_BASE_REF="main",
        GITHUB_HEAD_REF="feature",
        GITHUB_REF="refs/pull/7/merge",
        GITHUB_SHA=merge,
        GITHUB_REPOSITORY="example/prodstack",
        GITHUB_SERVER_URL="https://github.com",
        GITHUB_RUN_ID="1",
        GITHUB_WORKSPACE=str(repo),
        GITHUB_STEP_SUMMARY=str(summary),
        RUNNER_TEMP=str(runner_temp),
        RUNNER_OS="Linux",
    )
    return env


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    temp = tmp_path_factory.mktemp("plan-workflow")
    repo, base, merge = throwaway_repository(temp)
    env = pull_request_env(repo, temp, base, merge)
    outputs = run_job(load("plan")["jobs"]["plan"], repo, env, temp)
    out = Path(outputs["plan"]["dir"])
    return {
        "repo": repo,
        "env": env,
        "out": out,
        "comment": (out / "comment.md").read_text(),
        "summary": Path(env["GITHUB_STEP_SUMMARY"]).read_text(),
    }


def sections(comment: str) -> dict[str, str]:
    """The comment's sections by id, each opened by `<!-- prodstack-plan:ID -->`."""
    parts = re.split(r"^<!-- prodstack-plan:(\S+) -->$", comment, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def section(comment: str, section_id: str) -> str:
    found = sections(comment)
    assert section_id in found, f"no section {section_id!r} in {list(found)}"
    return found[section_id]


def cloud_resources(repo: Path, env: dict[str, str], stack: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["uv", "run", "--frozen", "prodstack", "plan", "--stack", stack, "--format", "json"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["resources"]


def test_plan_comment_starts_with_the_marker_and_fits_one_github_comment(plan_run) -> None:
    comment = plan_run["comment"]
    assert comment.startswith(MARKER + "\n")
    assert comment.count(MARKER) == 1
    assert len(comment) < GITHUB_COMMENT_LIMIT
    assert "prodstack diff failed" not in comment
    assert "prodstack cost failed" not in comment


def test_plan_comment_has_a_section_per_stack_and_the_vps(plan_run) -> None:
    ids = list(sections(plan_run["comment"]))
    assert ids == [*(f"stack-{s}" for s in stacks()), "profile-vps"]


def test_plan_comment_names_the_ecs_service_that_replicas_changes(plan_run) -> None:
    resources = cloud_resources(plan_run["repo"], plan_run["env"], "prod")
    services = [r for r in resources if r["type"] == "aws:ecs/service:Service"]
    assert len(services) == 1
    base = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    prod = section(plan_run["comment"], "stack-prod")
    assert services[0]["name"] in prod
    assert f"`{base['prodstack:replicas']}` → `{PR_REPLICAS}`" in prod
    # The pull request does not touch dev.
    assert "no changes" in section(plan_run["comment"], "stack-dev").lower()


def test_plan_comment_shows_the_vps_size_change(plan_run) -> None:
    vps = section(plan_run["comment"], "profile-vps")
    assert "no changes" not in vps.lower()
    # A larger host gets more PostgreSQL memory, which restarts PostgreSQL.
    assert re.search(r"^\s*\+shared_buffers = ", vps, flags=re.M)
    assert "Restart PostgreSQL" in vps


def test_plan_comment_has_the_cost_of_every_section(plan_run) -> None:
    for section_id, body in sections(plan_run["comment"]).items():
        summary = "<summary>Itemised monthly cost with this pull request"
        assert summary in body, section_id
        assert re.search(r"\$\d", body.split(summary, 1)[1]), section_id


def test_plan_job_summary_and_artifact_hold_the_full_diffs(plan_run) -> None:
    out, summary = plan_run["out"], plan_run["summary"]
    full = sorted((out / "full").glob("*.md"))
    assert [p.stem for p in full] == sorted([*(f"stack-{s}" for s in stacks()), "profile-vps"])
    for path in full:
        text = path.read_text()
        assert text.strip(), path.name
        assert text in summary, f"{path.name} is not in the job summary"
    assert summary.startswith(MARKER)
    assert (out / "comment.md").read_text() == plan_run["comment"]


def test_plan_reports_a_stack_it_cannot_plan_and_still_posts_the_others(tmp_path: Path) -> None:
    """A pull request that breaks dev's config: dev's section carries the one-line error,
    prod and the VPS are still diffed, the comment is still made, and the job fails."""
    broken = (("Pulumi.dev.yaml", r'^(  prodstack:replicas: )"\d+"$', r'\g<1>"0"'),)
    repo, base, merge = throwaway_repository(tmp_path, broken)
    env = pull_request_env(repo, tmp_path, base, merge)
    outputs = run_job(load("plan")["jobs"]["plan"], repo, env, tmp_path, failing="plan")
    comment = (Path(outputs["plan"]["dir"]) / "comment.md").read_text()
    assert comment.startswith(MARKER) and len(comment) < GITHUB_COMMENT_LIMIT
    dev = section(comment, "stack-dev")
    assert "**prodstack diff failed** (exit 2)" in dev
    assert "prodstack:replicas" in dev
    assert "Traceback" not in comment
    assert "no changes" in section(comment, "stack-prod").lower()
    assert "no changes" in section(comment, "profile-vps").lower()


def test_plan_comment_never_shows_a_credential_committed_as_data(tmp_path: Path) -> None:
    """A pull request that puts a Slack webhook and a database password in group_data
    (hostile: a quote in the password): the VPS section says the diff failed, naming a
    key, and neither the comment, the job summary nor any file of the artifact holds the
    token."""
    token = "SECRETTOKEN0123"
    credentials = (
        f'grafana = False\\nalert_webhook_url = "https://hooks.slack.com/services/T0/B0/{token}"'
        f'\\nPOSTGRES_PASSWORD = "{token}\\\\""'
    )
    edits = (("pyinfra/group_data/all.py", r"^grafana = False$", credentials),)
    repo, base, merge = throwaway_repository(tmp_path, edits)
    assert token in (repo / "pyinfra/group_data/all.py").read_text()
    env = pull_request_env(repo, tmp_path, base, merge)
    outputs = run_job(load("plan")["jobs"]["plan"], repo, env, tmp_path, failing="plan")
    out = Path(outputs["plan"]["dir"])
    comment = (out / "comment.md").read_text()
    vps = section(comment, "profile-vps")
    assert "**prodstack diff failed** (exit 2)" in vps
    assert "invalid data `POSTGRES_PASSWORD` (value not shown)" in vps
    assert "no changes" in section(comment, "stack-prod").lower()
    written = [p.read_text() for p in out.rglob("*") if p.is_file()]
    for text in (*written, Path(env["GITHUB_STEP_SUMMARY"]).read_text()):
        assert token not in text
