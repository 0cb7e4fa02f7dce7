"""Opt-in Grafana, checked without its repository (unreachable here): the dashboard JSON,
every panel's PromQL parsed by promtool, the provisioning and grafana.ini, the apt source
and the key's fingerprint check. tests/vps/test_e2e_monitoring.py runs every panel's
query against the real Prometheus on the test host."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tasks.config import MONITORING_PORTS, SettingsError, settings_for
from tasks.grafana import KEY_FINGERPRINT, key_commands
from tasks.prometheus import packages_for

from tests.vps.test_templates import render

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "pyinfra" / "files" / "grafana-dashboard.json"
# The panels the dashboard must have, by a word each title must contain.
REQUIRED_PANELS = (
    "route and status", "p50, p95, p99", "Error rate", "Replicas up", "Pool and queue",
    "PostgreSQL connections", "Redis memory", "Host CPU", "Host memory", "Host disk",
    "Backup age",
)  # fmt: skip
PASSWORD = "grafana-admin-0123456789"


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p["targets"]]


@pytest.fixture
def cfg(data, environ):
    return settings_for(
        {**data, "grafana": True, "domain": "api.example.com",
         "grafana_allowed_cidrs": ["203.0.113.0/24"]},
        {"web", "db"},
        environ=environ,
    )  # fmt: skip


@pytest.fixture
def tunnel_only(data, environ):
    return settings_for({**data, "grafana": True, "domain": "api.example.com"}, {"web", "db"},
                        environ=environ)  # fmt: skip


def test_dashboard_has_every_panel_on_the_provisioned_datasource(cfg):
    board = dashboard()
    titles = [p["title"] for p in board["panels"]]
    for wanted in REQUIRED_PANELS:
        assert any(wanted in t for t in titles), f"no panel for {wanted!r}"
    datasource = yaml.safe_load(render("grafana-datasource.j2.yml", cfg))
    uid = datasource["datasources"][0]["uid"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            assert target["expr"].strip()
    assert board["uid"] and board["schemaVersion"] >= 36


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")
def test_every_panel_query_is_valid_promql(tmp_path):
    # promtool parses expressions when it checks rules: each query becomes a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": expr}
                    for i, (_, expr) in enumerate(panel_queries())
                ],
            }
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        ["promtool", "check", "rules", tmp_path / "panels.yml"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_ini_loopback_subpath_and_no_anonymous_access(cfg):
    ini = configparser.ConfigParser()
    ini.read_string(render("grafana.j2.ini", cfg))
    assert ini["server"]["http_addr"] == "127.0.0.1"
    assert ini["server"]["http_port"] == str(MONITORING_PORTS["grafana"])
    assert ini["server"]["root_url"] == "https://api.example.com/grafana/"
    assert ini["server"]["serve_from_sub_path"] == "true"
    assert ini["auth.anonymous"]["enabled"] == "false"
    assert ini["users"]["allow_sign_up"] == "false"
    assert ini["security"]["admin_password"] == PASSWORD
    assert ini["security"]["cookie_secure"] == "true"
    assert ini["snapshots"]["external_enabled"] == "false"
    assert ini["metrics"]["enabled"] == "false"


def test_grafana_without_allowed_addresses_is_for_the_ssh_tunnel_only(tunnel_only):
    ini = configparser.ConfigParser()
    ini.read_string(render("grafana.j2.ini", tunnel_only))
    port = MONITORING_PORTS["grafana"]
    assert ini["server"]["root_url"] == f"http://127.0.0.1:{port}/grafana/"
    # The tunnel is plain HTTP at its end: a Secure cookie would never come back.
    assert ini["security"]["cookie_secure"] == "false"
    assert ini["metrics"]["enabled"] == "false"
    assert "grafana" not in render("nginx-site.j2.conf", tunnel_only)


def test_unattended_upgrades_take_grafanas_repository(cfg):
    text = render("52prodstack-grafana-upgrades.j2.conf", cfg)
    assert '"site=apt.grafana.com";' in text and "Unattended-Upgrade::Origins-Pattern" in text


def test_grafana_is_served_under_its_subpath_only_when_enabled(cfg, data, environ):
    site = render("nginx-site.j2.conf", cfg)
    location = site[site.index("location /grafana/ {"):].split("}", 1)[0]
    assert "allow 203.0.113.0/24;" in location and "deny all;" in location
    assert "limit_req zone=prodstack_api" in location
    off = settings_for(data, {"web", "db"}, environ=environ)
    assert "grafana" not in render("nginx-site.j2.conf", off)


def test_apt_source_is_signed_by_the_checked_key(cfg):
    sources = render("grafana.j2.sources", cfg, keyring="/etc/apt/keyrings/grafana.asc")
    fields = dict(line.split(": ", 1) for line in sources.splitlines() if ": " in line)
    assert fields["URIs"] == "https://apt.grafana.com"
    assert fields["Signed-By"] == "/etc/apt/keyrings/grafana.asc"
    commands = " && ".join(key_commands())
    assert f"grep -qx {KEY_FINGERPRINT}" in commands
    assert "--proto '=https'" in commands
    assert "gnupg" in packages_for(cfg)


def test_grafana_needs_its_admin_password(data, environ):
    environ = {k: v for k, v in environ.items() if k != "PRODSTACK_GRAFANA_ADMIN_PASSWORD"}
    with pytest.raises(SettingsError, match="GRAFANA_ADMIN_PASSWORD"):
        settings_for({**data, "grafana": True}, {"web", "db"}, environ=environ)
    with pytest.raises(SettingsError, match="^grafana: "):
        settings_for({**data, "grafana": "yes"}, {"web", "db"}, environ=environ)
