"""How long `prodstack plan | diff | choose` take, against the cost of importing the SDKs
in the same run.

    uv run python -m bench.plan              # --rounds 3

Each round runs, as fresh processes: the import floor (`import pulumi_aws` and the other
SDKs the program needs, which every cold plan pays), then each command, cold (`--no-cache`:
the real program runs) and warm (its inputs unchanged since the last run: the plan cache,
`prodstack/plancache.py`). The cache is a temporary directory of the run's own, warmed by
one untimed run of each warm case. It prints a table and writes
`bench/results/plan/<UTC>.{md,json}`. The goals are for an idle 2-core machine; the ratio
to the import floor is what stays comparable across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "plan"
PRODSTACK = [sys.executable, "-m", "prodstack"]
DIFF = ["diff", "--base", "HEAD", "--head", "HEAD", "--stack", "prod"]
FLOOR = "import floor (pulumi, pulumi_aws, pulumi_docker, pulumi_random)"
# name: (command, warm, goal in seconds or None)
CASES: dict[str, tuple[list[str], bool, float | None]] = {
    FLOOR: ([sys.executable, "-c", "import pulumi, pulumi_aws, pulumi_docker, pulumi_random"],
            False, None),
    "plan --stack prod, cold": ([*PRODSTACK, "plan", "--stack", "prod", "--no-cache"],
                                False, None),
    "plan --stack prod": ([*PRODSTACK, "plan", "--stack", "prod"], True, 5.0),
    "plan --stack dev, cold": ([*PRODSTACK, "plan", "--stack", "dev", "--no-cache"],
                               False, None),
    "plan --profile vps": ([*PRODSTACK, "plan", "--profile", "vps"], False, 5.0),
    "diff of one stack, cold": ([*PRODSTACK, *DIFF, "--no-cache"], False, None),
    "diff of one stack": ([*PRODSTACK, *DIFF], True, 10.0),
    "choose": ([*PRODSTACK, "choose"], True, 10.0),
}  # fmt: skip


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory(prefix="prodstack-bench-cache-") as cache:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PRODSTACK_PLAN_CACHE": cache}
        for command, warm, _goal in CASES.values():
            if warm:
                timed(command, env)
        for round_number in range(args.rounds):
            # Interleaved, so drift in the machine's speed hits every case alike.
            for name, (command, _warm, _goal) in CASES.items():
                samples[name].append(timed(command, env))
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    floor = statistics.median(samples[FLOOR])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        goal = CASES[name][2]
        rows.append({"case": name, "median_s": round(median, 2), "max_s": round(max(values), 2),
                     "ratio_to_import_floor": round(median / floor, 2), "goal_s": goal,
                     "met": None if goal is None else median < goal})  # fmt: skip
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    load = os.getloadavg()[0]
    lines = [f"# prodstack plan timing, {stamp}", "",
             f"{args.rounds} interleaved rounds, fresh processes, {os.cpu_count()} cores, "
             f"load {load:.1f} at the end.", "",
             "| case | median s | max s | × import floor | goal |", "|---|---:|---:|---:|---|"]
    for r in rows:
        verdict = "" if r["goal_s"] is None else \
            f"under {r['goal_s']:g} s: {'met' if r['met'] else '**MISSED**'}"
        lines.append(f"| {r['case']} | {r['median_s']} | {r['max_s']} | "
                     f"{r['ratio_to_import_floor']} | {verdict} |")  # fmt: skip
    report = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}.md").write_text(report)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(
        {"rounds": args.rounds, "cores": os.cpu_count(), "load": load, "rows": rows,
         "samples": samples}, indent=1) + "\n")  # fmt: skip
    print(report)
    return 0 if all(r["met"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
