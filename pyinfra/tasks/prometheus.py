"""Prometheus, its exporters and Alertmanager from Debian's packages, all on loopback.

Each host runs its own Prometheus and Alertmanager and scrapes only itself: node exporter
everywhere; on a web host the API replicas (the targets prodstack-release writes) and
nginx's stub_status; on a db host PostgreSQL (peer authentication as a pg_monitor-only
role) and Redis (an ACL user limited to INFO-style reads). The alert rules are one file,
files/prodstack-alerts.yml, unit-tested with promtool in tests/vps/test_alert_rules.py.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import Hostname
from pyinfra.operations import files, postgres, server, systemd

from tasks.config import MONITORING_PORTS, Settings
from tasks.facts import DiskSizeMb, PostgresRoleMember
from tasks.grafana import grafana
from tasks.pki import ca_certificate, internal_expiries
from tasks.templates import banner, put, restart_on_change, template

RULES = "/etc/prometheus/rules/prodstack-alerts.yml"
API_TARGETS = "/etc/prometheus/targets/api.json"
# node exporter's textfile collector (Debian's default): backups, drills and the health
# check write their metrics here, atomically (temp file, then rename).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
# The system user the sandboxed health check runs as (created by tasks/healthcheck.py).
HEALTH_USER = "prodstack-health"
# The private CA (tasks/pki.py), readable by the exporters and the health check (split
# layout only).
EXPORTER_CA = "/etc/prometheus/prodstack-ca.crt"
ALERTMANAGER_URL = f"http://127.0.0.1:{MONITORING_PORTS['alertmanager']}"


def packages_for(cfg: Settings) -> list[str]:
    """Debian packages of the monitoring stack; installed with the base packages."""
    wanted = ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter"]
    if cfg.is_web:
        wanted += ["prometheus-nginx-exporter"]
    if cfg.is_db:
        wanted += ["prometheus-postgres-exporter", "prometheus-redis-exporter"]
    if cfg.grafana and cfg.is_web:
        wanted += ["gnupg"]  # checks the fingerprint of Grafana's repository key
    return wanted


def scrape_jobs(cfg: Settings) -> list[tuple[str, int]]:
    """(job, loopback port) of every static target on this host."""
    jobs = [
        ("prometheus", MONITORING_PORTS["prometheus"]),
        ("alertmanager", MONITORING_PORTS["alertmanager"]),
        ("node", MONITORING_PORTS["node exporter"]),
    ]
    if cfg.is_web:
        jobs.append(("nginx", MONITORING_PORTS["nginx exporter"]))
    if cfg.is_db:
        jobs += [
            ("postgres", MONITORING_PORTS["postgres exporter"]),
            ("redis", MONITORING_PORTS["redis exporter"]),
        ]
    return jobs


def retention_size_mb(disk_mb: int, percent: int) -> int:
    """Prometheus's size cap: `percent` of the disk, never below 256 MB."""
    return max(256, disk_mb * percent // 100)


def receiver_warning(cfg: Settings) -> str | None:
    if cfg.alert_receivers and not cfg.alert_heartbeat_url:
        return (
            "NO HEARTBEAT: the secret ALERT_HEARTBEAT_URL is not set, so if this host, "
            "Prometheus or Alertmanager dies, no alert says so: the silence looks like health. "
            "Point it at a dead man's switch outside the host (docs/vps.md, 'Adding a "
            "receiver')."
        )
    if cfg.alert_receivers:
        return None
    return (
        "NO ALERT RECEIVER: neither `alert_email` nor the secret ALERT_WEBHOOK_URL is set, so "
        "alerts (a database down, backups failing, the disk filling) reach nobody. They show only "
        "in Alertmanager on the host's loopback. See docs/vps.md, 'Adding a receiver'."
    )


@deploy("Monitoring: Prometheus, exporters, Alertmanager")
def monitoring(cfg: Settings) -> None:
    warning = receiver_warning(cfg)
    if warning:
        banner(warning)
    host_name = host.get_fact(Hostname) or "localhost"
    ctx = {"cfg": cfg, "ports": MONITORING_PORTS, "host_name": host_name}

    files.directory(name="Rules directory", path="/etc/prometheus/rules", mode="755")
    files.directory(name="Targets directory", path="/etc/prometheus/targets", mode="755")
    # The sandboxed health check (its own user, tasks/healthcheck.py) adds its metric
    # through the group; the sticky bit keeps it from removing or replacing anyone else's.
    files.directory(
        name="Textfile collector directory (the health check's group may add files)",
        path=TEXTFILE_DIR,
        mode="1775",
        user="prometheus",
        group=HEALTH_USER,
    )
    expiries = internal_expiries(cfg)
    if expiries:
        template(
            name="Internal certificates' expiry, for CertificateExpiresSoon",
            src="prodstack-internal-tls.j2.prom",
            dest=f"{TEXTFILE_DIR}/prodstack_internal_tls.prom",
            expiries=expiries,
        )
    else:
        files.file(name="No private CA: no internal certificates' expiry",
                   path=f"{TEXTFILE_DIR}/prodstack_internal_tls.prom", present=False)  # fmt: skip

    node = template(
        name="node exporter: loopback, textfile directory",
        src="node-exporter-defaults.j2.env",
        dest="/etc/default/prometheus-node-exporter",
        textfile_dir=TEXTFILE_DIR,
        **ctx,
    )
    restart_on_change("prometheus-node-exporter.service", node.did_change, label="node exporter")

    if cfg.is_web:
        nginx = template(
            name="nginx exporter: loopback, reads stub_status",
            src="nginx-exporter-defaults.j2.env",
            dest="/etc/default/prometheus-nginx-exporter",
            **ctx,
        )
        restart_on_change(
            "prometheus-nginx-exporter.service", nginx.did_change, label="nginx exporter"
        )
        if host.get_fact(File, path=API_TARGETS) is None:
            server.shell(
                name="Prometheus targets of the replicas in service",
                commands=["/usr/local/sbin/prodstack-release targets"],
            )

    if cfg.is_db:
        database_exporters(cfg, ctx)

    alerts = alertmanager(cfg, ctx)
    prometheus(cfg, ctx)
    template(
        name="prodstack-alert@.service: a failed unit raises an alert",
        src="prodstack-alert@.j2.service",
        dest="/etc/systemd/system/prodstack-alert@.service",
        alertmanager_url=ALERTMANAGER_URL,
        **ctx,
    )
    if cfg.grafana and cfg.is_web:
        grafana(cfg)
    return alerts


def database_exporters(cfg: Settings, ctx: dict) -> None:
    # The exporter's OS user `prometheus` logs in over the local socket by peer
    # authentication as the role of the same name, which may only read statistics.
    postgres.role(
        name="PostgreSQL role prometheus (login, no password)",
        role="prometheus",
        login=True,
        _sudo=True,
        _sudo_user="postgres",
    )
    if not host.get_fact(PostgresRoleMember, role="prometheus", group="pg_monitor"):
        postgres.sql(
            name="prometheus is a member of pg_monitor",
            sql="GRANT pg_monitor TO prometheus",
            _sudo=True,
            _sudo_user="postgres",
        )
    queries = put(
        name="postgres exporter: WAL archiving queries",
        src="postgres-exporter-queries.yml",
        dest="/etc/prometheus/postgres-exporter-queries.yml",
        mode="644",
    )
    pg = template(
        name="postgres exporter: loopback, peer authentication (0600)",
        src="postgres-exporter-defaults.j2.env",
        dest="/etc/default/prometheus-postgres-exporter",
        mode="600",
        **ctx,
    )
    restart_on_change(
        "prometheus-postgres-exporter.service",
        lambda: pg.did_change() or queries.did_change(),
        label="postgres exporter",
    )
    watched = []
    if cfg.db_tls:
        # The exporter runs as `prometheus` and the health check as its own user; neither
        # can enter /etc/prodstack (0750).
        watched.append(
            files.put(
                name="Private CA certificate (redis exporter)",
                src=str(ca_certificate(cfg.pki_dir)),
                dest=EXPORTER_CA,
                mode="644",
            )
        )
    watched.append(
        template(
            name="redis exporter: loopback, the monitor ACL user (0600)",
            src="redis-exporter-defaults.j2.env",
            secret=True,
            dest="/etc/default/prometheus-redis-exporter",
            mode="600",
            exporter_ca=EXPORTER_CA,
            **ctx,
        )
    )
    restart_on_change(
        "prometheus-redis-exporter.service",
        lambda: any(op.did_change() for op in watched),
        label="redis exporter",
    )


def alertmanager(cfg: Settings, ctx: dict):
    conf = template(
        name="alertmanager.yml: routes by severity, inhibitions, receivers (0640)",
        src="alertmanager.j2.yml",
        secret=True,
        dest="/etc/prometheus/alertmanager.yml",
        mode="640",
        group="prometheus",
        slack=bool(cfg.alert_webhook_url and "hooks.slack.com" in cfg.alert_webhook_url),
        **ctx,
    )
    args = template(
        name="Alertmanager: loopback, no cluster port",
        src="alertmanager-defaults.j2.env",
        dest="/etc/default/prometheus-alertmanager",
        **ctx,
    )
    server.shell(
        name="amtool check-config",
        commands=["amtool check-config /etc/prometheus/alertmanager.yml >/dev/null"],
        _if=conf.did_change,
    )
    restart_on_change(
        "prometheus-alertmanager.service",
        lambda: conf.did_change() or args.did_change(),
        label="Alertmanager",
    )
    return conf


def prometheus(cfg: Settings, ctx: dict) -> None:
    disk_mb = host.get_fact(DiskSizeMb, path="/var/lib") or 10240
    rules = put(
        name="Alert rules (files/prodstack-alerts.yml)",
        src="prodstack-alerts.yml",
        dest=RULES,
        mode="644",
    )
    conf = template(
        name="prometheus.yml: loopback targets, rules, Alertmanager",
        src="prometheus.j2.yml",
        dest="/etc/prometheus/prometheus.yml",
        jobs=scrape_jobs(cfg),
        api_targets=API_TARGETS,
        **ctx,
    )
    args = template(
        name="Prometheus: loopback, retention by days and disk share",
        src="prometheus-defaults.j2.env",
        dest="/etc/default/prometheus",
        retention_size_mb=retention_size_mb(disk_mb, cfg.metrics_retention_disk_percent),
        **ctx,
    )
    server.shell(
        name="promtool check config (and the rules it loads)",
        commands=["promtool check config /etc/prometheus/prometheus.yml >/dev/null"],
        _if=lambda: conf.did_change() or rules.did_change(),
    )
    restart_on_change("prometheus.service", args.did_change, label="Prometheus")
    systemd.service(
        name="Reload Prometheus for the new configuration or rules",
        service="prometheus.service",
        reloaded=True,
        _if=lambda: (conf.did_change() or rules.did_change()) and not args.did_change(),
    )
