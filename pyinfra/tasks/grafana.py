"""Opt-in Grafana (`grafana: true`): Grafana's signed apt repository (in unattended-upgrades
too), loopback only, and under https://<host>/grafana/ through nginx for
`grafana_allowed_cidrs` only, with Grafana's own login, its /metrics off, a provisioned
Prometheus datasource and the dashboard in files/grafana-dashboard.json.

The repository's key is downloaded over HTTPS and kept only if its fingerprint is the one
Grafana publishes on https://apt.grafana.com (the signing key since 2023-08-24), so a
swapped key file fails the deploy instead of being trusted.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server

from tasks.config import MONITORING_PORTS, Settings
from tasks.templates import put, restart_on_change, template

KEY_URL = "https://apt.grafana.com/gpg.key"
KEY_FINGERPRINT = "B53AE77BADB630A683046005963FA27710458545"
KEYRING = "/etc/apt/keyrings/grafana.asc"
DASHBOARDS_DIR = "/var/lib/grafana/dashboards/prodstack"


def key_commands() -> list[str]:
    """Fetch the key to a temp file, check its fingerprint, then move it into place."""
    return [
        "install -d -m 755 /etc/apt/keyrings",
        f"curl -fsSL --proto '=https' {KEY_URL} -o {KEYRING}.tmp",
        # gpg prints `fpr:::::::::FINGERPRINT:` per key; exactly the published one must be there.
        f"gpg --show-keys --with-colons {KEYRING}.tmp | awk -F: '$1 == \"fpr\" {{print $10}}' "
        f"| grep -qx {KEY_FINGERPRINT} || {{ rm -f {KEYRING}.tmp; "
        f"echo 'Grafana key fingerprint is not {KEY_FINGERPRINT}' >&2; exit 1; }}",
        f"chmod 644 {KEYRING}.tmp && mv {KEYRING}.tmp {KEYRING}",
    ]


@deploy("Grafana")
def grafana(cfg: Settings) -> None:
    ctx = {"cfg": cfg, "ports": MONITORING_PORTS}
    if host.get_fact(File, path=KEYRING) is None:
        server.shell(name="Grafana's apt key (fingerprint checked)", commands=key_commands())
    sources = template(
        name="Grafana's apt repository (signed-by its key only)",
        src="grafana.j2.sources",
        dest="/etc/apt/sources.list.d/grafana.sources",
        keyring=KEYRING,
        **ctx,
    )
    apt.packages(
        name="Install grafana",
        packages=["grafana"],
        update=True,
        _if=sources.did_change,
        no_recommends=True,
    )
    apt.packages(name="grafana installed", packages=["grafana"], no_recommends=True)
    template(
        name="unattended-upgrades takes Grafana's repository too",
        src="52prodstack-grafana-upgrades.j2.conf",
        dest="/etc/apt/apt.conf.d/52prodstack-grafana-upgrades",
        **ctx,
    )
    ini = template(
        name="grafana.ini: loopback, /grafana/ sub-path, no sign-up or anonymous access (0640)",
        src="grafana.j2.ini",
        secret=True,
        dest="/etc/grafana/grafana.ini",
        mode="640",
        group="grafana",
        **ctx,
    )
    datasource = template(
        name="Grafana datasource: the local Prometheus",
        src="grafana-datasource.j2.yml",
        dest="/etc/grafana/provisioning/datasources/prodstack.yaml",
        mode="640",
        group="grafana",
        **ctx,
    )
    provider = template(
        name="Grafana dashboard provider",
        src="grafana-dashboards.j2.yml",
        dest="/etc/grafana/provisioning/dashboards/prodstack.yaml",
        mode="640",
        group="grafana",
        dashboards_dir=DASHBOARDS_DIR,
        **ctx,
    )
    files.directory(name="Dashboards directory", path=DASHBOARDS_DIR, mode="755")
    dashboard = put(
        name="Dashboard (files/grafana-dashboard.json)",
        src="grafana-dashboard.json",
        dest=f"{DASHBOARDS_DIR}/prodstack.json",
        mode="644",
    )
    restart_on_change(
        "grafana-server.service",
        lambda: any(op.did_change() for op in (ini, datasource, provider, dashboard)),
        label="Grafana",
    )
