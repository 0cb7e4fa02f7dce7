"""How long `prodstack plan` takes, against the cost of importing the SDKs in the same run.

    uv run python -m bench.plan              # --rounds 3

Each round runs, as fresh processes: the import floor (`import pulumi_aws` and the other
SDKs the program needs, which every plan pays), `prodstack plan --stack prod`, `--stack
dev` and `--profile vps`. It prints a table and writes `bench/results/plan/<UTC>.{md,json}`.
The goal is a prod plan in under 10 s on a 2-core machine; the ratio to the import floor
is what stays comparable across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "plan"
GOAL_SECONDS = 10.0
CASES = {
    "import floor (pulumi, pulumi_aws, pulumi_docker, pulumi_random)": [
        sys.executable, "-c", "import pulumi, pulumi_aws, pulumi_docker, pulumi_random"],
    "plan --stack prod": [sys.executable, "-m", "prodstack", "plan", "--stack", "prod",
                          "--format", "json"],
    "plan --stack dev": [sys.executable, "-m", "prodstack", "plan", "--stack", "dev",
                         "--format", "json"],
    "plan --profile vps": [sys.executable, "-m", "prodstack", "plan", "--profile", "vps",
                           "--format", "json"],
}  # fmt: skip


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for round_number in range(args.rounds):
        # Interleaved, so drift in the machine's speed hits every case alike.
        for name, command in CASES.items():
            samples[name].append(timed(command))
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    floor_name = next(iter(CASES))
    floor = statistics.median(samples[floor_name])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append({"case": name, "median_s": round(median, 2), "max_s": round(max(values), 2),
                     "ratio_to_import_floor": round(median / floor, 2)})  # fmt: skip
    prod = next(r for r in rows if r["case"] == "plan --stack prod")
    verdict = "met" if prod["median_s"] < GOAL_SECONDS else "MISSED"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [f"# prodstack plan timing, {stamp}", "",
             f"{args.rounds} interleaved rounds, fresh processes, {os.cpu_count()} cores.", "",
             "| case | median s | max s | × import floor |", "|---|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['median_s']} | {r['max_s']} | {r['ratio_to_import_floor']} |"
              for r in rows]  # fmt: skip
    lines += ["", f"Goal: prod plan under {GOAL_SECONDS:.0f} s: **{verdict}** "
              f"({prod['median_s']} s median)."]  # fmt: skip
    report = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}.md").write_text(report)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(
        {"rounds": args.rounds, "cores": os.cpu_count(), "goal_s": GOAL_SECONDS,
         "rows": rows, "samples": samples}, indent=1) + "\n")  # fmt: skip
    print(report)
    return 0 if verdict == "met" else 1


if __name__ == "__main__":
    raise SystemExit(main())
