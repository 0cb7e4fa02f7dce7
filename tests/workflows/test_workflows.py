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
NAMES = ("ci", "plan", "plan-comment", "preview", "deploy")
MARKER = "<!-- prodstack-plan -->"
# GitHub refuses an issue comment longer than this many characters.
GITHUB_COMMENT_LIMIT = 65536

# Every job's permissions, exactly. Widening one (or adding a job without them) fails here.
PERMISSIONS = {
    "ci": {"test": {"contents": "read"}},
    "plan": {"plan": {"contents": "read"}, "comment": {"pull-requests": "write"}, "gate": {}},
    # Posts on fork pull requests: reads the plan run's artifact, comments, nothing else.
    "plan-comment": {"comment": {"pull-requests": "write", "actions": "read"}},
    "preview": {
        "configured": {"contents": "read"},
        "preview": {"contents": "read", "id-token": "write", "pull-requests": "write"},
    },
    "deploy": {"deploy": {"contents": "read", "id-token": "write"}},
}
# Only least-privilege workflow defaults: nothing, or read-only contents.
WORKFLOW_PERMISSIONS = {"ci": {"contents": "read"}, "plan": {}, "plan-comment": {},
                        "preview": {}, "deploy": {}}  # fmt: skip

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
    assert sorted(Path(f).stem for f in files) == sorted(NAMES)
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


@pytest.mark.parametrize("name", [n for n in NAMES if n != "plan-comment"])
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


def posting_script(workflow: str) -> dict[str, Any]:
    job = load(workflow)["jobs"]["comment"]
    return next(s for s in job["steps"] if action(s) == "actions/github-script")


SHARED_FROM = "// The same from here on in"


def test_plan_comment_is_found_by_its_marker() -> None:
    from prodstack import comment

    jobs = load("plan")["jobs"]
    assert comment.MARKER == MARKER
    for workflow in ("plan", "plan-comment"):
        post = posting_script(workflow)
        assert post["env"]["MARKER"] == MARKER
        assert "updateComment" in post["with"]["script"]
        assert "createComment" in post["with"]["script"]
    # Fork pull requests get a read-only token: the comment job is skipped, not failed.
    assert "github.event.pull_request.head.repo.full_name == github.repository" in (
        jobs["comment"]["if"]
    )


def test_both_workflows_post_the_comment_with_the_same_code() -> None:
    """plan.yml (this repository's pull requests) and plan-comment.yml (forks') differ
    only in where the pull request's number comes from."""
    tails = [posting_script(w)["with"]["script"].split(SHARED_FROM, 1) for w in
             ("plan", "plan-comment")]  # fmt: skip
    assert all(len(t) == 2 for t in tails)
    shared = [t[1].split("\n", 1)[1] for t in tails]
    assert shared[0] == shared[1]


def test_fork_comments_never_check_out_or_run_pull_request_code() -> None:
    workflow = load("plan-comment")
    assert triggers(workflow) == {"workflow_run": {"workflows": ["plan"], "types": ["completed"]}}
    text = (WORKFLOWS / "plan-comment.yml").read_text()
    assert "pull_request_target" not in text
    (job,) = workflow["jobs"].values()
    # Forks only, and only runs of plan.yml on a pull request.
    for condition in ("github.event.workflow_run.event == 'pull_request'",
                      "github.event.workflow_run.head_repository.full_name != "
                      "github.repository"):  # fmt: skip
        assert condition in job["if"]
    # Nothing but the artifact's download and the posting script: no checkout of any ref,
    # no shell step, no other action that could run what the artifact holds.
    assert [action(s) for s in job["steps"]] == ["actions/download-artifact",
                                                "actions/github-script"]  # fmt: skip
    assert not any("run" in s for s in job["steps"])
    download = job["steps"][0]["with"]
    assert download["run-id"] == "${{ github.event.workflow_run.id }}"
    assert download["name"] == "prodstack-plan"
    script = posting_script("plan-comment")
    # No expression is pasted into the script; values reach it through env:.
    assert "${{" not in script["with"]["script"]
    assert "head_branch" not in text and "ref:" not in text


# node runs the github-script steps with stand-ins for GitHub's API: `github`, `context`
# and `core` as actions/github-script passes them to the script's async body.
NODE_HARNESS = r"""
const calls = [];
let failed = null;
const core = { setFailed: (m) => { failed = m; }, info: () => {}, warning: () => {} };
const stub = JSON.parse(process.env.STUB);
const github = {
  paginate: async (fn, args) => { calls.push(['list', args.issue_number]); return stub.comments; },
  rest: {
    issues: {
      listComments: 'listComments',
      updateComment: async (a) => { calls.push(['update', a.comment_id]); },
      createComment: async (a) => { calls.push(['create', a.issue_number]); return { data: {} }; },
    },
    pulls: {
      get: async (a) => {
        calls.push(['get', a.pull_number]);
        const pull = stub.pulls[String(a.pull_number)];
        if (!pull) { throw new Error('Not Found'); }
        return { data: pull };
      },
    },
  },
};
const context = { repo: { owner: 'example', repo: 'prodstack' }, payload: stub.payload };
(async () => {
SCRIPT
})().then(
  () => console.log(JSON.stringify({ failed, calls })),
  (e) => console.log(JSON.stringify({ failed, calls, error: String(e) })));
"""
FORK = "fork-owner/prodstack"
HEAD_SHA = "a" * 40


def run_posting_script(tmp_path: Path, workflow: str, *, number: str, pulls: dict,
                       comments: list | None = None) -> dict:  # fmt: skip
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (GitHub's runners have it)")
    step = posting_script(workflow)
    folder = tmp_path / "prodstack-plan"
    folder.mkdir(exist_ok=True)
    (folder / "comment.md").write_text(MARKER + "\n## prodstack plan\n")
    (folder / "pr-number").write_text(number)
    script = tmp_path / "post.js"
    script.write_text(NODE_HARNESS.replace("SCRIPT", step["with"]["script"]))
    env = {"PATH": os.environ["PATH"], "COMMENT_FILE": str(folder / "comment.md"),
           "NUMBER_FILE": str(folder / "pr-number"), "HEAD_SHA": HEAD_SHA,
           "HEAD_REPOSITORY": FORK, "MARKER": step["env"]["MARKER"],
           "STUB": json.dumps({"pulls": pulls, "comments": comments or [],
                               "payload": {"pull_request": {"number": 7}}})}  # fmt: skip
    result = subprocess.run([node, str(script)], env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def open_pull(sha: str = HEAD_SHA, repo: str = FORK, state: str = "open") -> dict:
    return {"state": state, "head": {"sha": sha, "repo": {"full_name": repo}}}


def test_fork_comment_posts_on_the_pull_request_that_was_planned(tmp_path: Path) -> None:
    done = run_posting_script(tmp_path, "plan-comment", number="7\n", pulls={"7": open_pull()})
    assert done["failed"] is None and done["calls"] == [["get", 7], ["list", 7], ["create", 7]]
    mine = {"id": 99, "user": {"login": "github-actions[bot]"}, "body": MARKER + "\nold"}
    quoted = {"id": 98, "user": {"login": "someone"}, "body": MARKER + "\nquoted"}
    done = run_posting_script(tmp_path, "plan-comment", number="7\n", pulls={"7": open_pull()},
                              comments=[quoted, mine])  # fmt: skip
    assert done["calls"][-1] == ["update", 99]


@pytest.mark.parametrize("number", [
    "", "0", "07", "-7", "7.0", "1e3", "7 8", "7\n8", "7\n\n", " 7", "0x7", "７",
    "7; curl https://example.invalid", "$(id)", "99999999999", "7" * 200,
])  # fmt: skip
def test_fork_comment_takes_the_pull_request_number_only_as_a_decimal_integer(
        tmp_path: Path, number: str) -> None:  # fmt: skip
    """The number comes from the fork's own run: anything but a plain positive decimal is
    refused before any call to GitHub."""
    done = run_posting_script(tmp_path, "plan-comment", number=number,
                              pulls={n: open_pull() for n in ("7", "8", "0", "1000")})
    assert done["failed"] and "not a pull request number" in done["failed"]
    assert done["calls"] == []


@pytest.mark.parametrize("pull", [
    open_pull(sha="b" * 40),                       # another commit than the one planned
    open_pull(repo="someone-else/prodstack"),      # another fork's pull request
    open_pull(state="closed"),
])  # fmt: skip
def test_fork_comment_refuses_a_number_that_names_another_pull_request(
        tmp_path: Path, pull: dict) -> None:  # fmt: skip
    done = run_posting_script(tmp_path, "plan-comment", number="8", pulls={"8": pull})
    assert done["failed"] and "is not the one planned" in done["failed"]
    assert done["calls"] == [["get", 8]]


def test_same_repository_comment_posts_on_the_event_pull_request(tmp_path: Path) -> None:
    # plan.yml's own job reads the number from GitHub's event, never from the artifact.
    done = run_posting_script(tmp_path, "plan", number="8", pulls={})
    assert done["failed"] is None and done["calls"] == [["list", 7], ["create", 7]]


def test_the_merge_gate_is_on_for_prod_and_fails_its_own_job() -> None:
    workflow = load("plan")
    assert workflow["env"]["GATE_STACKS"].split() == ["prod"]
    assert set(workflow["env"]["GATE_FAIL_ON"].split(",")) <= {"replace", "delete", "risk"}
    plan_script = "\n".join(s.get("run", "") for s in workflow["jobs"]["plan"]["steps"])
    assert '--fail-on "$GATE_FAIL_ON"' in plan_script
    gate = workflow["jobs"]["gate"]
    assert gate["needs"] == "plan" and gate["permissions"] == {}
    assert gate["if"] == "${{ !cancelled() }}"  # it runs, and fails, when plan fails too


def test_the_plan_job_installs_only_what_planning_needs() -> None:
    setup = next(s for s in load("plan")["jobs"]["plan"]["steps"] if "setup.sh" in s.get("run", ""))
    assert setup["run"].splitlines()[0] == "bash scripts/setup.sh --plan"
    # `uv run` would otherwise sync the default groups (the test tools) that --plan leaves out.
    script = "\n".join(s.get("run", "") for s in load("plan")["jobs"]["plan"]["steps"])
    runs = re.findall(r"uv run [^\n]*", script)
    assert runs and all(r.startswith("uv run --frozen --no-sync ") for r in runs), runs


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
    # The workflow's own env: (the merge gate's settings).
    env.update({k: str(v) for k, v in load("plan").get("env", {}).items()})
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
        "temp": temp,
        "outputs": outputs["plan"],
        "comment": (out / "comment.md").read_text(),
        "summary": Path(env["GITHUB_STEP_SUMMARY"]).read_text(),
    }


def run_gate(workdir: Path, env: dict[str, str], temp: Path, *, blocked: str,
             plan_result: str) -> bool:  # fmt: skip
    """The gate job's step, with what GitHub would put in its env:; whether it passed."""
    job = json.loads(json.dumps(load("plan")["jobs"]["gate"]))
    (step,) = job["steps"]
    assert set(step["env"]) == {"PLAN_RESULT", "BLOCKED"}
    step["env"] = {"PLAN_RESULT": plan_result, "BLOCKED": blocked}
    gate_temp = temp / f"gate-{plan_result}-{len(blocked)}"
    gate_temp.mkdir()
    try:
        run_job(job, workdir, env, gate_temp, failing="gate")
    except AssertionError as error:
        if "step 'gate' passed" in str(error):
            return True
        raise
    return False


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


# A comment a reviewer reads: the detail is in the job summary and the artifact.
REVIEWER_LIMIT = 15_000
TABLE_HEADER = "| | add | change | replace | remove | risks | rollouts | monthly cost |"


def test_plan_comment_starts_with_the_marker_and_is_short(plan_run) -> None:
    comment = plan_run["comment"]
    assert comment.startswith(MARKER + "\n")
    assert comment.count(MARKER) == 1
    assert len(comment) < REVIEWER_LIMIT
    assert "prodstack diff failed" not in comment
    assert "prodstack cost failed" not in comment
    # It links to the whole diffs.
    assert "[job summary](https://github.com/example/prodstack/actions/runs/1)" in comment


def test_plan_comment_has_a_section_per_stack_and_the_vps(plan_run) -> None:
    ids = list(sections(plan_run["comment"]))
    assert ids == [*(f"stack-{s}" for s in stacks()), "profile-vps"]


def test_plan_comment_opens_with_one_table_of_every_stack_and_the_vps(plan_run) -> None:
    comment = plan_run["comment"]
    assert comment.count(TABLE_HEADER) == 1
    before = comment[: comment.index("<!-- prodstack-plan:")]
    table = before[before.index(TABLE_HEADER):].split("\n\n", 1)[0].splitlines()[2:]
    titles = [*(f"cloud stack `{s}`" for s in stacks()), "VPS profile"]
    assert [row.split(" | ", 1)[0] for row in table] == [f"| {t}" for t in titles]
    # The rest is folded; risks (none here) would be the only table shown.
    assert comment.count("<details>") == comment.count("</details>") >= 2
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(c.isdigit() for c in cells[1:7]), row
        assert re.fullmatch(r"\$[\d,.]+ → \$[\d,.]+ \([+-]?\$[\d,.]+\)", cells[7]), row
    # `replicas` is in the service's ignore_changes: nothing that `pulumi up` changes.
    prod = next(r for r in table if "`prod`" in r)
    assert prod.split(" | ")[1:7] == ["0"] * 6


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


def test_plan_job_summary_and_artifact_hold_the_whole_diffs_and_costs(plan_run) -> None:
    from prodstack import diff

    out, summary = plan_run["out"], plan_run["summary"]
    ids = [*(f"stack-{s}" for s in stacks()), "profile-vps"]
    assert summary == (out / "full.md").read_text()
    assert summary.startswith(MARKER) and summary.count(TABLE_HEADER) == 1
    for section_id in ids:
        result = json.loads((out / "sections" / f"{section_id}.diff.json").read_text())
        whole = diff.render_markdown(result, max_chars=10**12, table=False)
        assert whole in section(summary, section_id), section_id
        body = section(summary, section_id)
        itemised = "<summary>Itemised monthly cost with this pull request"
        assert itemised in body, section_id
        assert re.search(r"\$\d", body.split(itemised, 1)[1]), section_id
    assert (out / "comment.md").read_text() == plan_run["comment"]
    # What plan-comment.yml reads on a fork: the number, as data.
    assert (out / "pr-number").read_text() == "7\n"


def test_the_gate_passes_a_pull_request_without_a_stateful_risk(plan_run) -> None:
    assert plan_run["outputs"]["blocked"] == ""
    assert run_gate(plan_run["repo"], plan_run["env"], plan_run["temp"], blocked="",
                    plan_result="success")  # fmt: skip
    assert "Merge gate (`--fail-on risk` on cloud stack `prod`): passes." in plan_run["comment"]


def test_plan_reports_a_stack_it_cannot_plan_and_still_posts_the_others(tmp_path: Path) -> None:
    """A pull request that breaks dev's config and moves prod to another VPC: dev's
    section carries the one-line error; prod is diffed, with every stateful risk in the
    comment, and the merge gate blocks on it; the VPS is still diffed; the comment is
    still made, and the plan job fails."""
    from prodstack import diff

    broken = (("Pulumi.dev.yaml", r'^(  prodstack:replicas: )"\d+"$', r'\g<1>"0"'),
              ("Pulumi.prod.yaml", r'^  prodstack:replicas: "\d+"$',
               r'\g<0>\n  prodstack:vpc_cidr: 10.1.0.0/16'))  # fmt: skip
    repo, base, merge = throwaway_repository(tmp_path, broken)
    env = pull_request_env(repo, tmp_path, base, merge)
    outputs = run_job(load("plan")["jobs"]["plan"], repo, env, tmp_path, failing="plan")
    out = Path(outputs["plan"]["dir"])
    comment = (out / "comment.md").read_text()
    assert comment.startswith(MARKER) and len(comment) < GITHUB_COMMENT_LIMIT
    dev = section(comment, "stack-dev")
    assert "**prodstack diff failed** (exit 2)" in dev
    assert "prodstack:replicas" in dev
    assert "| cloud stack `dev` | | | | | | | ⛔ prodstack diff failed (exit 2) |" in comment
    assert "Traceback" not in comment
    prod = json.loads((out / "sections" / "stack-prod.diff.json").read_text())
    assert prod["cannot_apply"] and len(prod["risks"]) > 10
    for risk in prod["risks"]:
        assert f"| {risk['label']} `{risk['name']}` | **{risk['action']}** |" in section(
            comment, "stack-prod")
    assert prod["blocking"]["reasons"] == diff.blocking(prod, {"risk"})
    assert "The merge gate (`--fail-on risk`) blocks this pull request:** cloud stack " \
           "`prod`: " in comment
    assert "no changes" in section(comment, "profile-vps").lower()
    # The gate job fails, on the block and on a plan job that did not finish.
    assert outputs["plan"]["blocked"] == "stack-prod"
    assert not run_gate(repo, env, tmp_path, blocked="stack-prod", plan_result="failure")
    assert not run_gate(repo, env, tmp_path, blocked="", plan_result="failure")


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
    assert "POSTGRES_PASSWORD: (value not shown) is invalid" in vps
    assert "no changes" in section(comment, "stack-prod").lower()
    written = [p.read_text() for p in out.rglob("*") if p.is_file()]
    for text in (*written, Path(env["GITHUB_STEP_SUMMARY"]).read_text()):
        assert token not in text
