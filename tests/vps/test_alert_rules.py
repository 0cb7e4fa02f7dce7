"""The alert rules and the monitoring configs, checked by Prometheus's and Alertmanager's
own tools: `promtool test rules` (a firing and a quiet case per rule), `promtool check
config` on the rendered prometheus.yml, `amtool check-config` on every receiver layout.
Fast: no Docker, no host. The tools come from Debian's prometheus and
prometheus-alertmanager packages (scripts/setup.sh installs them)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tasks.config import MONITORING_PORTS, SettingsError, redis_password_hash, settings_for
from tasks.prometheus import receiver_warning, retention_size_mb, scrape_jobs

from tests.vps.test_templates import render

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "pyinfra" / "files" / "prodstack-alerts.yml"
RULE_TESTS = sorted((REPO / "tests" / "vps").glob("prodstack-alerts*.test.yml"))
DOCS = REPO / "docs" / "vps.md"
# The alerts every VPS deploy must carry, by name: each figure of docs/targets.md, each part
# down, backups, the restore drill, certificates and a Watchdog.
REQUIRED_ALERTS = {
    "HighErrorRate", "HighLatency", "ApiReplicaDown", "ApiAllReplicasDown", "PostgresDown",
    "PostgresConnectionsNearLimit", "RedisDown", "RedisMemoryNearLimit", "HostCpuHigh",
    "DiskWillFill", "BackupTooOld", "RestoreDrillFailed", "CertificateExpiresSoon", "Watchdog",
}  # fmt: skip
SEVERITIES = {"critical", "warning", "none"}

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")
needs_amtool = pytest.mark.skipif(shutil.which("amtool") is None, reason="no amtool")


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {
        re.sub(r"[^a-z0-9 -]", "", m.group(1).strip().lower()).replace(" ", "-")
        for m in re.finditer(r"(?m)^#+\s+(.+)$", markdown)
    }


def test_every_required_alert_exists():
    assert {r["alert"] for r in rules()} >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_rule_has_summary_runbook_and_severity(rule):
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    path, _, anchor = rule["annotations"]["runbook"].partition("#")
    assert path == "docs/vps.md"
    assert anchor == rule["alert"].lower(), "one runbook section per alert, named after it"
    assert anchor in anchors(DOCS.read_text()), f"docs/vps.md has no section {anchor!r}"


def test_every_rule_has_a_firing_and_a_quiet_case():
    firing, quiet = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in rules()}
    assert names - firing == set(), "rules without a firing case"
    # A firing case with two series where only one fires is also a quiet case for the
    # other; the explicit empty expectations must still cover every rule.
    assert names - quiet - {"Watchdog"} == set(), "rules without a quiet case"


@needs_promtool
def test_rules_pass_promtool_check_and_lint():
    result = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_rule_unit_tests_pass():
    result = subprocess.run(
        ["promtool", "test", "rules", *[p.name for p in RULE_TESTS]],
        cwd=RULE_TESTS[0].parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize(
    "groups", [{"web", "db"}, {"web"}, {"db"}], ids=lambda g: "+".join(sorted(g))
)
def test_rendered_prometheus_config_passes_promtool(tmp_path, data, environ, groups):
    split = {"private_address": "10.0.0.20", "db_client_cidrs": ["10.0.0.10/32"]}
    extra = {} if groups == {"web", "db"} else split
    cfg = settings_for({**data, **extra}, groups, environ=environ)
    text = render("prometheus.j2.yml", cfg).replace(
        "/etc/prometheus/rules/prodstack-alerts.yml", str(RULES)
    )
    (tmp_path / "prometheus.yml").write_text(text)
    result = subprocess.run(
        ["promtool", "check", "config", tmp_path / "prometheus.yml"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(text)
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert ("api" in jobs) == ("nginx" in jobs) == ("web" in groups)
    assert ("postgres" in jobs) == ("redis" in jobs) == ("db" in groups)
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            assert all(t.startswith("127.0.0.1:") for t in static["targets"]), job
        assert {"target_label": "host", "replacement": "vps"} in job["relabel_configs"]


def test_every_monitoring_listener_is_on_loopback(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    for name in (
        "prometheus-defaults.j2.env", "alertmanager-defaults.j2.env",
        "node-exporter-defaults.j2.env", "postgres-exporter-defaults.j2.env",
        "redis-exporter-defaults.j2.env", "nginx-exporter-defaults.j2.env",
    ):  # fmt: skip
        text = render(name, cfg)
        listen = re.findall(r"-web\.listen-address=(\S+?)[\s\"]", text)
        assert listen and all(a.startswith("127.0.0.1:") for a in listen), (name, listen)
    # Alertmanager's gossip port (9094 on all interfaces by default) is switched off.
    assert '--cluster.listen-address="' in render("alertmanager-defaults.j2.env", cfg)
    status = re.findall(r"listen (\S+);", render("nginx-site.j2.conf", cfg).split("stub_status")[0])
    assert f"127.0.0.1:{MONITORING_PORTS['nginx stub_status']}" in status


def test_retention_is_sized_to_the_disk(data, environ):
    assert retention_size_mb(100_000, 10) == 10_000
    assert retention_size_mb(1_000, 10) == 256  # a floor, so a tiny disk still keeps a day
    cfg = settings_for({**data, "metrics_retention_days": 7}, {"web", "db"}, environ=environ)
    args = render("prometheus-defaults.j2.env", cfg, retention_size_mb=4096)
    assert "--storage.tsdb.retention.time=7d" in args
    assert "--storage.tsdb.retention.size=4096MB" in args


def test_scrape_jobs_follow_the_roles(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    assert [j for j, _ in scrape_jobs(cfg)] == [
        "prometheus", "alertmanager", "node", "nginx", "postgres", "redis"
    ]  # fmt: skip


# Each receiver layout: its data, and its secrets (the URLs carry tokens: never data).
RECEIVERS = {
    "none": ({}, {}),
    "email": ({"alert_email": "ops@example.com", "alert_smarthost": "smtp.example.com:587"}, {}),
    "email-auth": (
        {
            "alert_email": "ops@example.com",
            "alert_smarthost": "smtp.example.com:587",
            "alert_smarthost_user": "ops",
        },
        {},
    ),  # fmt: skip
    "webhook": ({}, {"ALERT_WEBHOOK_URL": "https://ntfy.example.com/alerts"}),
    "slack": ({}, {"ALERT_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXX"}),
    "all": (
        {"alert_email": "ops@example.com", "alert_smarthost": "smtp.example.com:587"},
        {
            "ALERT_WEBHOOK_URL": "https://ntfy.example.com/alerts",
            "ALERT_HEARTBEAT_URL": "https://hc-ping.example.com/uuid",
        },
    ),  # fmt: skip
}


def receiver_settings(data, environ, layout: str):
    layout_data, secrets = RECEIVERS[layout]
    environ = {**environ, "PRODSTACK_ALERT_SMTP_PASSWORD": "smtp-password-0123456789",
               **{f"PRODSTACK_{k}": v for k, v in secrets.items()}}  # fmt: skip
    return settings_for({**data, **layout_data}, {"web", "db"}, environ=environ)


def alertmanager_config(data, environ, layout: str) -> tuple[str, dict]:
    cfg = receiver_settings(data, environ, layout)
    slack = "hooks.slack.com" in (cfg.alert_webhook_url or "")
    text = render("alertmanager.j2.yml", cfg, slack=slack)
    return text, yaml.safe_load(text)


@needs_amtool
@pytest.mark.parametrize("layout", list(RECEIVERS))
def test_rendered_alertmanager_config_passes_amtool(tmp_path, data, environ, layout):
    text, _ = alertmanager_config(data, environ, layout)
    (tmp_path / "alertmanager.yml").write_text(text)
    result = subprocess.run(
        ["amtool", "check-config", tmp_path / "alertmanager.yml"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_routes_by_severity_and_inhibits_replica_alerts(data, environ):
    _, config = alertmanager_config(data, environ, "all")
    routes = {tuple(r["matchers"]): r for r in config["route"]["routes"]}
    assert routes[('alertname="Watchdog"',)]["receiver"] == "heartbeat"
    assert routes[('severity="critical"',)]["repeat_interval"] == "1h"
    assert config["route"]["receiver"] == "people"
    people = next(r for r in config["receivers"] if r["name"] == "people")
    assert people["email_configs"][0]["to"] == "ops@example.com"
    assert people["webhook_configs"][0]["url"] == "https://ntfy.example.com/alerts"
    assert all(c["send_resolved"] for c in people["email_configs"] + people["webhook_configs"])
    inhibit = next(
        r for r in config["inhibit_rules"]
        if r["source_matchers"] == ['alertname="ApiAllReplicasDown"']
    )  # fmt: skip
    assert "ApiReplicaDown" in inhibit["target_matchers"][0]
    assert inhibit["equal"] == ["host"]


def test_slack_urls_get_slack_configs(data, environ):
    _, config = alertmanager_config(data, environ, "slack")
    people = next(r for r in config["receivers"] if r["name"] == "people")
    assert people["slack_configs"][0]["api_url"].startswith("https://hooks.slack.com/")
    assert "webhook_configs" not in people


def test_no_receiver_routes_to_nobody_and_warns(data, environ):
    _, config = alertmanager_config(data, environ, "none")
    assert config["route"]["receiver"] == "nobody"
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    assert cfg.alert_receivers == ()
    assert "NO ALERT RECEIVER" in receiver_warning(cfg)
    webhook = receiver_settings(data, environ, "webhook")
    assert "NO HEARTBEAT" in receiver_warning(webhook)
    beat = settings_for(data, {"web", "db"}, environ={
        **environ, "PRODSTACK_ALERT_WEBHOOK_URL": "https://ntfy.example.com/alerts",
        "PRODSTACK_ALERT_HEARTBEAT_URL": "https://hc-ping.com/x"})  # fmt: skip
    assert receiver_warning(beat) is None


def test_webhook_secret_stays_out_of_repr(data, environ):
    secret_url = "https://hooks.slack.com/services/T111/B111/secret-token"
    cfg = settings_for(data, {"web", "db"},
                       environ={**environ, "PRODSTACK_ALERT_WEBHOOK_URL": secret_url})  # fmt: skip
    assert cfg.alert_webhook_url == secret_url
    assert "secret-token" not in repr(cfg)


# A secret that reaches alertmanager.yml: a password with a quote, a backslash, a newline
# and YAML of its own must come back as the same string, and add no key.
HOSTILE_PASSWORD = 'pa"ss\\word\n  smtp_require_tls: false\n# \' & <x>'


def test_hostile_smtp_password_stays_one_yaml_string_and_a_hostile_user_is_refused(
    data, environ
):
    layout_data, _ = RECEIVERS["email-auth"]
    environ = {**environ, "PRODSTACK_ALERT_SMTP_PASSWORD": HOSTILE_PASSWORD}
    user = "ops+alerts@example.com"
    cfg = settings_for({**data, **layout_data, "alert_smarthost_user": user}, {"web", "db"},
                       environ=environ)  # fmt: skip
    config = yaml.safe_load(render("alertmanager.j2.yml", cfg, slack=False))
    assert config["global"]["smtp_auth_password"] == HOSTILE_PASSWORD
    assert config["global"]["smtp_auth_username"] == user
    assert config["global"]["smtp_require_tls"] is True
    assert "smtp_hello" not in config["global"]
    with pytest.raises(SettingsError, match="^alert_smarthost_user: "):
        settings_for({**data, **layout_data, "alert_smarthost_user": 'ops"\nsmtp_hello: evil'},
                     {"web", "db"}, environ=environ)  # fmt: skip


@pytest.mark.parametrize("url", [
    'https://hooks.example.com/a"b', "https://hooks.example.com/a\nb", "https://u:p@example.com/x",
    "https://hooks.example.com/a\\b", "ftp://example.com/x", "https://example.com/x\n",
])  # fmt: skip
@pytest.mark.parametrize("name", ["ALERT_WEBHOOK_URL", "ALERT_HEARTBEAT_URL"])
def test_a_hostile_url_secret_is_refused_by_name_without_its_value(data, environ, name, url):
    with pytest.raises(SettingsError) as error:
        settings_for(data, {"web", "db"}, environ={**environ, f"PRODSTACK_{name}": url})
    message = str(error.value)
    assert message.startswith(f"{name}: (value not shown) is invalid")
    assert url not in message and "example.com" not in message


def test_public_nginx_keeps_metrics_and_openapi_to_loopback(data, environ):
    """/metrics and /openapi.json are not served to the internet."""
    cfg = settings_for({**data, "metrics_allowed_cidrs": ["10.0.0.5/32"]}, {"web", "db"},
                       environ=environ)  # fmt: skip
    site = render("nginx-site.j2.conf", cfg)
    block = site.split("location ~ ^/(metrics|openapi\\.json)$ {", 1)[1].split("}", 1)[0]
    lines = [line.strip() for line in block.strip().splitlines()]
    assert lines == [
        "allow 127.0.0.0/8;", "allow ::1;", "allow 10.0.0.5/32;", "deny all;",
        "proxy_pass http://prodstack_api;",
    ]  # fmt: skip


def test_redis_exporter_speaks_tls_on_the_split_layout(data, environ):
    split = {"private_address": "10.0.0.20", "db_client_cidrs": ["10.0.0.10/32"]}
    db = settings_for({**data, **split}, {"db"}, environ=environ)
    text = render("redis-exporter-defaults.j2.env", db)
    assert "REDIS_ADDR=rediss://127.0.0.1:6379" in text
    assert "-tls-ca-cert-file=/etc/prometheus/prodstack-ca.crt" in text
    assert "skip-tls" not in text
    single = settings_for(data, {"web", "db"}, environ=environ)
    assert "REDIS_ADDR=redis://127.0.0.1:6379" in render("redis-exporter-defaults.j2.env", single)


def test_redis_monitor_user_has_no_keys_config_or_admin(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    line = next(
        line for line in render("redis.j2.conf", cfg).splitlines()
        if line.startswith("user prodstack-monitor ")
    )  # fmt: skip
    rules = line.split()
    # Only the password's SHA-256 hash is in redis.conf.
    assert rules[2] == "on" and rules[3] == f"#{redis_password_hash(cfg.redis_monitor_password)}"
    assert cfg.redis_monitor_password not in line
    assert {"resetkeys", "resetchannels", "-@all"} <= set(rules)
    allowed = {r for r in rules if r.startswith("+")}
    assert allowed <= {"+ping", "+info", "+select", "+client|setname", "+slowlog|get",
                       "+slowlog|len", "+latency|latest"}  # fmt: skip
    assert cfg.secrets["REDIS_PASSWORD"] not in line
