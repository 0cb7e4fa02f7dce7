"""Write the figures the docs quote from the commands that print them.

Every cost, capacity and recovery figure in README.md, docs/cost.md and docs/cloud.md
that `prodstack cost` or `prodstack choose` prints sits in a marked block (the markers of
prodstack/keydocs.py). This module plans the same stacks those commands plan, runs their
code on the plans, and writes each block. Run `python -m prodstack.figuredocs` after a
change to the program, the deploy, the prices, the usage profiles, the benchmarks or
the recovery table; with `--check` it only says which file is stale
(tests/test_figuredocs.py runs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from prodstack import choose, cost, keydocs, planning, recovery, sizes

REPO = keydocs.REPO
GENERATOR = "prodstack.figuredocs"
COMMAND = f"python -m {GENERATOR}"
SIZES = sizes.NAMES
# The stack files `prodstack cost --stack` prices, beside `choose`'s plans, as
# name -> (stack, --config overrides).
STACKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "prod": ("prod", ()),
    "dev": ("dev", ()),
    "prod+rds_proxy": ("prod", ("rds_proxy=true",)),
}
# `prodstack choose` examples the docs show, as (flags, recommend's arguments).
CHOOSE_EXAMPLE = ("--rps 800 --p95-ms 300", (800, 300, None, None))
RECOMMEND_EXAMPLES = (
    ("--rps 800 --p95-ms 300", (800, 300, None, None)),
    ("--rps 1500", (1500, None, None, None)),
    ("--p95-ms 900", (None, 900, None, None)),
    ("--current vps:medium --cpu-percent 85", (None, None, 85, ("vps", "medium"))),
    ("--current vps:medium --cpu-percent 20", (None, None, 20, ("vps", "medium"))),
)

Plans = Mapping[str, dict[str, Any]]


# --- Plans ------------------------------------------------------------------------------


def _stack_plan(stack: str, config: tuple[str, ...] = ()) -> dict[str, Any]:
    """The plan `prodstack cost --stack STACK [--config ...]` prices, made by
    `prodstack plan`."""
    args = argparse.Namespace(profile="cloud", stack=stack, config=list(config), data=[])
    with tempfile.TemporaryDirectory(prefix="prodstack-figures-") as tmp:
        return planning.plan_in_subprocess(args, REPO, Path(tmp) / "plan.json")


def make_plans() -> dict[str, dict[str, Any]]:
    """Every plan the blocks need, keyed `prod`, `dev` (stack files) and `cloud:SIZE`,
    `vps:SIZE` (what `prodstack choose` plans), two at a time as `choose` makes them."""
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        **{name: (lambda s=stack, c=config: _stack_plan(s, c))
           for name, (stack, config) in STACKS.items()},
        **{f"{p}:{s}": (lambda p=p, s=s: planning.plan_for_size(p, s))
           for p in choose.PROFILES for s in SIZES},
    }  # fmt: skip
    print(f"figuredocs: planning {len(jobs)} stacks and profiles, two at a time",
          file=sys.stderr)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def _estimate(plan: Mapping[str, Any], **usage: Any) -> dict[str, Any]:
    """`prodstack cost` of a plan, with usage keys set as a `--usage` file would."""
    return cost.estimate(plan, {**cost.load_usage(None, cost.plan_size(plan)), **usage})


# --- Blocks -----------------------------------------------------------------------------


def _row(label: str, cells: list[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def readme_cost_sizes(plans: Plans) -> str:
    """README, "Beside the reference figures": each size on both profiles."""
    cloud = [_estimate(plans[f"cloud:{s}"]) for s in SIZES]
    vps = {provider: [_estimate(plans[f"vps:{s}"], vps_provider=provider) for s in SIZES]
           for provider in cost.VPS_PROVIDERS}  # fmt: skip
    where = cloud[0]["region"]
    return "\n".join([
        "| | " + " | ".join(SIZES) + " |", "|---" + "|---:" * len(SIZES) + "|",
        _row(f"cloud, fixed, {where} (before traffic)",
             [cost.usd(e["fixed_monthly"]) for e in cloud]),
        _row(f"cloud, with the size's usage profile, {where}",
             [cost.usd(e["total_monthly"]) for e in cloud]),
        _row("VPS host, " + " / ".join(vps[p][0]["lines"][0]["item"].split()[0]
                                       for p in cost.VPS_PROVIDERS),
             [" / ".join(cost.usd(vps[p][i]["total_monthly"]) for p in cost.VPS_PROVIDERS)
              for i in range(len(SIZES))]),
    ])  # fmt: skip


def readme_cost_prod(plans: Plans) -> str:
    """README: `prodstack cost --stack prod`, as printed, without the price sources."""
    text = cost.render_markdown(_estimate(plans["prod"]))
    text = text[: text.index("<details><summary>Price sources")].rstrip()
    return ("<details><summary><code>uv run prodstack cost --stack prod</code> (the sources "
            f"table left out)</summary>\n\n{text}\n\n</details>")


def readme_choose(plans: Plans) -> str:
    """README: `prodstack choose` with the example's figures, as printed."""
    flags, (rps, p95, cpu, current) = CHOOSE_EXAMPLE
    result = choose.answer(lambda p, s: plans[f"{p}:{s}"], rps, p95, cpu, current)
    return (f"<details><summary><code>uv run prodstack choose {flags}</code></summary>\n\n"
            f"{choose.render_markdown(result).rstrip()}\n\n</details>")


def cost_results(plans: Plans) -> str:
    """docs/cost.md: every stack and size, fixed and usage, beside the reference."""
    rows = ["| | this estimate | fixed + usage | the reference (docs/targets.md) |",
            "|---|---:|---:|---|"]

    def reference(e: Mapping[str, Any]) -> str:
        return cost.reference_line(e).split(" (")[0].removesuffix(" a month")

    for label, key in (("cloud `dev` (the stack file)", "dev"),
                       *((f"cloud {s} (the prod stack at {s})", f"cloud:{s}") for s in SIZES),
                       ("cloud `prod` (the stack file)", "prod")):  # fmt: skip
        e = _estimate(plans[key])
        rows.append(f"| {label} | **{cost.usd(e['total_monthly'])}** | "
                    f"{cost.usd(e['fixed_monthly'])} + {cost.usd(e['usage_monthly'])} | "
                    f"{reference(e)} |")
    for s in SIZES:
        for provider in cost.VPS_PROVIDERS:
            e = _estimate(plans[f"vps:{s}"], vps_provider=provider)
            host = e["lines"][0]["item"].rsplit(" (", 1)[0]
            rows.append(f"| VPS {s} on {host} | **{cost.usd(e['total_monthly'])}** | "
                        f"host only | {reference(e)} |")
    return "\n".join(rows)


def cost_by_component(plans: Plans) -> str:
    """docs/cloud.md: what each size is, and its monthly cost by component."""
    c = sizes.CLOUD
    estimates = [_estimate(plans[f"cloud:{s}"]) for s in SIZES]
    rows = ["| | " + " | ".join(SIZES) + " |", "|---" + "|---:" * len(SIZES) + "|",
            _row("API tasks (min-max), each", [
                f"{c[s].replicas} ({c[s].min_replicas}-{c[s].max_replicas}), "
                f"{int(c[s].task_cpu) / 1024:g} vCPU / {int(c[s].task_memory) / 1024:g} GB"
                for s in SIZES]),
            _row("AZs / NAT", [f"{c[s].az_count} / {c[s].nat.replace('_az', ' AZ')}"
                               for s in SIZES]),
            _row("PostgreSQL", [f"{c[s].db_instance_class}, {c[s].storage_gb} GB, "
                                f"{'Multi-AZ' if c[s].multi_az else 'single-AZ'}"
                                for s in SIZES]),
            _row("Valkey", [f"{c[s].cache_node_type}"
                            f"{' + replica' if c[s].multi_az else ', no replica'}"
                            for s in SIZES])]  # fmt: skip
    for kind in ("fixed", "usage"):
        components = sorted({li["component"] for e in estimates for li in e["lines"]
                             if li["kind"] == kind})  # fmt: skip
        for component in components:
            rows.append(_row(f"{kind}: {component}", [cost.usd(float(sum(
                (Decimal(str(li["monthly"])) for li in e["lines"]
                 if li["kind"] == kind and li["component"] == component), Decimal(0))))
                for e in estimates]))
        rows.append(_row(f"**{kind}**", [f"**{cost.usd(e[f'{kind}_monthly'])}**"
                                         for e in estimates]))
    rows.append(_row(f"**total, {estimates[0]['region']}**",
                     [f"**{cost.usd(e['total_monthly'])}**" for e in estimates]))
    return "\n".join(rows)


def cost_callouts(plans: Plans) -> str:
    """docs/cost.md: what `prodstack cost --stack prod` calls out, as printed."""
    return "\n".join(f"- {c}" for c in _estimate(plans["prod"])["callouts"])


def choose_capacity(_: Plans) -> str:
    """docs/cost.md: where `choose`'s capacity figures come from."""
    b = choose.latest_bench()
    return "\n".join([
        f"- **Capacity** is taken from the newest benchmark run, `{b['file']}` ({b['when']}): "
        f"{b['read_route']} {b['read_rps']:,} req/s and {b['write_route']} "
        f"{b['write_rps']:,} req/s on {b['machine']['cpus']} cores, that is "
        f"{b['read_rps_per_core']:,} and {b['write_rps_per_core']:,} req/s per core. "
        "Assumptions:",
        *(f"  - {a}" for a in b["assumptions"]),
    ])


def choose_recommendations(_: Plans) -> str:
    """docs/cost.md: what `choose` recommends for a few loads, and why."""
    lines = []
    for flags, (rps, p95, cpu, current) in RECOMMEND_EXAMPLES:
        rec = choose.recommend(rps, p95, cpu, current)
        heading = choose.render_recommendation(rec)[0].removeprefix("### Recommendation: ")
        c = rec["capacity"]
        lines.append(
            f"- `prodstack choose {flags}`: {heading}. The load: {rec['load_basis']}; it "
            f"serves {c['usable_write_rps']:,} req/s of creates at "
            f"{choose.CPU_PERCENT_MAX:g} % CPU"
            + (f" ({rec['tasks']} tasks)" if "tasks" in rec else "")
            + (f", {c['usable_write_rps_at_max']:,} at its ceiling of {c['max_replicas']} tasks"
               if "max_replicas" in c else "") + ".")
    return "\n".join(lines)


def recovery_summary(_: Plans) -> str:
    """docs/cost.md: the RPO and RTO lines `choose` and `cost` print."""
    return "\n".join([
        "- **RPO / RTO**, from `prodstack/recovery.py` (every mechanism in docs/cloud.md), "
        "as `choose` and `cost` print them:",
        *(f"  - {name}: RPO {recovery.summary(profile)['rpo']}; RTO "
          f"{recovery.summary(profile)['rto']}."
          for profile, name in (("cloud", "cloud"), ("vps", "VPS"))),
    ])


def cost_rds_proxy(plans: Plans) -> str:
    """docs/cloud.md: the line RDS Proxy adds to the prod stack."""
    lines = [li for li in _estimate(plans["prod+rds_proxy"])["lines"]
             if li["item"].startswith("RDS Proxy")]  # fmt: skip
    return "\n".join(f"- `prodstack cost --stack prod --config rds_proxy=true` adds the line "
                     f"`{li['item']}`: {cost.usd(li['monthly'])} a month." for li in lines)


def recovery_table(_: Plans) -> str:
    return recovery.markdown_table()


# (file, block name) -> what writes it
BLOCKS: dict[tuple[str, str], Callable[[Plans], str]] = {
    ("README.md", "cost-sizes"): readme_cost_sizes,
    ("README.md", "cost-prod"): readme_cost_prod,
    ("README.md", "choose-example"): readme_choose,
    ("docs/cost.md", "cost-results"): cost_results,
    ("docs/cost.md", "cost-callouts"): cost_callouts,
    ("docs/cost.md", "recovery"): recovery_summary,
    ("docs/cost.md", "choose-capacity"): choose_capacity,
    ("docs/cost.md", "choose-recommendations"): choose_recommendations,
    ("docs/cloud.md", "cost-by-size"): cost_by_component,
    ("docs/cloud.md", "cost-rds-proxy"): cost_rds_proxy,
    ("docs/cloud.md", "recovery-table"): recovery_table,
}


def blocks(plans: Plans | None = None) -> dict[tuple[str, str], str]:
    """Each block's wanted text; plans are made when not given (slow: see make_plans)."""
    plans = plans if plans is not None else make_plans()
    return {key: write(plans) for key, write in BLOCKS.items()}


def rendered(generated: Mapping[tuple[str, str], str], repo: Path = REPO) -> dict[Path, str]:
    """Each file's wanted content."""
    out: dict[Path, str] = {}
    for (name, block), body in generated.items():
        path = repo / name
        begin, end = keydocs.markers(block, GENERATOR)
        out[path] = keydocs.between_markers(out.get(path) or path.read_text(), body, path,
                                            begin, end)  # fmt: skip
    return out


def stale(generated: Mapping[tuple[str, str], str] | None = None,
          repo: Path = REPO) -> list[Path]:  # fmt: skip
    wanted = rendered(generated if generated is not None else blocks(), repo)
    return [path for path, text in wanted.items() if path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Write the cost, capacity and recovery figures the docs quote from "
        "`prodstack cost` and `prodstack choose` run on this repository's plans.",
        epilog=f"examples:\n  {COMMAND}\n  {COMMAND} --check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        return keydocs.report_stale(stale(), COMMAND)
    keydocs.write(rendered(blocks()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
