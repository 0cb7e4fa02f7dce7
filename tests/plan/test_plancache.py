"""The plan cache (prodstack/plancache.py): a plan is made again exactly when one of its
inputs changes, a hit is the same plan to the byte, and input is refused before anything
is planned. Each CLI test gives the command a cache directory of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from prodstack import plancache, planning
from prodstack.errors import UsageError
from tests.plan.conftest import checkout_copy
from tests.plan.test_cli import PROGRESS, one_line_error, prodstack

REPO = plancache.REPO
PLANNING = "prodstack: planning cloud stack"
FROM_CACHE = "inputs unchanged, plan from the cache"


@pytest.fixture
def cache(tmp_path) -> dict[str, str]:
    return {"PRODSTACK_PLAN_CACHE": str(tmp_path / "plan-cache")}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return checkout_copy(tmp_path_factory.mktemp("plancache") / "checkout")


def key(root: Path, overrides: dict | None = None) -> str:
    found = plancache.cloud_key(root, "dev", overrides)
    assert found is not None
    return found


# --- The key: every input, and nothing else -------------------------------------------------


def test_the_key_follows_contents_not_the_checkout_path(checkout, tmp_path):
    other = tmp_path / "elsewhere"
    shutil.copytree(checkout, other)
    assert key(other) == key(checkout)


def _append(path: Path) -> None:
    path.write_text(path.read_text() + "\n# changed\n")


CHANGES = {
    "the stack file": lambda root: _append(root / "Pulumi.dev.yaml"),
    "the project file": lambda root: _append(root / "Pulumi.yaml"),
    "a component": lambda root: _append(root / "components" / "network.py"),
    "the program": lambda root: _append(root / "stacks" / "program.py"),
    "a policy": lambda root: _append(root / "policies" / "tls.py"),
    "an app file (the image tag)": lambda root: _append(root / "app" / "main.py"),
    "a new app file": lambda root: (root / "app" / "new.txt").write_text("x"),
    "an app file's executable bit": lambda root: (root / "app" / "main.py").chmod(0o755),
    "the alert rules": lambda root: _append(root / "pyinfra" / "files" / "prodstack-alerts.yml"),
}  # fmt: skip


@pytest.mark.parametrize("change", CHANGES)
def test_each_input_of_the_program_changes_the_key(checkout, tmp_path, change):
    changed = tmp_path / "changed"
    shutil.copytree(checkout, changed)
    CHANGES[change](changed)
    assert key(changed) != key(checkout)


def test_files_the_program_never_reads_leave_the_key_alone(checkout, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(checkout, changed)
    (changed / "README.md").write_text("docs change\n")
    (changed / "components" / "__pycache__").mkdir(exist_ok=True)
    (changed / "components" / "__pycache__" / "network.cpython-311.pyc").write_bytes(b"\0")
    assert key(changed) == key(checkout)


def test_overrides_and_the_stack_are_part_of_the_key(checkout):
    assert key(checkout, {"replicas": "2"}) != key(checkout)
    assert key(checkout, {"replicas": "2"}) != key(checkout, {"replicas": "3"})
    assert plancache.cloud_key(checkout, "prod") != key(checkout)


def test_an_app_context_outside_the_checkout_is_read_by_content(checkout, tmp_path):
    context = tmp_path / "myapp"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")
    overrides = {"app_context": str(context)}
    before = key(checkout, overrides)
    (context / "Dockerfile").write_text("FROM scratch\nLABEL x=1\n")
    assert key(checkout, overrides) != before


def test_the_planner_and_its_sdks_are_part_of_the_key(checkout, monkeypatch):
    before = key(checkout)
    monkeypatch.setattr(plancache, "planner_digest", lambda: b"another planner")
    assert key(checkout) != before


def test_no_stack_file_has_no_key(checkout):
    assert plancache.cloud_key(checkout, "staging") is None


# --- Where it lives, and what is kept -------------------------------------------------------


def test_off_turns_it_off_and_the_default_is_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PRODSTACK_PLAN_CACHE", "off")
    assert plancache.directory() is None
    monkeypatch.delenv("PRODSTACK_PLAN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert plancache.directory() == tmp_path / "prodstack" / "plans"


def test_the_least_recently_used_plans_go_first(monkeypatch, tmp_path):
    monkeypatch.setenv("PRODSTACK_PLAN_CACHE", str(tmp_path))
    monkeypatch.setattr(plancache, "KEEP", 3)
    for n in range(3):
        plancache.store(f"k{n}", f"plan {n}")
        os.utime(tmp_path / f"k{n}.json", (1000 + n, 1000 + n))
    assert plancache.load("k0") == "plan 0"  # used: now the most recent
    plancache.store("k3", "plan 3")
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["k0", "k2", "k3"]


def test_the_cache_directory_is_private(monkeypatch, tmp_path):
    folder = tmp_path / "new"
    monkeypatch.setenv("PRODSTACK_PLAN_CACHE", str(folder))
    plancache.store("k", "plan")
    assert folder.stat().st_mode & 0o077 == 0
    assert (folder / "k.json").stat().st_mode & 0o077 == 0


# --- The CLI ---------------------------------------------------------------------------------


def test_a_second_plan_of_unchanged_inputs_is_the_same_plan_from_the_cache(tmp_path, cache):
    first = prodstack("plan", "--stack", "dev", "-o", str(tmp_path / "a.json"), env=cache)
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith(PLANNING)
    again = prodstack("plan", "--stack", "dev", "-o", str(tmp_path / "b.json"), env=cache)
    assert again.returncode == 0, again.stderr
    assert FROM_CACHE in again.stderr and PLANNING not in again.stderr
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert again.stdout == first.stdout
    forced = prodstack("plan", "--stack", "dev", "--no-cache", "-o", str(tmp_path / "c.json"),
                       env=cache)  # fmt: skip
    assert forced.stderr.startswith(PLANNING)
    assert (tmp_path / "c.json").read_bytes() == (tmp_path / "a.json").read_bytes()


def test_a_changed_config_value_is_planned_again(tmp_path, cache):
    prodstack("plan", "--stack", "dev", env=cache)
    changed = prodstack("plan", "--stack", "dev", "--config", "log_level=DEBUG",
                        "--format", "json", env=cache)  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert changed.stderr.startswith(PLANNING)
    assert json.loads(changed.stdout)["settings"]["prodstack:log_level"] == "DEBUG"


def test_a_damaged_cache_entry_is_planned_again(tmp_path, cache):
    assert prodstack("plan", "--stack", "dev", env=cache).returncode == 0
    (entry,) = Path(cache["PRODSTACK_PLAN_CACHE"]).glob("*.json")
    entry.write_text('{"resources": [')
    again = prodstack("plan", "--stack", "dev", env=cache)
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith(PLANNING)
    assert json.loads(entry.read_text())["format"] == "prodstack.plan"


def test_a_cache_that_cannot_be_written_still_plans(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    proc = prodstack("plan", "--stack", "dev", env={"PRODSTACK_PLAN_CACHE": str(blocked)})
    assert proc.returncode == 0, proc.stderr
    assert "resources in" in proc.stdout


def test_a_refusal_is_never_kept(cache, tmp_path):
    root = checkout_copy(tmp_path / "broken")
    program = root / "stacks" / "program.py"
    program.write_text(program.read_text() + "\nraise RuntimeError('boom')\n")
    proc = prodstack("plan", "--stack", "dev", "--root", str(root), env=cache)
    one_line_error(proc, "RuntimeError: boom")
    assert not list(Path(cache["PRODSTACK_PLAN_CACHE"]).glob("*.json"))


# --- Input first: refused before anything is planned ----------------------------------------
# A "planning" progress line is what any planning prints first: its absence proves none ran.


def test_a_bad_usage_file_is_refused_before_planning(tmp_path, cache):
    usage = tmp_path / "traffic.toml"
    usage.write_text('requests_per_month = "lots"\n')
    for args in (("cost", "--stack", "prod"),
                 ("diff", "--base", "HEAD", "--head", "HEAD", "--stack", "prod")):  # fmt: skip
        proc = prodstack(*args, "--usage", str(usage), env=cache)
        line = one_line_error(proc, str(usage), "requests_per_month")
        assert "planning" not in proc.stderr, line


@pytest.mark.parametrize("item", ["size=huge", "replicas=0", "log_level=LOUD\nX",
                                  "alert_email=a'b@\"x", "rate_limit_per_minute=" + "9" * 300])
def test_a_bad_shared_key_is_refused_before_planning_and_says_what_the_program_says(item, cache):
    proc = prodstack("plan", "--stack", "prod", "--config", item, env=cache)
    line = one_line_error(proc, f"prodstack:{item.split('=')[0]}", "is invalid; allowed:")
    assert "planning" not in proc.stderr, line


def test_an_unwritable_output_is_refused_before_planning(cache):
    proc = prodstack("plan", "--stack", "prod", "-o", "/nonexistent/dir/plan.json", env=cache)
    one_line_error(proc, "/nonexistent/dir/plan.json", "cannot write")
    assert "planning" not in proc.stderr


def test_an_unwritable_full_report_is_refused_before_planning(cache):
    proc = prodstack("diff", "--base", "HEAD", "--head", "HEAD", "--stack", "prod",
                     "--full", "/nonexistent/dir/diff.md", env=cache)  # fmt: skip
    one_line_error(proc, "/nonexistent/dir/diff.md", "cannot write")
    assert "planning" not in proc.stderr


def test_once_a_side_has_failed_the_other_is_stopped_or_never_started():
    workers = planning.Workers()
    running = workers.start(["sleep", "60"])
    workers.stop()
    assert running.wait(timeout=10) == -signal.SIGTERM
    with pytest.raises(UsageError, match="the other side failed first"):
        workers.start(["sleep", "60"])


@pytest.fixture(scope="module")
def repo_with_a_bad_head(tmp_path_factory) -> Path:
    """A clone whose HEAD sets an invalid size in Pulumi.prod.yaml."""
    repo = tmp_path_factory.mktemp("bad-head") / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(repo)], check=True)
    stack = repo / "Pulumi.prod.yaml"
    lines = stack.read_text().splitlines()
    lines = [("  prodstack:size: huge" if line.startswith("  prodstack:size:") else line)
             for line in lines]  # fmt: skip
    stack.write_text("\n".join(lines) + "\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "commit", "--quiet", "-am", "an invalid size"], check=True)
    return repo


def test_a_diff_whose_head_has_a_config_error_names_the_head(repo_with_a_bad_head, cache):
    proc = prodstack("diff", "--base", "HEAD~1", "--head", "HEAD", "--stack", "prod",
                     cwd=repo_with_a_bad_head, env=cache)  # fmt: skip
    line = one_line_error(proc, "--head HEAD: Pulumi.prod.yaml: invalid configuration: "
                                "prodstack:size: 'huge' is invalid")  # fmt: skip
    assert PROGRESS.match(proc.stderr.splitlines()[0]), line


def test_a_diff_of_refs_planned_before_comes_from_the_cache(repo_with_a_bad_head, cache):
    args = ("diff", "--base", "HEAD~1", "--head", "HEAD~1", "--stack", "dev")
    first = prodstack(*args, cwd=repo_with_a_bad_head, env=cache)
    assert first.returncode == 0, first.stderr
    again = prodstack(*args, cwd=repo_with_a_bad_head, env=cache)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count(FROM_CACHE) == 2
    assert again.stdout == first.stdout
