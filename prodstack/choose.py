"""Cloud or VPS, and which size: the two profiles side by side, per size.

Per size it shows the monthly cost (from `prodstack.cost`), the capacity (the `bench/`
figures scaled to each replica's CPU, times the replicas, with headroom), the database
connection budget, availability, backup RPO and restore RTO, and what the team must run
itself. `recommend` turns traffic figures, and what runs now (`--current`), into a profile
and size, using the thresholds for leaving a VPS (docs/targets.md, "Capacity": CPU above
70 % for long, response time above 500 ms, more than 1,000 req/s) and sizing by the
capacity at the steady task count with 30 % headroom.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from prodstack import REPO, budget, cost, recovery, sizes
from prodstack.errors import UsageError
from prodstack.profile import VpsProfile

BENCH_DIR = REPO / "bench" / "results"
SIZES = cost.SIZES

# When to leave a VPS (docs/targets.md, "Capacity").
CPU_PERCENT_MAX = 70.0
P95_MS_MAX = 500.0
RPS_MAX = 1000.0
# Capacity is planned at the CPU target, leaving 30 % headroom.
HEADROOM = Decimal("0.70")
# Routes whose bench figures stand for reads and writes.
READ_ROUTE = "GET /api/v1/alerts (cached)"
WRITE_ROUTE = "POST /api/v1/alerts"
# The app's defaults (app/core/config.py): WEB_CONCURRENCY 1 worker, DB_POOL_MAX 10 a worker.
WEB_CONCURRENCY = 1
DB_POOL_MAX = 10
PROFILES = ("cloud", "vps")
# The size a VPS runs when `size` is not set: the shared schema's default.
VPS_DEFAULT_SIZE = VpsProfile.model_fields["size"].default

# RPO and RTO: prodstack/recovery.py, the one table the docs are checked against.
FAILOVER = recovery.RECOVERY["cloud"][0]
# How `pulumi up` replaces the tasks, by the service's deployment strategy.
CLOUD_DEPLOYS = {
    "ROLLING": "ECS rolls the tasks, with circuit-breaker rollback",
    "BLUE_GREEN": "ECS starts a green set beside blue, bakes it, and rolls back on the "
                  "5xx and healthy-host alarms",
}
OPERATE = {
    "cloud": [
        "image builds and `pulumi up` ({deploy})",
        "answering the CloudWatch alarms; AWS patches the hosts, PostgreSQL minor versions "
        "and fails over the database",
        "PostgreSQL major upgrades and restore drills",
    ],
    "vps": [
        "OS and package updates, reboots, disk space",
        "PostgreSQL and Redis upgrades, tuning and restore drills",
        "backups off the host (`backup_s3_bucket`) and checking they restore",
        "answering the alerts the host's Prometheus and Alertmanager send (set `alert_email` "
        "or the secret `ALERT_WEBHOOK_URL`)",
        "TLS renewal (automated with Let's Encrypt) and the firewall",
    ],
}


# --- Inputs ---------------------------------------------------------------------------


def latest_bench(directory: Path = BENCH_DIR) -> dict[str, Any]:
    """The newest committed benchmark run, with what it measured and under which setup."""
    # bench/run.py names its reports by UTC timestamp (other benchmarks use subfolders).
    runs = sorted(directory.glob("[0-9]*T*Z.json"))
    if not runs:
        raise UsageError(f"{directory}: no benchmark results; run `uv run python -m bench.run`")
    path = runs[-1]
    data = json.loads(path.read_text(encoding="utf-8"))
    cpus = int(data["machine"]["cpus"])
    results = data["results"]
    client = None
    if READ_ROUTE not in results and data.get("settings", {}).get("clients"):
        # A run that compared Redis clients keeps results per client; the app's default
        # client is the one bench/run.py lists first.
        client = str(data["settings"]["clients"]).split(",")[0]
        results = results.get(client, {})
    for route in (READ_ROUTE, WRITE_ROUTE):
        if route not in results:
            raise UsageError(f"{path}: no result for route {route!r}")
    per_core = {
        name: (Decimal(str(results[route]["rps"])) / cpus).quantize(Decimal(1))
        for name, route in (("read", READ_ROUTE), ("write", WRITE_ROUTE))
    }
    settings = data["settings"]
    return {
        "file": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
        "when": data["when"],
        "machine": data["machine"],
        "settings": settings,
        "redis_client": client,
        "read_route": READ_ROUTE,
        "write_route": WRITE_ROUTE,
        "read_rps": results[READ_ROUTE]["rps"],
        "write_rps": results[WRITE_ROUTE]["rps"],
        "read_rps_per_core": int(per_core["read"]),
        "write_rps_per_core": int(per_core["write"]),
        "assumptions": [
            f"{settings['replicas']} replicas of one uvicorn worker each behind nginx, with "
            f"PostgreSQL, Redis and wrk ({settings['connections']} connections) on the same "
            f"{cpus}-core VM: the whole stack shared {cpus} cores",
            "req/s per core = the route's req/s / the VM's cores (the load generator's share "
            "is counted against the app, so this is a floor)",
            "a replica runs one worker, so it uses at most one core",
            f"capacity is planned at {int(HEADROOM * 100)} % CPU (the CPU target), leaving "
            f"{100 - int(HEADROOM * 100)} % headroom",
            "the database and cache are assumed not to be the bottleneck at these rates",
        ],
    }


# --- Per-profile facts --------------------------------------------------------------------


def capacity(bench: Mapping[str, Any], vcpu: float, replicas: int,
             max_replicas: int | None = None) -> dict[str, Any]:
    """req/s a set of replicas serves, from the bench's per-core rates."""
    share = min(Decimal(str(vcpu)), Decimal(1))

    def rate(per_core: int, count: int) -> int:
        return int((per_core * share * count).quantize(Decimal(1), ROUND_HALF_UP))

    out = {
        "replicas": replicas,
        "vcpu_per_replica": float(vcpu),
        "read_rps_per_replica": rate(bench["read_rps_per_core"], 1),
        "write_rps_per_replica": rate(bench["write_rps_per_core"], 1),
        "read_rps": rate(bench["read_rps_per_core"], replicas),
        "write_rps": rate(bench["write_rps_per_core"], replicas),
    }
    out["usable_read_rps"] = int(Decimal(out["read_rps"]) * HEADROOM)
    out["usable_write_rps"] = int(Decimal(out["write_rps"]) * HEADROOM)
    if max_replicas is not None and max_replicas > replicas:
        out["max_replicas"] = max_replicas
        out["usable_write_rps_at_max"] = int(
            Decimal(rate(bench["write_rps_per_core"], max_replicas)) * HEADROOM)
    return out


def _vps_budget(replicas: int, strategy: str, max_connections: int) -> dict[str, Any]:
    """The connection budget the VPS deploy enforces (prodstack/budget.py), one host."""
    found = budget.vps_budget([(replicas, strategy)], max_connections)
    out = {
        "max_connections": max_connections, "available": found["available"],
        "pool_per_worker": budget.APP_DB_POOL_MAX, "workers": budget.APP_WEB_CONCURRENCY,
        "peak_replicas": found["alive_replicas"], "peak": found["peak"], "ok": found["ok"],
    }  # fmt: skip
    if not found["ok"]:
        out["warning"] = f"the deploy refuses this: it needs {found['fix']}"
    return out


def _resource(plan: Mapping[str, Any], type_: str) -> list[dict[str, Any]]:
    return sorted((r for r in plan.get("resources", []) if r.get("type") == type_),
                  key=lambda r: str(r.get("name")))


def _env(task: Mapping[str, Any], name: str) -> str | None:
    try:
        containers = json.loads(task.get("inputs", {}).get("containerDefinitions", "[]"))
    except (TypeError, json.JSONDecodeError):
        return None
    for container in containers:
        if container.get("name") != "api":
            continue
        for pair in container.get("environment", []):
            if pair.get("name") == name:
                return str(pair.get("value"))
    return None


def cloud_facts(plan: Mapping[str, Any], bench: Mapping[str, Any]) -> dict[str, Any]:
    service = _resource(plan, "aws:ecs/service:Service")[0]
    s = service["inputs"]
    tasks = {t["name"]: t for t in _resource(plan, "aws:ecs/taskDefinition:TaskDefinition")}
    task = next((t for n, t in tasks.items() if "migrate" not in n), None)
    vcpu = int(task["inputs"]["cpu"]) / 1024 if task else 0.25
    replicas = int(s.get("desiredCount", 1))
    target = _resource(plan, "aws:appautoscaling/target:Target")
    max_replicas = int(target[0]["inputs"]["maxCapacity"]) if target else replicas
    workers = int(_env(task, "WEB_CONCURRENCY") or WEB_CONCURRENCY) if task else WEB_CONCURRENCY
    pool = int(_env(task, "DB_POOL_MAX") or DB_POOL_MAX) if task else DB_POOL_MAX
    db = _resource(plan, "aws:rds/instance:Instance")[0]["inputs"]
    subnets = len((s.get("networkConfiguration") or {}).get("subnets") or [])
    cache = _resource(plan, "aws:elasticache/replicationGroup:ReplicationGroup")
    failover = bool(cache and cache[0]["inputs"].get("automaticFailoverEnabled"))
    return {
        "capacity": capacity(bench, vcpu, replicas, max_replicas),
        "db_budget": _cloud_budget(plan, db["instanceClass"], max_replicas, pool, workers),
        "availability": (
            f"{'Multi-AZ' if db.get('multiAz') else 'single-AZ'} database "
            f"({db['instanceClass']}), tasks across {subnets} AZs, cache "
            f"{'with' if failover else 'without'} automatic failover"
        ),
        "backup": {**recovery.summary("cloud"),
                   "retention_days": db.get("backupRetentionPeriod"),
                   "rto_failover": (f"{FAILOVER.rto} automatic failover to the standby "
                                    "(Multi-AZ)" if db.get("multiAz")
                                    else "none: single-AZ")},
        "operate": _cloud_operate(s),
    }


def _cloud_operate(service: Mapping[str, Any]) -> list[str]:
    strategy = (service.get("deploymentConfiguration") or {}).get("strategy") or "ROLLING"
    deploy = CLOUD_DEPLOYS.get(strategy, f"ECS deploys {strategy}")
    return [line.format(deploy=deploy) for line in OPERATE["cloud"]]


def _cloud_budget(plan: Mapping[str, Any], instance_class: str, max_replicas: int,
                  pool: int, workers: int) -> dict[str, Any]:
    """The connection budget the stack itself enforces (stacks/config.py), for this plan:
    reserved slots, the deployment surge, the migrate task and an RDS Proxy's share."""
    from stacks.config import DEPLOY_SURGE
    from stacks.config import connection_budget as stack_budget

    proxy_percent = None
    for group in _resource(plan, "aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup"):
        pool_config = group["inputs"].get("connectionPoolConfig") or {}
        proxy_percent = int(pool_config.get("maxConnectionsPercent", 100))
    budget = stack_budget(instance_class, max_replicas=max_replicas, web_concurrency=workers,
                          db_pool_max=pool, proxy_percent=proxy_percent)  # fmt: skip
    out = {
        "max_connections": budget["max_connections"], "available": budget["available"],
        "pool_per_worker": pool, "workers": workers, "peak_replicas": max_replicas * DEPLOY_SURGE,
        "peak": budget["peak"], "proxy_share": budget["proxy_share"],
        "ok": budget["peak"] <= budget["available"],
    }  # fmt: skip
    if not out["ok"]:
        out["warning"] = f"the stack refuses this: it needs {budget['fix']}"
    return out


def vps_facts(plan: Mapping[str, Any], bench: Mapping[str, Any]) -> dict[str, Any]:
    settings = plan.get("settings") or {}
    size = settings.get("size") or VPS_DEFAULT_SIZE
    replicas_res = _resource(plan, "vps:api_replicas")
    if replicas_res:
        replicas = int(replicas_res[0]["inputs"]["replicas"])
        cpus = float(replicas_res[0]["inputs"]["cpus"])
    else:
        replicas = int(settings.get("replicas") or sizes.VPS[size].replicas)
        cpus = float(settings.get("container_cpus") or sizes.VPS[size].container_cpus)
    # The plan's settings are the deploy's effective data: group_data/all.py merged by
    # pyinfra's own loader, as tasks/config.py validates it.
    if settings.get("postgres_max_connections") is None:
        raise UsageError("VPS plan: no `postgres_max_connections` in its settings; make it "
                         "with `prodstack plan --profile vps`")
    max_connections = int(settings["postgres_max_connections"])
    offsite = bool(settings.get("backup_s3_bucket"))
    return {
        "capacity": capacity(bench, cpus, replicas),
        "db_budget": _vps_budget(replicas, settings.get("deploy_strategy") or "rolling",
                                 max_connections),
        "availability": "one host: no failover; PostgreSQL, Redis and the replicas share it",
        "backup": {**recovery.summary("vps"), "offsite": offsite,
                   "retention_days": settings.get("backup_retention_days")},
        "operate": OPERATE["vps"],
    }


# --- Compare and recommend ----------------------------------------------------------------


def compare(plan_for: Callable[[str, str], dict[str, Any]],
            usage_for: Callable[[str], dict[str, Any]] | None = None,
            bench_dir: Path = BENCH_DIR) -> dict[str, Any]:
    """Both profiles at every size. `plan_for(profile, size)` makes a plan."""
    bench = latest_bench(bench_dir)
    usage_for = usage_for or (lambda size: cost.load_usage(None, size))
    prices = cost.load_prices()
    # Each plan is a process of its own: two at a time on a 2-core machine.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {(profile, size): pool.submit(plan_for, profile, size)
                   for size in SIZES for profile in ("cloud", "vps")}  # fmt: skip
        plans = {key: future.result() for key, future in futures.items()}
    rows = []
    for size in SIZES:
        usage = usage_for(size)
        row: dict[str, Any] = {"size": size}
        for profile, facts in (("cloud", cloud_facts), ("vps", vps_facts)):
            plan = plans[(profile, size)]
            estimate = cost.estimate(plan, usage, prices)
            row[profile] = {
                "monthly_usd": estimate["total_monthly"],
                "fixed_usd": estimate["fixed_monthly"],
                "usage_usd": estimate["usage_monthly"],
                "where": estimate["region"],
                **facts(plan, bench),
            }
        rows.append(row)
    return {
        "bench": bench,
        "thresholds": {"cpu_percent": CPU_PERCENT_MAX, "p95_ms": P95_MS_MAX, "rps": RPS_MAX,
                       "source": "docs/targets.md, Capacity"},
        "sizes": rows,
    }


def _static_capacity(bench: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Capacity per size from the size tables alone (no plan needed). The cloud's is at
    its autoscaling floor (`min_replicas`), what serves a steady load; the ceiling is
    given apart, for bursts."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for size in SIZES:
        c, v = sizes.CLOUD[size], sizes.VPS[size]
        out[size] = {
            "cloud": capacity(bench, int(c.task_cpu) / 1024, c.min_replicas, c.max_replicas),
            "vps": capacity(bench, v.container_cpus, v.replicas),
        }
    return out


def parse_current(text: str) -> tuple[str, str]:
    """`--current PROFILE:SIZE` (`vps:medium`): what runs now."""
    name, sep, size = text.partition(":")
    if not sep or name not in PROFILES or size not in SIZES:
        raise UsageError(f"--current {text!r}: expected PROFILE:SIZE, PROFILE one of "
                         f"{' | '.join(PROFILES)} and SIZE one of {' | '.join(SIZES)} "
                         "(e.g. vps:medium)")
    return name, size


def check_figures(rps: float | None, p95_ms: float | None, cpu_percent: float | None) -> None:
    for flag, value in (("--rps", rps), ("--p95-ms", p95_ms), ("--cpu-percent", cpu_percent)):
        if value is not None and (value < 0 or not math.isfinite(value)):
            raise UsageError(f"{flag} {value:g}: must be a number, zero or more")
    if cpu_percent is not None and cpu_percent > 100:
        raise UsageError(f"--cpu-percent {cpu_percent:g}: must be at most 100")


def _tasks_for(bench: Mapping[str, Any], size: str, need: int) -> int:
    """The fewest tasks of the cloud size `size` whose creates at 70 % CPU reach `need`."""
    c = sizes.CLOUD[size]
    vcpu = int(c.task_cpu) / 1024
    one = capacity(bench, vcpu, 1)["usable_write_rps"]
    tasks = max(c.min_replicas, math.ceil(need / one) - 1) if one else c.min_replicas
    while capacity(bench, vcpu, tasks)["usable_write_rps"] < need:
        tasks += 1
    return tasks


def _name(where: tuple[str, str]) -> str:
    return f"{where[0]}:{where[1]}"


def recommend(rps: float | None, p95_ms: float | None, cpu_percent: float | None,
              current: tuple[str, str] | None = None, *, bench_dir: Path = BENCH_DIR,
              monthly: Mapping[tuple[str, str], float] | None = None) -> dict[str, Any]:
    """A profile and size for the traffic given, relative to what runs now, and why.

    Any threshold crossed (CPU > 70 % sustained, p95 > 500 ms, > 1,000 req/s) means the
    cloud profile. The load is `rps` (every request a create, the slowest route); without
    it, CPU times what runs now serves at full CPU, or, when p95 is past its target, more
    than what runs now serves at 70 % CPU. The size is the smallest whose steady capacity
    (the cloud at its autoscaling floor, like with like beside a VPS) serves that load at
    70 % CPU; the autoscaling ceiling is stated apart. With `current` the answer is stay,
    grow, shrink or move. `monthly` ((profile, size) -> USD) adds the costs.
    """
    check_figures(rps, p95_ms, cpu_percent)
    bench = latest_bench(bench_dir)
    table = _static_capacity(bench)
    reasons: list[str] = []
    now = current
    if now is None and rps is None and (p95_ms is not None or cpu_percent is not None):
        # Latency and CPU describe a deployment; without one, the VPS profile's default.
        now = ("vps", VPS_DEFAULT_SIZE)
        reasons.append(f"No `--current`: the figures are taken as those of `vps:"
                       f"{VPS_DEFAULT_SIZE}`, the VPS profile's default size (give "
                       "`--current PROFILE:SIZE` for what runs now).")
    crossed = []
    if cpu_percent is not None and cpu_percent > CPU_PERCENT_MAX:
        crossed.append(f"CPU {cpu_percent:g} % is above the {CPU_PERCENT_MAX:g} % target")
    if p95_ms is not None and p95_ms > P95_MS_MAX:
        crossed.append(f"p95 {p95_ms:g} ms is above the {P95_MS_MAX:g} ms target")
    if rps is not None and rps > RPS_MAX and not (now and now[0] == "cloud"):
        # A threshold for leaving a VPS; on the cloud, the size covers the rate.
        crossed.append(f"{rps:,g} req/s is above the {RPS_MAX:,.0f} req/s target")

    # The load to serve, in req/s of creates at 70 % CPU.
    need: int | None = None
    if rps is not None:
        need = math.ceil(rps)
        basis = f"{rps:,g} req/s, sized as creates (the slowest route)"
    elif now is not None and cpu_percent is not None:
        full = table[now[1]][now[0]]["write_rps"]
        need = math.ceil(full * cpu_percent / 100)
        basis = (f"CPU {cpu_percent:g} % of the {full:,} req/s of creates `{_name(now)}` "
                 f"serves at full CPU: about {need:,} req/s")
    elif now is not None and p95_ms is not None and p95_ms > P95_MS_MAX:
        usable = table[now[1]][now[0]]["usable_write_rps"]
        need = usable + 1
        basis = (f"more than the {usable:,} req/s of creates `{_name(now)}` serves at "
                 f"{CPU_PERCENT_MAX:g} % CPU, since p95 is past its target (a floor: "
                 "`--rps` or `--cpu-percent` gives a firmer figure)")
    else:
        basis = "not given (`--rps`, or `--cpu-percent` with `--current`)"

    if crossed:
        verb = ("move to the cloud profile (autoscaling, Multi-AZ)" if not now or now[0] == "vps"
                else f"`{_name(now)}` is past its capacity")
        reasons += [f"{c}: {verb}." for c in crossed]
        profile_ = "cloud"
    else:
        checked = [f"{rps:,g} req/s <= {RPS_MAX:,.0f}" if rps is not None else None,
                   f"p95 {p95_ms:g} ms <= {P95_MS_MAX:g} ms" if p95_ms is not None else None,
                   f"CPU {cpu_percent:g} % <= {CPU_PERCENT_MAX:g} %"
                   if cpu_percent is not None else None]
        shown = "; ".join(c for c in checked if c) or "no traffic figures given"
        profile_ = now[0] if current else "vps"
        if profile_ == "vps":
            reasons.append(f"No threshold is crossed ({shown}): a VPS serves this for a "
                           "fraction of the cloud's cost.")
        else:
            reasons.append(f"No threshold is crossed ({shown}): the cloud stack keeps its "
                           "autoscaling and Multi-AZ.")
        if rps is not None and rps >= 0.8 * RPS_MAX:
            reasons.append(f"{rps:,g} req/s is {rps / RPS_MAX:.0%} of the 1,000 req/s threshold:"
                           " plan the move to the cloud before traffic grows further.")

    def smallest(name: str) -> str | None:
        return next((s for s in SIZES if table[s][name]["usable_write_rps"] >= need), None)

    tasks = None
    if need is None:
        size = now[1] if now is not None and now[0] == profile_ else SIZES[0]
    else:
        size = smallest(profile_)
        if size is None and profile_ == "vps":
            top = table[SIZES[-1]]["vps"]["usable_write_rps"]
            reasons.append(f"No VPS size serves {need:,} req/s of creates at "
                           f"{CPU_PERCENT_MAX:g} % CPU (`{SIZES[-1]}`: {top:,}): move to the "
                           "cloud profile.")
            profile_ = "cloud"
            size = smallest(profile_)
        if size is None:
            size = SIZES[-1]
            tasks = _tasks_for(bench, size, need)
    chosen = table[size][profile_]
    if tasks is not None:
        limit = sizes.CLOUD[size]
        chosen = capacity(bench, int(limit.task_cpu) / 1024, tasks,
                          max(limit.max_replicas, tasks))
        reasons.append(
            f"Even `{size}` at its floor of {limit.min_replicas} tasks serves only "
            f"{table[size]['cloud']['usable_write_rps']:,} req/s of creates at "
            f"{CPU_PERCENT_MAX:g} % CPU: set `replicas` and `min_replicas` to {tasks}"
            + (f" and `max_replicas` above {tasks}" if tasks >= limit.max_replicas else "")
            + f" ({tasks} tasks serve {chosen['usable_write_rps']:,}).")
    where = (profile_, size)
    verdict = None
    if current is not None:
        if profile_ != current[0]:
            verdict = "move"
        elif size == current[1] and tasks is None:
            verdict = "stay"
        else:
            verdict = "grow" if SIZES.index(size) >= SIZES.index(current[1]) else "shrink"

    reasons.append(f"The load: {basis}.")
    steady = (f"`{_name(where)}`: {chosen['replicas']} "
              f"{'task' if profile_ == 'cloud' else 'replica'}(s) of "
              f"{chosen['vcpu_per_replica']:g} vCPU serve about {chosen['usable_write_rps']:,} "
              f"req/s of creates and {chosen['usable_read_rps']:,} req/s of cached reads at "
              f"{CPU_PERCENT_MAX:g} % CPU")
    if need is not None:
        steady += f", {'enough' if chosen['usable_write_rps'] >= need else 'short'} for {need:,}"
    if "max_replicas" in chosen:
        steady += (f"; autoscaling up to {chosen['max_replicas']} tasks serves "
                   f"{chosen['usable_write_rps_at_max']:,} for bursts")
    reasons.append(steady + f" (bench {bench['file']}).")
    if monthly:
        cost_line = f"Cost: ${monthly[where]:,.2f} a month"
        if tasks is not None:
            floor = sizes.CLOUD[size].min_replicas
            cost_line += (f" for `{size}` as planned with {floor} tasks; each task beyond "
                          "them adds its Fargate hours")
        if now is not None and now != where:
            cost_line += f", now ${monthly[now]:,.2f}"
        reasons.append(cost_line + " (the table above).")
    if profile_ == "vps":
        host = sizes.VPS[size]
        note = (f"The VPS figures are for `{size}`'s reference host ({host.host_cpus} vCPU, "
                f"{host.host_memory_mb // 1024} GB): `size` sets the containers, and "
                "prodstack never resizes the server.")
        if now is not None and now[0] == "vps" and now[1] != size:
            note += (" Resize the server at your provider (before growing, after "
                     f"shrinking) and set `size = \"{size}\"`; `prodstack cost --profile vps "
                     f"--data size={size} --data host_cpus=N --data host_memory_mb=N` "
                     "prices the host you order.")
        reasons.append(note)
    result: dict[str, Any] = {
        "profile": profile_, "size": size, "reasons": reasons,
        "inputs": {"rps": rps, "p95_ms": p95_ms, "cpu_percent": cpu_percent,
                   "current": _name(current) if current else None},
        "load_write_rps": need, "load_basis": basis, "capacity": chosen,
    }  # fmt: skip
    if tasks is not None:
        result["tasks"] = tasks
    if now is not None:
        result["now"] = _name(now)
        result["now_capacity"] = table[now[1]][now[0]]
    if verdict:
        result["verdict"] = verdict
    if monthly:
        result["monthly_usd"] = monthly[where]
        if now is not None:
            result["now_monthly_usd"] = monthly[now]
    return result


# --- Markdown -----------------------------------------------------------------------------


def render_markdown(result: Mapping[str, Any]) -> str:
    bench = result["bench"]
    out = ["### Cloud or VPS, per size", ""]
    header = "| | " + " | ".join(f"{r['size']} cloud | {r['size']} vps" for r in result["sizes"])
    out += [header + " |", "|---" * (1 + 2 * len(result["sizes"])) + "|"]

    def row(label: str, cell: Callable[[Mapping[str, Any]], str]) -> str:
        cells = []
        for r in result["sizes"]:
            cells += [cell(r["cloud"]), cell(r["vps"])]
        return f"| {label} | " + " | ".join(cells) + " |"

    out.append(row("monthly cost", lambda p: f"${p['monthly_usd']:,.2f} ({p['where']})"))
    out.append(row("replicas x vCPU", lambda p: f"{p['capacity']['replicas']} x "
                   f"{p['capacity']['vcpu_per_replica']:g}"
                   + (f" (up to {p['capacity']['max_replicas']})"
                      if "max_replicas" in p["capacity"] else "")))
    out.append(row("req/s at 70 % CPU (creates / cached reads)",
                   lambda p: f"{p['capacity']['usable_write_rps']:,} / "
                   f"{p['capacity']['usable_read_rps']:,}"))
    out.append(row("DB connections (peak / max_connections)",
                   lambda p: f"{p['db_budget']['peak']} / {p['db_budget']['max_connections']}"
                   + ("" if p["db_budget"]["ok"] else " **over**")))
    out.append(row("availability", lambda p: p["availability"]))
    out.append(row("backup RPO", lambda p: p["backup"]["rpo"]))
    out.append(row("restore RTO", lambda p: p["backup"].get("rto_failover", "")
                   + ("; " if "rto_failover" in p["backup"] else "")
                   + p["backup"]["rto"]))
    hosts = ", ".join(f"{name} {sizes.VPS[name].host_cpus} vCPU / "
                      f"{sizes.VPS[name].host_memory_mb // 1024} GB" for name in SIZES)
    out += ["", "Cloud capacity is at the desired task count (autoscaling adds tasks up to "
            "the bracketed count). A VPS size is priced on its reference host "
            f"({hosts}): `size` sets the containers, and prodstack never resizes the server.",
            ""]
    warnings = [f"- {r['size']} {name}: {r[name]['db_budget']['warning']}"
                for r in result["sizes"] for name in ("cloud", "vps")
                if "warning" in r[name]["db_budget"]]
    if warnings:
        out += ["**Connection budget warnings**", ""] + warnings + [""]
    out += ["**What you operate yourself**", "",
            "- cloud: " + "; ".join(result["sizes"][0]["cloud"]["operate"]) + ".",
            "- vps: " + "; ".join(result["sizes"][0]["vps"]["operate"]) + ".", ""]
    t = result["thresholds"]
    out += ["**When to move from a VPS to the cloud** (docs/targets.md): CPU above "
            f"{t['cpu_percent']:g} % sustained, p95 above {t['p95_ms']:g} ms, or more than "
            f"{t['rps']:,.0f} req/s.", ""]
    out += [f"**Capacity figures** come from `{bench['file']}` ({bench['when']}): "
            f"{bench['read_route']} {bench['read_rps']:,} req/s, {bench['write_route']} "
            f"{bench['write_rps']:,} req/s; that is {bench['read_rps_per_core']:,} and "
            f"{bench['write_rps_per_core']:,} req/s per core. Assumptions:", ""]
    out += [f"- {a}" for a in bench["assumptions"]] + [""]
    rec = result.get("recommendation")
    if rec:
        out += render_recommendation(rec)
    return "\n".join(out)


def render_recommendation(rec: Mapping[str, Any]) -> list[str]:
    """The recommendation's heading, the figures that decide it, and the reasons."""
    where = f"{rec['profile']}:{rec['size']}"
    if rec.get("verdict") == "stay":
        heading = f"### Recommendation: stay on `{where}`"
    elif rec.get("verdict"):
        heading = f"### Recommendation: {rec['verdict']}, `{rec['inputs']['current']}` → `{where}`"
    else:
        heading = f"### Recommendation: {rec['profile']}, size `{rec['size']}`"
    out = [heading, "", f"| at {CPU_PERCENT_MAX:g} % CPU | req/s of creates | req/s of cached "
           "reads | at the autoscaling ceiling | monthly |", "|---|---:|---:|---:|---:|"]

    def line(label: str, c: Mapping[str, Any], usd: float | None) -> str:
        ceiling = (f"{c['usable_write_rps_at_max']:,} ({c['max_replicas']} tasks)"
                   if "max_replicas" in c else "-")
        return (f"| {label} | {c['usable_write_rps']:,} | {c['usable_read_rps']:,} | {ceiling} "
                f"| {cost.usd(usd) if usd is not None else '-'} |")

    if rec.get("now") and rec["now"] != where:
        out.append(line(f"now `{rec['now']}`", rec["now_capacity"], rec.get("now_monthly_usd")))
    tasks = f", {rec['tasks']} tasks" if "tasks" in rec else ""
    out.append(line(f"recommended `{where}`{tasks}", rec["capacity"], rec.get("monthly_usd")))
    if rec.get("load_write_rps") is not None:
        out.append(f"| the load | {rec['load_write_rps']:,} | | | |")
    out.append("")
    out += [f"- {reason}" for reason in rec["reasons"]] + [""]
    return out


# --- The command ---------------------------------------------------------------------------


def answer(plan_for: Callable[[str, str], dict[str, Any]], rps: float | None = None,
           p95_ms: float | None = None, cpu_percent: float | None = None,
           current: tuple[str, str] | None = None) -> dict[str, Any]:
    """What `prodstack choose` prints: the comparison, and the recommendation when any
    figure or `current` is given."""
    result = compare(plan_for=plan_for)
    if current or any(v is not None for v in (rps, p95_ms, cpu_percent)):
        monthly = {(name, row["size"]): row[name]["monthly_usd"]
                   for row in result["sizes"] for name in PROFILES}  # fmt: skip
        result["recommendation"] = recommend(rps, p95_ms, cpu_percent, current,
                                             monthly=monthly)
    return result


def run(args: argparse.Namespace, plan_for: Callable[[str, str], dict[str, Any]]) -> int:
    """`prodstack choose`: every input checked before the plans are made."""
    check_figures(args.rps, args.p95_ms, args.cpu_percent)
    current = parse_current(args.current) if args.current else None
    latest_bench()
    print(f"prodstack: planning both profiles at every size ({len(SIZES) * 2} plans, two at "
          "a time)", file=sys.stderr)
    result = answer(plan_for, args.rps, args.p95_ms, args.cpu_percent, current)
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=1, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_markdown(result))
    return 0
