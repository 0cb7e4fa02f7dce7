"""Benchmark: nginx in front of 3 API replicas with real PostgreSQL and Redis, on loopback.

    uv run python -m bench.run [--duration 10] [--connections 64] [--replicas 3]

Drives each route with wrk and compares it, in the same run, with nginx answering a static
200 and with the API's own /health/live. Writes bench/results/<timestamp>.{json,md}.
The rate limit stays on, with a budget too large to trigger, so its Redis round trip is
part of every API figure.
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

from prodstack.local_services import PostgresServer, RedisServer, free_port
from tests.support.app_server import TEST_TOKEN, AppServer, app_env, run_app

REPO = Path(__file__).resolve().parents[1]

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CREATE_BODY = json.dumps(
    {"message": "Benchmark alert", "type": "bench", "priority": "medium", "region": "lab"}
)
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
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} not found; run scripts/setup.sh")

    root = Path(tempfile.mkdtemp(prefix="prodstack-bench-"))
    pg = redis = nginx = None
    replicas: list[AppServer] = []
    try:
        log("starting PostgreSQL and Redis")
        pg, redis = PostgresServer(), RedisServer()
        env = app_env(pg.url, redis.url, RATE_LIMIT_PER_MINUTE="10000000", LOG_LEVEL="INFO")
        migrated = run_app("migrate", env)
        if migrated.returncode != 0:
            sys.exit(f"bench: migrate failed: {migrated.stderr.strip()}")
        log(f"starting {args.replicas} replicas")
        for _ in range(args.replicas):
            replicas.append(AppServer(env).start("/health/ready"))
        nginx, static_port, proxy_port = start_nginx(root, [r.port for r in replicas])
        api = f"http://127.0.0.1:{proxy_port}"
        first_id = seed(api, 200)
        routes = [
            ("nginx static 200", f"http://127.0.0.1:{static_port}/", {}),
            ("GET /health/live", f"{api}/health/live", {}),
            ("GET /api/v1/alerts (cached)", f"{api}/api/v1/alerts", {}),
            ("GET /api/v1/alerts/{id}", f"{api}/api/v1/alerts/{first_id}", {}),
            ("POST /api/v1/alerts", f"{api}/api/v1/alerts",
             {"method": "POST", "body": CREATE_BODY, "token": TEST_TOKEN}),
        ]
        passes: dict[str, list[dict]] = {name: [] for name, _, _ in routes}
        for round_no in range(1, args.rounds + 1):
            for name, url, extra in routes:
                log(f"round {round_no}/{args.rounds} {name}: warm-up {args.warmup}s, then "
                    f"{args.duration}s at {args.connections} connections")
                wrk(url, duration=args.warmup, connections=args.connections,
                    threads=args.threads, **extra)
                r = wrk(url, duration=args.duration, connections=args.connections,
                        threads=args.threads, **extra)
                passes[name].append(r)
                log(f"  {r['rps']:>9.0f} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
                    f"non-2xx {r['non_2xx']}  socket errors {r['socket_errors']}")
        results = {}
        for name, runs in passes.items():
            middle = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
            results[name] = {
                **middle,
                "rps_all_rounds": [r["rps"] for r in runs],
                "p99_ms_all_rounds": [r["p99_ms"] for r in runs],
                # Errors count in every pass, not just the median one.
                "non_2xx": sum(r["non_2xx"] for r in runs),
                "socket_errors": sum(r["socket_errors"] for r in runs),
            }
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        for r in replicas:
            r.stop()
        for s in (pg, redis):
            if s is not None:
                s.close()
        shutil.rmtree(root, ignore_errors=True)

    static_rounds = results["nginx static 200"]["rps_all_rounds"]
    live_rounds = results["GET /health/live"]["rps_all_rounds"]
    for r in results.values():
        rounds = r["rps_all_rounds"]
        r["vs_nginx_static"] = round(
            median(a / b for a, b in zip(rounds, static_rounds, strict=True)), 3)
        r["vs_health_live"] = round(
            median(a / b for a, b in zip(rounds, live_rounds, strict=True)), 3)
    api_routes = {k: v for k, v in results.items() if k != "nginx static 200"}
    checks = {
        "cached list >= 0.8 x /health/live":
            results["GET /api/v1/alerts (cached)"]["vs_health_live"] >= GOALS["list_vs_live"],
        "create >= 0.5 x /health/live":
            results["POST /api/v1/alerts"]["vs_health_live"] >= GOALS["create_vs_live"],
        "every API p99 < 50 ms": all(v["p99_ms"] < GOALS["p99_ms"] for v in api_routes.values()),
        "zero non-2xx and zero socket errors":
            all(v["non_2xx"] == 0 and v["socket_errors"] == 0 for v in results.values()),
    }
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release()},
        "settings": vars(args),
        "results": results,
        "goals": checks,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = render_markdown(report)
    (RESULTS / f"{stamp}.md").write_text(md)
    print(md)
    log(f"wrote bench/results/{stamp}.md and .json")
    return 0 if all(checks.values()) else 1


def render_markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"# Benchmark {report['when']}",
        "",
        f"nginx → {s['replicas']} replicas (1 uvicorn worker each) → PostgreSQL 15 + Redis 7, "
        f"loopback, {report['machine']['cpus']} CPUs. wrk: {s['threads']} threads, "
        f"{s['connections']} connections, {s['duration']} s per route after "
        f"{s['warmup']} s warm-up, {s['rounds']} rounds. req/s and latencies are the route's "
        "median round; ratios are taken within each round, then the median over rounds; "
        "non-2xx counts all rounds. Rate limit on, budget raised.",
        "",
        "| route | req/s | p50 ms | p99 ms | worst-round p99 ms | ÷ /health/live "
        "| ÷ nginx static | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{max(r['p99_ms_all_rounds'])} | "
            f"{r['vs_health_live']:.2f} | {r['vs_nginx_static']:.3f} | {r['non_2xx']} |"
        )
    lines += ["", "| goal | met |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in report["goals"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
