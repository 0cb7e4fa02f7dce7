"""The tests' recorder: the real Pulumi program under mocks in a fresh interpreter
(`python -m tests.support.recorder`), as a manifest or as a plan.

Pulumi's mocks are process-wide, so each recording needs its own interpreter. The product
plans through `python -m prodstack plan` (its one plan worker); tests also need what only
they ask for: the manifest (every registered resource, for tests/cloud), stand-in secrets
and a fixed image tag. Both call the same `prodstack.cloud_plan.record`.
Use `tests.support.recordings.record_isolated`, which makes each recording once a session.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prodstack import planfile
from prodstack.cloud_plan import REPO, record, to_plan, with_policy
from prodstack.errors import UsageError
from prodstack.planning import parse_pairs


def record_isolated(
    stack: str,
    out: Path,
    overrides: dict[str, str | None] | None = None,
    *,
    root: Path = REPO,
    plan: bool = False,
    secrets: dict[str, str] | None = None,
    image_tag: str | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """`record` (or the plan, with ``plan=True``) in a fresh interpreter; the JSON result.

    Secrets travel in a 0600 file, never on a command line.
    """
    args = [sys.executable, "-m", "tests.support.recorder", "--stack", stack, "--root",
            str(root), "-o", str(out)]  # fmt: skip
    if plan:
        args.append("--plan")
    if image_tag:
        args += ["--image-tag", image_tag]
    for key, value in (overrides or {}).items():
        args += ["--unset", key] if value is None else ["--config", f"{key}={value}"]
    secrets_file = None
    if secrets:
        secrets_file = out.with_name(out.name + ".secrets.json")
        secrets_file.touch(mode=0o600)
        secrets_file.write_text(json.dumps(secrets))
        args += ["--secrets-file", str(secrets_file)]
    try:
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    finally:
        if secrets_file:
            secrets_file.unlink(missing_ok=True)
    if proc.returncode == 2:
        raise UsageError(proc.stderr.strip().splitlines()[-1].removeprefix("prodstack: "))
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"recording {stack} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.recorder")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--root", type=Path, default=REPO)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--plan", action="store_true")
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--unset", action="append", default=[])
    parser.add_argument("--image-tag")
    parser.add_argument("--secrets-file", type=Path)
    args = parser.parse_args(argv)
    overrides: dict[str, str | None] = dict(parse_pairs(args.config, "--config"))
    for key in args.unset:
        overrides[key] = None
    secrets = json.loads(args.secrets_file.read_text()) if args.secrets_file else None
    try:
        manifest = record(args.stack, overrides, root=args.root, secrets=secrets,
                          image_tag=args.image_tag)  # fmt: skip
        result = with_policy(to_plan(manifest)) if args.plan else manifest
    except UsageError as error:
        print(f"prodstack: {error}", file=sys.stderr)
        return 2
    if args.plan:
        text = planfile.dumps(result)
    else:
        text = json.dumps(result, indent=1, sort_keys=True, default=str)
    Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
