"""Base OS: packages, unattended upgrades, time sync, deploy user, sshd, fail2ban, sysctl."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, server, systemd

from tasks.config import Settings
from tasks.templates import restart_on_change, template

BASE_PACKAGES = [
    "ca-certificates",
    "curl",
    "openssl",
    "python3",
    "sudo",
    "procps",
    "logrotate",
    "unattended-upgrades",
    "apt-listchanges",
    "systemd-timesyncd",
    "fail2ban",
    "python3-systemd",  # fail2ban's journal backend: Debian 12 has no /var/log/auth.log
    "ufw",
]


def packages_for(cfg: Settings) -> list[str]:
    """Every package the host needs, so they go in one apt transaction."""
    wanted = list(BASE_PACKAGES)
    if cfg.is_web:
        wanted += ["docker.io", "nginx"]
        if cfg.tls == "letsencrypt":
            wanted += ["certbot"]
    if cfg.is_db:
        wanted += ["postgresql", "postgresql-client", "redis-server", "redis-tools"]
        if cfg.backup_s3_bucket:
            wanted += ["python3-boto3"]
    return wanted


@deploy("Base packages")
def packages(cfg: Settings) -> None:
    wanted = packages_for(cfg)
    installed = host.get_fact(DebPackages) or {}
    missing = [p for p in wanted if p not in installed]
    # `apt-get update` only when something is missing: a converged host stays unchanged,
    # and security updates come from unattended-upgrades, not from deploys.
    return apt.packages(
        name="Install packages (one apt transaction)",
        packages=wanted,
        update=bool(missing),
        no_recommends=True,
    )


@deploy("Base hardening")
def hardening(cfg: Settings) -> None:
    template(
        name="Enable unattended security upgrades",
        src="20auto-upgrades.j2.conf",
        dest="/etc/apt/apt.conf.d/20auto-upgrades",
    )
    systemd.service(
        name="Time sync (systemd-timesyncd) enabled",
        service="systemd-timesyncd.service",
        running=None,  # skipped by systemd inside containers (ConditionVirtualization)
        enabled=True,
    )

    server.user(
        name=f"Deploy user {cfg.deploy_user} with SSH key",
        user=cfg.deploy_user,
        shell="/bin/bash",
        groups=["sudo"] + (["docker"] if cfg.is_web else []),
        public_keys=list(cfg.deploy_user_public_keys),
        create_home=True,
    )
    template(
        name="Passwordless sudo for the deploy user (it has no password)",
        src="sudoers.j2.conf",
        dest=f"/etc/sudoers.d/90-prodstack-{cfg.deploy_user}",
        mode="440",
        cfg=cfg,
    )

    sshd = template(
        name="sshd: keys only, no passwords",
        src="sshd.j2.conf",
        dest="/etc/ssh/sshd_config.d/10-prodstack.conf",
        mode="644",
        cfg=cfg,
    )
    server.shell(
        name="Check the sshd config before reloading",
        commands=["sshd -t"],
        _if=sshd.did_change,
    )
    systemd.service(
        name="Reload sshd",
        service="ssh.service",
        running=True,
        reloaded=True,
        _if=sshd.did_change,
    )

    jail = template(
        name="fail2ban jail for sshd (journal backend)",
        src="fail2ban.j2.local",
        dest="/etc/fail2ban/jail.d/prodstack.local",
    )
    restart_on_change("fail2ban.service", jail.did_change, label="fail2ban")

    sysctl = template(
        name="Kernel hardening (dev-sec baseline, ip_forward kept for Docker)",
        src="sysctl.j2.conf",
        dest="/etc/sysctl.d/60-prodstack-hardening.conf",
        cfg=cfg,
    )
    systemd.service(
        name="Apply sysctl settings",
        # systemd-sysctl skips itself where /proc/sys is read-only (containers).
        service="systemd-sysctl.service",
        running=None,
        restarted=True,
        _if=sysctl.did_change,
    )
