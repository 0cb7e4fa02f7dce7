"""The one way prodstack plans: the real program (cloud) or deploy (VPS) of a checkout, or
the kept plan of the same inputs (`prodstack.plancache`), in this process or in one fresh
interpreter (`python -m prodstack plan`), the only plan worker (Pulumi's mocks are
process-wide, so `diff` plans each side in its own). `prodstack.cli` and the operator verbs
(`prodstack.ops`) both plan through here."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from prodstack import plancache, planfile
from prodstack.errors import UsageError

REPO = plancache.REPO


def progress(message: str) -> None:
    """What a command is doing, on stderr at once: stdout carries only the result."""
    print(f"prodstack: {message}", file=sys.stderr, flush=True)


def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    """`KEY=VALUE` arguments of a repeatable flag, or a `UsageError` naming the flag."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        values[key.strip()] = value
    return values


def profile_of(args: argparse.Namespace) -> str:
    profile = args.profile or ("cloud" if args.stack else None)
    if profile is None:
        raise UsageError("give --stack STACK (cloud) or --profile vps")
    if profile == "vps" and args.stack:
        raise UsageError("--stack is for the cloud profile; the VPS profile takes --data")
    if profile == "cloud" and not args.stack:
        raise UsageError("--profile cloud needs --stack STACK")
    if profile == "cloud" and args.data:
        raise UsageError("--data is for --profile vps; the cloud profile takes --config")
    if profile == "vps" and args.config:
        raise UsageError("--config is for the cloud profile; the VPS profile takes --data")
    return profile


def make_plan(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Run the real program (cloud) or deploy (vps) of ``root`` and return its plan; a
    cloud plan whose inputs are unchanged comes from the plan cache (`prodstack.plancache`)."""
    if profile_of(args) == "cloud":
        from prodstack import cloud_plan

        overrides = parse_pairs(args.config, "--config")
        # Refusals of the stack file and of the shared keys come before anything else.
        config, _ = cloud_plan.stack_config(root, args.stack, overrides)
        cloud_plan.check_shared_keys(args.stack, config, overrides)
        key = cache_key(args, root)
        cached = cached_plan(args, key)
        if cached is not None:
            return cached
        progress(f"planning cloud stack {args.stack}: the Pulumi program under Pulumi's mocks")
        text = planfile.dumps(cloud_plan.plan_cloud(args.stack, overrides, root=root))
        plancache.store(key, text)
        return json.loads(text)
    from prodstack import vps_plan

    progress("planning the VPS profile: the pyinfra deploy against a reference host")
    return vps_plan.plan_vps(vps_plan.parse_data(args.data), root=root)


def cache_key(args: argparse.Namespace, root: Path) -> str | None:
    if profile_of(args) != "cloud" or getattr(args, "no_cache", False):
        return None
    return plancache.cloud_key(root, args.stack, parse_pairs(args.config, "--config"))


def cached_plan(args: argparse.Namespace, key: str | None) -> dict[str, Any] | None:
    text = plancache.load(key)
    try:
        plan = json.loads(text) if text is not None else None
    except ValueError:
        plan = None  # a damaged entry is a miss; planning writes it again
    if not isinstance(plan, dict) or plan.get("format") != planfile.FORMAT:
        return None
    size = next((item.split("=", 1)[1] for item in args.config if item.startswith("size=")), "")
    progress(f"stack {args.stack}{f' at size {size}' if size else ''}: inputs unchanged, plan "
             "from the cache (--no-cache plans again)")  # fmt: skip
    return plan


def target_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--profile", profile_of(args)]
    if args.stack:
        flags += ["--stack", args.stack]
    for item in args.config:
        flags += ["--config", item]
    for item in args.data:
        flags += ["--data", item]
    if getattr(args, "no_cache", False):
        flags.append("--no-cache")
    return flags


class Workers:
    """The plan workers of one diff: once a side has failed, the other is stopped, or never
    started (it may be between the cache and its start when the first fails)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._stopped = False

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            if self._stopped:
                raise UsageError("not planned: the other side failed first")
            proc = subprocess.Popen(command, **kwargs)
            self._procs.append(proc)
            return proc

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for proc in self._procs:
                proc.terminate()


def plan_in_subprocess(
    args: argparse.Namespace, root: Path, out: Path, workers: Workers | None = None
) -> dict[str, Any]:
    """A plan made by a fresh interpreter (Pulumi's mocks are process-wide), or the cached
    plan of the same inputs without starting one."""
    cached = cached_plan(args, cache_key(args, root))
    if cached is not None:
        return cached
    command = [sys.executable, "-m", "prodstack", "plan", *target_flags(args),
               "--root", str(root), "-o", str(out), "--format", "json"]  # fmt: skip
    start = workers.start if workers is not None else subprocess.Popen
    proc = start(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    _, stderr = proc.communicate()
    if proc.returncode == 2:
        message = (stderr.strip().splitlines() or ["plan failed"])[-1]
        raise UsageError(message.removeprefix("prodstack: "))
    if proc.returncode != 0:
        lines = stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        raise UsageError(f"planning failed: {lines[-1].removeprefix('prodstack: ')}")
    return planfile.load(out)


def plan_for_size(profile: str, size: str) -> dict[str, Any]:
    """The plan of a profile at a size, from the real program or deploy (for `choose`)."""
    with tempfile.TemporaryDirectory(prefix="prodstack-choose-") as tmp:
        args = argparse.Namespace(
            profile=profile, stack="prod" if profile == "cloud" else None,
            # A prod-like stack at each size, without the prod-only minimums.
            config=[f"size={size}", "environment=choose", "replicas=auto", "min_replicas=auto",
                    "max_replicas=auto", "az_count=auto", "nat=auto", "multi_az=auto",
                    "storage_gb=auto", "max_storage_gb=auto"] if profile == "cloud" else [],
            data=[f"size={size}"] if profile == "vps" else [],
        )  # fmt: skip
        return plan_in_subprocess(args, REPO, Path(tmp) / "plan.json")
