"""Benchmark: nginx in front of 3 API replicas with real PostgreSQL and Redis, on loopback.

    uv run python -m bench.run [--duration 10] [--connections 64] [--replicas 3]
        [--clients pipeline,redis-py]

Drives each route with wrk and compares it, in the same run, with nginx answering a static
200 and with the API's own /health/live. Writes bench/results/<timestamp>.{json,md}.
The rate limit stays on, with a budget too large to trigger, so its Redis round trip is
part of every API figure.

Each Redis client (REDIS_CLIENT) gets its own replicas and nginx, all up for the whole run
and sharing one PostgreSQL and one Redis. Within a round every route is measured on each
client back to back, in an order that alternates between rounds, so a machine whose speed
drifts shifts both alike; the client ratio per route is the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.app_server import TEST_TOKEN, AppServer, app_env, run_app  # noqa: E402
from tests.support.services import PostgresServer, RedisServer, free_port  # noqa: E402

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CREATE_BODY = json.dumps(
    {"message": "Benchmark alert", "type": "bench", "priority": "medium", "region": "lab"}
)
CLIENTS = ("pipeline", "redis-py")
# The hand-written client stays only if redis-py is more than this much slower somewhere.
CLIENT_TOLERANCE = 0.95
STATIC = "nginx static 200"
GOALS = {
    "list_vs_live": 0.8,
    "create_vs_live": 0.5,
    "p99_ms": 50.0,
}


def median(values) -> float:
    return statistics.median(list(values))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start_nginx(root: Path, replica_ports: list[int]) -> tuple[subprocess.Popen, int, int]:
    root.mkdir(parents=True, exist_ok=True)
    static_port, proxy_port = free_port(), free_port()
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=30s;" for p in replica_ports
    )
    conf = (HERE / "nginx.conf.tmpl").read_text().format(
        root=root, servers=servers, static_port=static_port, proxy_port=proxy_port
    )
    (root / "nginx.conf").write_text(conf)
    subprocess.run(["nginx", "-t", "-q", "-c", str(root / "nginx.conf")], check=True)
    proc = subprocess.Popen(["nginx", "-c", str(root / "nginx.conf"), "-g", "daemon off;"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{static_port}/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, static_port, proxy_port


def wrk(url: str, *, duration: int, connections: int, threads: int, method: str = "GET",
        body: str = "", token: str = "") -> dict:
    env = {**os.environ, "BENCH_METHOD": method, "BENCH_BODY": body, "BENCH_TOKEN": token}
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
         "--timeout", "5s", "-s", str(HERE / "wrk_report.lua"), url],
        check=True, capture_output=True, text=True, env=env, timeout=duration + 60,
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"]
        + raw["timeouts"],
    }


def seed(base: str, n: int) -> str:
    headers = {"Authorization": f"Bearer {TEST_TOKEN}"}
    with httpx.Client(base_url=base, headers=headers) as c:
        ids = [c.post("/api/v1/alerts", content=CREATE_BODY,
                      headers={"Content-Type": "application/json"}).json()["id"]
               for _ in range(n)]
    return ids[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=6, help="seconds per route and round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per route")
    parser.add_argument("--rounds", type=int, default=5,
                        help="passes over all routes. Ratios are taken within each round, "
                             "then the median over rounds: a machine whose speed drifts "
                             "during the run shifts neighbouring measurements alike")
    parser.add_argument("--clients", default=",".join(CLIENTS),
                        help="comma-separated REDIS_CLIENT values to measure side by side")
    args = parser.parse_args()
    given = args.clients.split(",")
    clients = [c for c in CLIENTS if c in given]  # pipeline first: ratios are redis-py ÷ it
    if not clients or any(c not in CLIENTS for c in given):
        sys.exit(f"bench: --clients takes a comma-separated subset of {', '.join(CLIENTS)}")
    for tool in ("wrk", "nginx", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} not found; run scripts/setup.sh")

    root = Path(tempfile.mkdtemp(prefix="prodstack-bench-"))
    pg = redis = None
    fronts: list[subprocess.Popen] = []
    replicas: list[AppServer] = []
    try:
        log("starting PostgreSQL and Redis")
        pg, redis = PostgresServer(), RedisServer()
        env = app_env(pg.url, redis.url, RATE_LIMIT_PER_MINUTE="10000000", LOG_LEVEL="INFO")
        migrated = run_app("migrate", env)
        if migrated.returncode != 0:
            sys.exit(f"bench: migrate failed: {migrated.stderr.strip()}")
        apis = {}
        for client in clients:
            log(f"starting {args.replicas} replicas with REDIS_CLIENT={client}")
            group = [AppServer({**env, "REDIS_CLIENT": client}).start("/health/ready")
                     for _ in range(args.replicas)]
            replicas += group
            nginx, static_port, proxy_port = start_nginx(root / client, [r.port for r in group])
            fronts.append(nginx)
            apis[client] = f"http://127.0.0.1:{proxy_port}"
        first_id = seed(apis[clients[0]], 200)
        static = (STATIC, f"http://127.0.0.1:{static_port}/", {})
        routes = [
            ("GET /health/live", "/health/live", {}),
            ("GET /api/v1/alerts (cached)", "/api/v1/alerts", {}),
            ("GET /api/v1/alerts/{id}", f"/api/v1/alerts/{first_id}", {}),
            ("POST /api/v1/alerts", "/api/v1/alerts",
             {"method": "POST", "body": CREATE_BODY, "token": TEST_TOKEN}),
        ]
        passes: dict[tuple[str, str], list[dict]] = {}
        for round_no in range(1, args.rounds + 1):
            order = clients if round_no % 2 else clients[::-1]
            plan = [("", *static)] + [
                (client, name, apis[client] + path, extra)
                for name, path, extra in routes for client in order
            ]
            for client, name, url, extra in plan:
                label = f"{name} [{client}]" if client else name
                log(f"round {round_no}/{args.rounds} {label}: warm-up {args.warmup}s, then "
                    f"{args.duration}s at {args.connections} connections")
                wrk(url, duration=args.warmup, connections=args.connections,
                    threads=args.threads, **extra)
                r = wrk(url, duration=args.duration, connections=args.connections,
                        threads=args.threads, **extra)
                passes.setdefault((client, name), []).append(r)
                log(f"  {r['rps']:>9.0f} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
                    f"non-2xx {r['non_2xx']}  socket errors {r['socket_errors']}")
    finally:
        for nginx in fronts:
            nginx.terminate()
            nginx.wait(10)
        for r in replicas:
            r.stop()
        for s in (pg, redis):
            if s is not None:
                s.close()
        shutil.rmtree(root, ignore_errors=True)

    static_rounds = [r["rps"] for r in passes[("", STATIC)]]
    results = {STATIC: summarise(passes[("", STATIC)], static_rounds, None)}
    for client in clients:
        live_rounds = [r["rps"] for r in passes[(client, "GET /health/live")]]
        results[STATIC].setdefault("vs_health_live", {})[client] = round(
            median(a / b for a, b in zip(static_rounds, live_rounds, strict=True)), 3)
        results[client] = {name: summarise(passes[(client, name)], static_rounds, live_rounds)
                           for name, _, _ in routes}
    comparison = {}
    if len(clients) == 2:
        base, other = clients
        for name, _, _ in routes:
            a, b = results[base][name], results[other][name]
            comparison[name] = {
                "rps_ratio": round(median(
                    x / y for x, y in zip(b["rps_all_rounds"], a["rps_all_rounds"],
                                          strict=True)), 3),
                "p99_ratio": round(median(
                    x / y for x, y in zip(b["p99_ms_all_rounds"], a["p99_ms_all_rounds"],
                                          strict=True)), 3),
            }
    checks = {}
    for client in clients:
        r = results[client]
        checks[f"{client}: cached list >= 0.8 x /health/live"] = (
            r["GET /api/v1/alerts (cached)"]["vs_health_live"] >= GOALS["list_vs_live"])
        checks[f"{client}: create >= 0.5 x /health/live"] = (
            r["POST /api/v1/alerts"]["vs_health_live"] >= GOALS["create_vs_live"])
        checks[f"{client}: every API p99 < 50 ms"] = all(
            v["p99_ms"] < GOALS["p99_ms"] for v in r.values())
        checks[f"{client}: zero non-2xx and zero socket errors"] = all(
            v["non_2xx"] == 0 and v["socket_errors"] == 0 for v in r.values())
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release()},
        "settings": vars(args),
        "results": results,
        "client_comparison": comparison,
        "goals": checks,
    }
    if comparison:
        report["redis_py_within_tolerance"] = all(
            c["rps_ratio"] >= CLIENT_TOLERANCE for c in comparison.values())
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = render_markdown(report, clients)
    (RESULTS / f"{stamp}.md").write_text(md)
    print(md)
    log(f"wrote bench/results/{stamp}.md and .json")
    return 0 if all(checks.values()) else 1


def summarise(runs: list[dict], static_rounds: list[float], live_rounds) -> dict:
    """The median round, with every round's req/s and p99 and errors summed over rounds."""
    middle = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    rounds = [r["rps"] for r in runs]
    summary = {
        **middle,
        "rps_all_rounds": rounds,
        "p99_ms_all_rounds": [r["p99_ms"] for r in runs],
        # Errors count in every pass, not just the median one.
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "vs_nginx_static": round(
            median(a / b for a, b in zip(rounds, static_rounds, strict=True)), 3),
    }
    if live_rounds is not None:
        summary["vs_health_live"] = round(
            median(a / b for a, b in zip(rounds, live_rounds, strict=True)), 3)
    return summary


def render_markdown(report: dict, clients: list[str]) -> str:
    s = report["settings"]
    lines = [
        f"# Benchmark {report['when']}",
        "",
        f"nginx → {s['replicas']} replicas (1 uvicorn worker each) per Redis client → "
        f"PostgreSQL 15 + Redis 7, loopback, {report['machine']['cpus']} CPUs. wrk: "
        f"{s['threads']} threads, {s['connections']} connections, {s['duration']} s per route "
        f"after {s['warmup']} s warm-up, {s['rounds']} rounds; within a round each route "
        "runs on every client back to back, the order alternating between rounds. req/s and "
        "latencies are the route's median round; ratios are taken within each round, then "
        "the median over rounds; non-2xx counts all rounds. Rate limit on, budget raised.",
        "",
        "| client | route | req/s | p50 ms | p99 ms | worst-round p99 ms | ÷ /health/live "
        "| ÷ nginx static | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    static = report["results"][STATIC]
    rows = [("", STATIC, static)] + [
        (client, name, r) for client in clients for name, r in report["results"][client].items()
    ]
    for client, name, r in rows:
        live = r["vs_health_live"]
        live = " / ".join(f"{v:.2f}" for v in live.values()) if isinstance(live, dict) \
            else f"{live:.2f}"
        lines.append(
            f"| {client or '-'} | {name} | {r['rps']:.0f} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{max(r['p99_ms_all_rounds'])} | {live} | {r['vs_nginx_static']:.3f} | "
            f"{r['non_2xx']} |"
        )
    if report["client_comparison"]:
        base, other = clients
        lines += ["", f"| route | {other} ÷ {base} req/s | {other} ÷ {base} p99 |",
                  "|---|---:|---:|"]
        lines += [f"| {name} | {c['rps_ratio']:.3f} | {c['p99_ratio']:.3f} |"
                  for name, c in report["client_comparison"].items()]
        verdict = "yes" if report["redis_py_within_tolerance"] else "NO"
        lines += ["", f"redis-py within {1 - CLIENT_TOLERANCE:.0%} of req/s on every route, "
                      f"or ahead: **{verdict}**"]
    lines += ["", "| goal | met |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in report["goals"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
