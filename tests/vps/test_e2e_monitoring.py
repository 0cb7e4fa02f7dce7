"""End to end: Prometheus, the exporters and Alertmanager on the shared, deployed host.

Every target is up; the Watchdog reaches the webhook receiver this test session runs (on
the docker0 gateway, `alert_webhook` in conftest.py); stopping PostgreSQL and one API
replica fires PostgresDown and ApiReplicaDown at that receiver, and bringing them back
resolves both (the two run in parallel); a failed unit's `prodstack-alert@` reaches it
too. The internal endpoints stay off the public nginx server. The host is left serving.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import json
import shlex
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.vps.e2e import prometheus

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(900)]

SCRAPE_INTERVAL = EVALUATION_INTERVAL = 15  # prometheus.j2.yml
GROUP_WAIT = 10  # alertmanager.j2.yml
REPO = Path(__file__).resolve().parents[2]
RULES = yaml.safe_load((REPO / "pyinfra" / "files" / "prodstack-alerts.yml").read_text())
DASHBOARD = json.loads((REPO / "pyinfra" / "files" / "grafana-dashboard.json").read_text())


def rule_for_seconds(name: str) -> int:
    rule = next(r for g in RULES["groups"] for r in g["rules"] if r["alert"] == name)
    value = rule.get("for", "0s")
    return int(value[:-1]) * {"s": 1, "m": 60, "h": 3600}[value[-1]]


def wait_all_targets_up(stack, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        targets = prometheus(stack, "/api/v1/targets", state="active")["activeTargets"]
        down = [(t["labels"]["job"], t["scrapeUrl"], t["lastError"]) for t in targets
                if t["health"] != "up"]  # fmt: skip
        if targets and not down:
            return targets
        if time.monotonic() > deadline:
            raise AssertionError(f"targets not up after {timeout:.0f}s: {down}")
        time.sleep(3)


def test_every_prometheus_target_is_up(stack):
    targets = wait_all_targets_up(stack)
    jobs = {t["labels"]["job"] for t in targets}
    assert jobs == {"prometheus", "alertmanager", "node", "nginx", "postgres", "redis", "api"}
    api = sorted((t["labels"]["replica"], t["labels"]["instance"]) for t in targets
                 if t["labels"]["job"] == "api")  # fmt: skip
    # The replicas nginx routes to, one target each, labelled with the replica number.
    upstream = stack.host.run("cat /etc/nginx/prodstack/upstream-servers.conf").stdout
    assert [r for r, _ in api] == ["1", "2", "3"]
    assert all(instance in upstream for _, instance in api)
    assert all(t["labels"]["host"] for t in targets)


def test_exporters_report_the_stack(stack):
    wait_all_targets_up(stack)
    # Earlier files restart services (a restore, a redeploy): allow a scrape to catch up.
    deadline = time.monotonic() + 60
    while True:
        try:
            _check_exporters(stack)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(5)


def _check_exporters(stack):
    checks = {
        "pg_up": 1,
        "redis_up": 1,
        "nginx_up": 1,
        "prodstack_wal_archiving_enabled >= 0": None,
        "pg_settings_max_connections": 200,
        'node_textfile_scrape_error{job="node"}': 0,
    }
    for query, expected in checks.items():
        result = prometheus(stack, "/api/v1/query", query=query)["result"]
        assert result, f"{query}: no data"
        if expected is not None:
            assert float(result[0]["value"][1]) == expected, (query, result)


def test_exporters_hold_least_privilege(stack):
    # PostgreSQL: the exporter's role reads statistics, not the application's tables.
    stats = stack.host.run(
        "runuser -u prometheus -- psql -XAt -d postgres -c 'SELECT count(*) FROM pg_stat_activity'"
    )
    assert int(stats.stdout) > 0
    tables = stack.host.run(
        "runuser -u prometheus -- psql -XAt -d prodstack -c 'SELECT count(*) FROM alerts'",
        check=False,
    )
    assert tables.returncode != 0 and "permission denied" in tables.stderr
    # Redis: the exporter's ACL user may run INFO, but neither read keys nor CONFIG GET
    # (which would show requirepass).
    password = hmac.new(
        stack.secrets["REDIS_PASSWORD"].encode(), b"prodstack-monitor", "sha256"
    ).hexdigest()
    cli = f"REDISCLI_AUTH={password} redis-cli --no-auth-warning --user prodstack-monitor"
    assert "redis_version" in stack.host.run(f"{cli} INFO server").stdout
    for command in ("CONFIG GET requirepass", "KEYS prodstack", "GET x", "FLUSHALL"):
        assert "NOPERM" in stack.host.run(f"{cli} {command}", check=False).stdout, command
    for name in ("postgres", "redis"):
        mode = stack.host.run(f"stat -c %a /etc/default/prometheus-{name}-exporter").stdout
        assert mode.strip() == "600"


# Runs inside the host: every query, one line of JSON per query with its result count.
QUERIES = r"""
import json, sys, urllib.parse, urllib.request
for expr in json.load(sys.stdin):
    url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.load(urllib.request.urlopen(url, timeout=10))
    print(json.dumps({"expr": expr, "status": body["status"], "n": len(body["data"]["result"])}))
"""


def test_every_dashboard_panel_has_data(stack):
    wait_all_targets_up(stack)
    exprs = [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]
    script = shlex.quote(QUERIES)
    out = stack.host.run(f"python3 -c {script}", input=json.dumps(exprs)).stdout
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["expr"] for r in results] == exprs
    assert [r for r in results if r["status"] != "success" or r["n"] == 0] == []


def test_certificate_expiry_is_exported(stack):
    stack.host.run("systemctl start prodstack-healthcheck.service || true")
    deadline = time.monotonic() + 60
    while True:
        result = prometheus(
            stack, "/api/v1/query", query="prodstack_tls_certificate_expiry_timestamp_seconds"
        )["result"]
        if result or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result, "no certificate expiry metric"
    # The self-signed certificate lasts 825 days.
    assert float(result[0]["value"][1]) - time.time() > 800 * 86400


def test_watchdog_reaches_the_webhook(stack, alert_webhook):
    alert = alert_webhook.wait_for("Watchdog", "firing", since=0, timeout=90)
    assert alert["labels"]["severity"] == "none"
    assert alert["labels"]["host"]


def test_internal_endpoints_are_not_public(stack):
    with httpx.Client(base_url=stack.base, verify=False, timeout=10) as c:
        for path in ("/metrics", "/openapi.json", "/metrics?x=1", "/%6detrics"):
            assert c.get(path).status_code == 403, path
        # Spellings that reach no location above are the app's 404, never the metrics.
        for path in ("/metrics/", "/METRICS", "/openapi.json/"):
            r = c.get(path)
            assert r.status_code != 200 and "http_requests_total" not in r.text, path
        assert c.get("/health").status_code == 200
    # The host itself still reads them through nginx.
    local = stack.host.run("curl -ksS -o /dev/null -w '%{http_code}' https://127.0.0.1/metrics")
    assert local.stdout == "200"


def _outage(stack, alert_webhook, name: str, stop: str, start: str, **labels) -> dict:
    """Stop something, wait for `name` firing at the webhook, start it, wait for resolved."""
    since = time.time()
    stack.host.run(stop)
    started = time.monotonic()
    try:
        alert_webhook.wait_for(name, "firing", since, timeout=150, **labels)
        fired = time.monotonic() - started
    finally:
        stack.host.run(start)
    back = time.monotonic()
    alert_webhook.wait_for(name, "resolved", since, timeout=120, **labels)
    return {"fired": fired, "resolved": time.monotonic() - back}


def _failed_unit(stack, alert_webhook) -> dict:
    since = time.time()
    stack.host.run("systemctl start prodstack-alert@prodstack-e2e-probe.service")
    alert = alert_webhook.wait_for(
        "SystemdUnitFailed", "firing", since, timeout=60, unit="prodstack-e2e-probe"
    )
    # Resolve it (the same labels, ending now), so later files see no stale alert.
    labels = " ".join(shlex.quote(f"{k}={v}") for k, v in alert["labels"].items())
    stack.host.run(
        f"amtool --alertmanager.url=http://127.0.0.1:9093 alert add {labels} "
        '--end="$(date -u +%Y-%m-%dT%H:%M:%SZ)"'
    )
    return alert


def test_postgres_and_replica_outages_fire_and_resolve(stack, alert_webhook):
    """Also, in parallel: a unit's OnFailure=prodstack-alert@ raises SystemdUnitFailed."""
    replica = json.loads(stack.host.run("prodstack-release status --json").stdout)["replicas"]
    second = next(r for r in replica if r["replica"] == 2 and r["running"])
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        unit = pool.submit(_failed_unit, stack, alert_webhook)
        postgres = pool.submit(
            _outage, stack, alert_webhook, "PostgresDown",
            "systemctl stop postgresql@15-main", "systemctl start postgresql@15-main",
        )  # fmt: skip
        api = pool.submit(
            _outage, stack, alert_webhook, "ApiReplicaDown",
            f"docker stop {second['name']}", f"docker start {second['name']}", replica="2",
        )  # fmt: skip
        timings = {"PostgresDown": postgres.result(), "ApiReplicaDown": api.result()}
        failed_unit = unit.result()
    assert failed_unit["labels"]["severity"] == "critical"
    assert "journalctl -u prodstack-e2e-probe" in failed_unit["annotations"]["summary"]
    for name, t in timings.items():
        # Detection: a scrape sees it, an evaluation starts `for:`, the next evaluation
        # after `for:` fires it, and Alertmanager waits group_wait for siblings.
        bound = rule_for_seconds(name) + SCRAPE_INTERVAL + 2 * EVALUATION_INTERVAL + GROUP_WAIT
        print(f"{name}: fired after {t['fired']:.0f}s (bound {bound}s), "
              f"resolved {t['resolved']:.0f}s after the fix")  # fmt: skip
        assert t["fired"] <= bound + 5, (name, t)
    # The host serves again for the files after this one.
    wait_all_targets_up(stack)
    deadline = time.monotonic() + 60
    while stack.client().get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the API did not become ready again"
        time.sleep(2)
