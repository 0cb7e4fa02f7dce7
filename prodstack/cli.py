"""`prodstack`: plan, diff, cost and choose, for the cloud and VPS profiles, with no cloud
account and no host; and the operator verbs (status, logs, exec, lock, audit: prodstack/ops/).

Exit codes: 0 ok; 1 the diff found a blocking risk (only with --fail-on); 2 bad usage or
bad input; 3 an internal error. Results go to stdout and nothing else does. stderr says what
a command is doing (`prodstack: planning ...`) and ends, on failure, with the error as one
line; input is checked before anything is planned.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from prodstack import REPO, check_image, comment, ops, planfile, release, restore
from prodstack.errors import UsageError
from prodstack.planning import (
    Workers,
    make_plan,
    plan_for_size,
    plan_in_subprocess,
    profile_of,
)

PLAN_EXAMPLES = """examples:
  prodstack plan --stack prod                       # summary of what `pulumi up` would create
  prodstack plan --stack prod -o prod.json          # ... and the full plan as JSON
  prodstack plan --stack dev --config replicas=2    # with a config value changed
  prodstack plan --profile vps --data size=large --data host_memory_mb=32768 -o vps.json
"""
DIFF_EXAMPLES = """examples:
  prodstack diff base.json head.json
  prodstack diff --base origin/main --head HEAD --stack prod
  prodstack diff --base HEAD~1 --head HEAD --profile vps --format json
  prodstack diff --base origin/main --head HEAD --stack prod --fail-on risk --full diff.md
"""
COST_EXAMPLES = """examples:
  prodstack cost --stack prod
  prodstack cost --profile vps --data size=medium
  prodstack cost --stack prod --usage my-traffic.toml --format json
  prodstack cost --plan prod.json
"""
CHOOSE_EXAMPLES = """examples:
  prodstack choose                                  # both profiles side by side, per size
  prodstack choose --rps 800 --p95-ms 300           # recommend a profile and size
  prodstack choose --current vps:medium --cpu-percent 85   # stay, grow or move, from now
  prodstack choose --current vps:small --p95-ms 900
  prodstack choose --rps 1500 --cpu-percent 80 --format json
"""


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _add_target(parser: argparse.ArgumentParser, *, root: bool = True) -> None:
    parser.add_argument("--stack", help="cloud stack: the STACK of Pulumi.STACK.yaml")
    parser.add_argument("--profile", choices=("cloud", "vps"),
                        help="cloud (default with --stack) or vps")  # fmt: skip
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="cloud: override a Pulumi config value (not for secrets)")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                        help="vps: pyinfra data, as `pyinfra --data` takes it; host facts "
                        "too (host_memory_mb, host_cpus, host_distribution)")
    if root:
        parser.add_argument("--root", type=Path, default=REPO,
                            help="the checkout to plan (default: this repository)")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    _add_no_cache(parser)


def _add_no_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cache", action="store_true",
                        help="plan the cloud stack again even when its inputs are unchanged "
                        "(PRODSTACK_PLAN_CACHE=off does the same; see docs/plan.md)")


def _size(plan: dict[str, Any]) -> str:
    from prodstack import cost

    return cost.plan_size(plan)


def _cost(plan: dict[str, Any], usage_file: Path | None) -> dict[str, Any]:
    from prodstack import cost

    return cost.estimate(plan, cost.load_usage(usage_file, _size(plan)))


def plan_summary(plan: dict[str, Any]) -> str:
    """A short markdown summary of a plan: counts by component and type, and the outputs."""
    what = "VPS profile" if plan["profile"] == "vps" else f"cloud stack `{plan['stack']}`"
    resources = plan["resources"]
    lines = [f"### prodstack plan: {what}", ""]
    by_component = Counter(r.get("component") or "other" for r in resources)
    lines.append(f"{len(resources)} resources in {len(by_component)} components"
                 + (f", {len(plan['operations'])} operations in order"
                    if plan.get("operations") else "") + ".")  # fmt: skip
    lines += ["", "| component | resources | types |", "|---|---:|---|"]
    for component in sorted(by_component):
        types = Counter(r["type"].rsplit(":", 1)[-1] for r in resources
                        if (r.get("component") or "other") == component)  # fmt: skip
        listed = ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in sorted(types.items()))
        lines.append(f"| {component} | {by_component[component]} | {listed} |")
    unknown = sum(1 for r in resources if planfile.has_unknown(r.get("inputs")))
    secret = sum(1 for r in resources if planfile.has_secret(r.get("inputs")))
    lines += ["", f"{unknown} resources have inputs known only after apply; "
              f"{secret} have redacted secret inputs.", ""]  # fmt: skip
    if plan.get("outputs"):
        lines += ["| output | value |", "|---|---|"]
        for key, value in sorted(plan["outputs"].items()):
            lines.append(f"| `{key}` | `{value}` |")
        lines.append("")
    policy = plan.get("policy")
    if policy:
        count = len(policy["violations"])
        lines.append(f"Policy pack `{policy['pack']}`: {count} violation(s).")
        lines += [f"- {v}" for v in policy["violations"]]
        lines.append("")
    for warning in plan.get("warnings", []):
        lines.append(f"> warning: {warning}")
    return "\n".join(lines).rstrip() + "\n"


def cmd_plan(args: argparse.Namespace) -> int:
    if args.output:
        planfile.check_writable(args.output)
    plan = make_plan(args, args.root.resolve())
    if args.output:
        planfile.write(plan, args.output)
    if args.format == "json":
        if not args.output:
            sys.stdout.write(planfile.dumps(plan))
    else:
        sys.stdout.write(plan_summary(plan))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from prodstack import diff

    fail_on = set()
    for item in args.fail_on or []:
        for word in item.split(","):
            if word not in diff.FAIL_ON:
                raise UsageError(f"--fail-on {word}: expected one of {', '.join(diff.FAIL_ON)}")
            fail_on.add(word)
    if args.max_chars < 2000:
        raise UsageError(f"--max-chars {args.max_chars}: must be at least 2000")
    _check_usage(args.usage)
    if args.full:
        planfile.check_writable(args.full)
    if args.plans:
        if len(args.plans) != 2 or args.base or args.head:
            raise UsageError("give BASE.json HEAD.json, or --base REF --head REF, not both")
        base, head = (planfile.load(p) for p in args.plans)
        if args.stack or args.profile or args.config or args.data:
            raise UsageError("--stack/--profile/--config/--data are for --base/--head")
    else:
        if not (args.base and args.head):
            raise UsageError("give BASE.json HEAD.json, or both --base REF and --head REF")
        base, head = _plans_of_refs(args)
    if base["profile"] != head["profile"]:
        raise UsageError(f"cannot compare a {base['profile']} plan with a "
                         f"{head['profile']} plan")  # fmt: skip
    if base["profile"] == "cloud" and base.get("stack") != head.get("stack"):
        print(f"prodstack: note: comparing stack {base.get('stack')} with {head.get('stack')}",
              file=sys.stderr)
    result = diff.compare(base, head, base_cost=_cost(base, args.usage),
                          head_cost=_cost(head, args.usage))  # fmt: skip
    reasons = diff.blocking(result, fail_on)
    if fail_on:  # the verdict travels with the diff: the comment shows the gate
        result["blocking"] = {"fail_on": sorted(fail_on, key=diff.FAIL_ON.index),
                              "reasons": reasons}  # fmt: skip
    if args.full:
        full = (json.dumps(result, indent=1, sort_keys=True) + "\n" if args.format == "json"
                else diff.render_markdown(result, max_chars=10**12))  # fmt: skip
        planfile.write_text(args.full, full)
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=1, sort_keys=True) + "\n")
    else:
        sys.stdout.write(diff.render_markdown(result, max_chars=args.max_chars))
    if reasons:
        print("prodstack: blocking: " + "; ".join(reasons), file=sys.stderr)
        return 1
    return 0


def _plans_of_refs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    from prodstack import gitrefs

    profile_of(args)
    repo = gitrefs.repository_root(Path.cwd())
    commits = (gitrefs.resolve(repo, args.base, "--base"),
               gitrefs.resolve(repo, args.head, "--head"))  # fmt: skip
    profile = profile_of(args)
    if profile == "cloud":
        known = [ref for ref, commit in zip((args.base, args.head), commits, strict=True)
                 if gitrefs.has_file(repo, commit, f"Pulumi.{args.stack}.yaml")]  # fmt: skip
        if not known:
            raise UsageError(f"--stack {args.stack}: unknown stack, neither {args.base} nor "
                             f"{args.head} has Pulumi.{args.stack}.yaml")  # fmt: skip
    print(f"prodstack: planning {args.base} ({commits[0][:12]}) and {args.head} "
          f"({commits[1][:12]})", file=sys.stderr)  # fmt: skip
    workers = Workers()
    with (
        tempfile.TemporaryDirectory(prefix="prodstack-plans-") as tmp,
        gitrefs.checkout(repo, commits[0]) as base_root,
        gitrefs.checkout(repo, commits[1]) as head_root,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        futures = [pool.submit(_plan_of_side, args, root, Path(tmp) / f"{flag[2:]}.json",
                               flag, ref, workers)
                   for flag, ref, root in (("--base", args.base, base_root),
                                           ("--head", args.head, head_root))]  # fmt: skip
        try:
            # The first side to fail is the answer: the other is not waited for.
            for done in as_completed(futures):
                done.result()
        except BaseException:
            for future in futures:
                future.cancel()
            workers.stop()
            raise
        return futures[0].result(), futures[1].result()


def _plan_of_side(args: argparse.Namespace, root: Path, out: Path, flag: str, ref: str,
                  workers: Workers | None = None) -> dict[str, Any]:  # fmt: skip
    """One side of a diff of refs. A stack (or the VPS profile) that the ref doesn't have
    yet, or no longer has, is an empty plan: everything shows as added or removed."""
    profile = profile_of(args)
    marker = root / (f"Pulumi.{args.stack}.yaml" if profile == "cloud" else "pyinfra/deploy.py")
    if not marker.exists():
        print(f"prodstack: {flag} {ref} has no {marker.relative_to(root)}: comparing with "
              "an empty plan", file=sys.stderr)  # fmt: skip
        empty = planfile.new_plan(profile, args.stack if profile == "cloud" else "vps")
        if flag == "--head" and profile == "cloud":
            # A deleted stack file destroys nothing: the diff says so rather than "remove".
            empty["stack_file_removed"] = str(marker.relative_to(root))
        return empty
    try:
        return plan_in_subprocess(args, root, out, workers)
    except UsageError as error:
        raise UsageError(f"{flag} {ref}: {error}") from None


def _check_usage(path: Path | None) -> None:
    from prodstack import cost

    cost.check_usage_file(path)


def cmd_cost(args: argparse.Namespace) -> int:
    from prodstack import cost

    _check_usage(args.usage)
    if args.plan:
        if args.stack or args.profile or args.config or args.data:
            raise UsageError("--plan FILE prices a saved plan; drop --stack/--profile")
        plan = planfile.load(args.plan)
    else:
        plan = make_plan(args, args.root.resolve())
    estimate = _cost(plan, args.usage)
    if args.format == "json":
        sys.stdout.write(json.dumps(estimate, indent=1, sort_keys=True) + "\n")
    else:
        sys.stdout.write(cost.render_markdown(estimate))
    return 0


def cmd_choose(args: argparse.Namespace) -> int:
    from prodstack import choose

    return choose.run(args, plan_for=plan_for_size)


def _subcommand(sub: Any, name: str, summary: str, description: str,
                examples: str) -> argparse.ArgumentParser:  # fmt: skip
    return sub.add_parser(name, help=summary, description=description, epilog=examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="prodstack",
        description="Plan, diff, price and choose prodstack deployments, for the cloud "
        "(Pulumi on AWS) and VPS (pyinfra) profiles, with no cloud account and no host; "
        "then operate them (status, logs, exec, lock, audit).",
        epilog="Run `prodstack COMMAND --help` for each command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    plan = _subcommand(sub, "plan", "record what a deploy would create",
                       "Run the real Pulumi program under Pulumi's mocks (cloud) or the real "
                       "pyinfra deploy against a reference host (vps), and record every "
                       "resource. Secrets are redacted.", PLAN_EXAMPLES)
    _add_target(plan)
    plan.add_argument("-o", "--output", type=Path, help="write the plan (JSON) to this file")
    plan.set_defaults(func=cmd_plan)

    diff = _subcommand(sub, "diff", "compare two plans: risks first, then every change",
                       "Compare two plan files, or plan two git refs in throwaway worktrees "
                       "and compare them.", DIFF_EXAMPLES)
    diff.add_argument("plans", nargs="*", metavar="PLAN.json", help="BASE.json HEAD.json")
    diff.add_argument("--base", metavar="REF", help="git ref of the base")
    diff.add_argument("--head", metavar="REF", help="git ref of the head")
    _add_target(diff, root=False)
    diff.add_argument("--full", type=Path, metavar="FILE",
                      help="also write the whole diff, uncut, to FILE")
    diff.add_argument("--max-chars", type=int, default=12_000, metavar="N",
                      help="cut the folded detail to fit N characters, at a row or resource "
                      "boundary; the summary and every risk row are always kept (default "
                      "12000: a comment a reviewer reads; --full has the rest)")
    diff.add_argument("--fail-on", action="append", metavar="WHAT",
                      help="exit 1 when the diff has any of: replace, delete, risk "
                      "(either), downtime, policy; comma-separated or repeated")
    diff.add_argument("--usage", type=Path, metavar="FILE", help="usage profile for the cost")
    diff.set_defaults(func=cmd_diff)

    cost = _subcommand(sub, "cost", "itemised monthly estimate in USD",
                       "Price a plan from the checked-in price list and the size's usage "
                       "profile. Fixed and usage costs are shown apart.", COST_EXAMPLES)
    _add_target(cost)
    cost.add_argument("--plan", type=Path, metavar="FILE", help="price a saved plan")
    cost.add_argument("--usage", type=Path, metavar="FILE",
                      help="TOML usage profile overriding the size's (requests, GB out, ...)")
    cost.set_defaults(func=cmd_cost)

    choose = _subcommand(sub, "choose", "cloud or VPS, per size, and when to move",
                         "Compare the profiles side by side for each size: cost, capacity, "
                         "database connections, availability, RPO/RTO and what you operate. "
                         "With a load, recommend one.", CHOOSE_EXAMPLES)
    choose.add_argument("--rps", type=float, help="peak requests per second")
    choose.add_argument("--p95-ms", type=float, help="current p95 latency (ms)")
    choose.add_argument("--cpu-percent", type=float, help="sustained host CPU (%%)")
    choose.add_argument("--current", metavar="PROFILE:SIZE",
                        help="what runs now, e.g. vps:medium (the figures given are "
                        "its): the answer is stay, grow, shrink or move")
    choose.add_argument("--format", choices=("markdown", "json"), default="markdown")
    choose.set_defaults(func=cmd_choose)
    check_image.register(sub, _subcommand)
    release.register(sub, _subcommand)  # build, rollback (cloud, and vps via vps_release)
    restore.register(sub, _subcommand)  # restore (cloud: restore_to_time)
    comment.register(sub, _subcommand)  # comment (plan.yml's pull-request comment)
    ops.register(sub, _subcommand)  # status, logs, exec, lock, audit (prodstack/ops/)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        return args.func(args)
    except (UsageError, planfile.PlanFileError) as error:
        print(f"prodstack: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug, not bad input: one line, the traceback on request
        if os.environ.get("PRODSTACK_DEBUG"):
            raise
        print(f"prodstack: internal error: {type(error).__name__}: {error} "
              "(PRODSTACK_DEBUG=1 shows the traceback)", file=sys.stderr)  # fmt: skip
        return 3
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
