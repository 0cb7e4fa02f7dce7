"""Base OS: packages, unattended upgrades, time sync, deploy user, sshd, fail2ban, sysctl."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Sha1File
from pyinfra.operations import apt, files, server, systemd

from tasks import acct, aide, pwquality
from tasks.config import Settings
from tasks.facts import SmallSshModuli
from tasks.prometheus import packages_for as monitoring_packages
from tasks.templates import UPLOAD_DIR, restart_on_change, template

# sshd lets only this group in (AllowGroups), plus root until the deploy user takes over.
SSH_GROUP = "ssh-users"
SSHD_STAGED = "/etc/ssh/prodstack-sshd.conf"
SSHD_LIVE = "/etc/ssh/sshd_config.d/10-prodstack.conf"
# Group exchange offers only moduli of at least this many bits (Mozilla's guideline).
MIN_MODULI_BITS = 3072

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
    "needrestart",  # restarts what an update replaced (templates/needrestart.j2.conf)
    "systemd-timesyncd",
    "fail2ban",
    "python3-systemd",  # fail2ban's journal backend: Debian 12 has no /var/log/auth.log
    "ufw",
    "auditd",  # a small rule set (tasks/os_hardening.py)
]


def packages_for(cfg: Settings) -> list[str]:
    """Every package the host needs, so they go in one apt transaction."""
    wanted = list(BASE_PACKAGES)
    if cfg.is_web:
        wanted += ["docker.io", "nginx"]
        if cfg.tls == "letsencrypt":
            wanted += ["certbot"]
    if cfg.is_db:
        wanted += ["postgresql", "postgresql-client", "redis-server", "redis-tools", "pgbackrest"]
        if cfg.backup_s3_bucket:
            # prodstack-backup asks the S3 API whether the bucket keeps overwritten objects.
            wanted += ["python3-botocore"]
    wanted += acct.PACKAGES + aide.PACKAGES + pwquality.PACKAGES
    return wanted + monitoring_packages(cfg)


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
    template(
        name="needrestart: restart updated services unasked, except the stack's own",
        src="needrestart.j2.conf",
        dest="/etc/needrestart/conf.d/prodstack.conf",
    )
    systemd.service(
        name="Time sync (systemd-timesyncd) enabled",
        service="systemd-timesyncd.service",
        running=None,  # skipped by systemd inside containers (ConditionVirtualization)
        enabled=True,
    )

    server.group(name=f"SSH login group {SSH_GROUP}", group=SSH_GROUP)
    server.user(
        name=f"Deploy user {cfg.deploy_user} with SSH key",
        user=cfg.deploy_user,
        shell="/bin/bash",
        groups=["sudo", SSH_GROUP] + (["docker"] if cfg.is_web else []),
        public_keys=list(cfg.deploy_user_public_keys),
        create_home=True,
    )
    if cfg.ssh_user not in ("root", cfg.deploy_user):
        # sshd lets only SSH_GROUP in: the sudo user pyinfra connects as (a provider's
        # `admin`, say) joins it, or this deploy would lock it out of the next one.
        server.user(name=f"SSH user {cfg.ssh_user} in {SSH_GROUP}", user=cfg.ssh_user,
                    groups=[SSH_GROUP], append=True)  # fmt: skip
    # pyinfra writes straight to the destination as root; as a sudo user it uploads to a
    # temporary file first, which lands here. The deploy user owns it on every run.
    uploader = cfg.deploy_user if cfg.ssh_user == "root" else cfg.ssh_user
    files.directory(name="State directory", path="/var/lib/prodstack", mode="750")
    files.directory(
        name="Upload directory for files holding secrets (0700)",
        path=UPLOAD_DIR,
        mode="700",
        user=uploader,
        group=uploader,
    )
    template(
        name="Passwordless sudo for the deploy user (it has no password)",
        src="sudoers.j2.conf",
        dest=f"/etc/sudoers.d/90-prodstack-{cfg.deploy_user}",
        mode="440",
        cfg=cfg,
    )

    sshd_config(cfg)

    jail = template(
        name="fail2ban jail for sshd (journal backend)",
        src="fail2ban.j2.local",
        dest="/etc/fail2ban/jail.d/prodstack.local",
        cfg=cfg,
    )
    restart_on_change("fail2ban.service", jail.did_change, label="fail2ban")

    # ufw applies its own sysctl file on every start, resetting some of ours.
    ufw_default = files.line(
        name="ufw leaves the kernel settings alone (IPT_SYSCTL=)",
        path="/etc/default/ufw",
        line=r"^IPT_SYSCTL=",
        replace="IPT_SYSCTL=",
    )
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
        _if=lambda: sysctl.did_change() or ufw_default.did_change(),
    )


def sshd_install_commands(staged: str = SSHD_STAGED, live: str = SSHD_LIVE,
                          main: str = "/etc/ssh/sshd_config") -> list[str]:  # fmt: skip
    """Check the staged drop-in together with the rest of sshd's configuration, and move it
    into place only if `sshd -t` accepts it: sshd reads its files again for every new
    connection, so a broken file in sshd_config.d would refuse the next login."""
    candidate = f"{staged}.candidate"
    return [
        # The staged file first: for sshd the first value of a keyword wins, as it will once
        # the staged file replaces the live one.
        f"{{ echo 'Include {staged}'; cat {main}; }} > {candidate}",
        f"sshd -t -f {candidate} || {{ rm -f {candidate}; exit 1; }}",
        f"rm -f {candidate}",
        f"install -m 644 {staged} {live}.tmp",
        f"mv -f {live}.tmp {live}",
    ]


@deploy("sshd")
def sshd_config(cfg: Settings) -> None:
    if host.get_fact(SmallSshModuli, bits=MIN_MODULI_BITS):
        server.shell(
            name=f"sshd: drop group-exchange moduli below {MIN_MODULI_BITS} bits",
            commands=[
                f"awk '$1 ~ /^#/ || $5 >= {MIN_MODULI_BITS - 1}' /etc/ssh/moduli > "
                "/etc/ssh/moduli.tmp",
                "mv -f /etc/ssh/moduli.tmp /etc/ssh/moduli",
            ],
        )
    staged = template(
        name="sshd: keys only, modern algorithms (staged for `sshd -t`)",
        src="sshd.j2.conf",
        dest=SSHD_STAGED,
        mode="600",
        cfg=cfg,
        ssh_group=SSH_GROUP,
    )
    # pyinfra's files.template has no validate hook: template to the staged path, check it
    # with `sshd -t`, then move it. A live file that drifted from the staged one is redone.
    live, wanted = (host.get_fact(Sha1File, path=p) for p in (SSHD_LIVE, SSHD_STAGED))
    drifted = live is None or live != wanted

    def changed() -> bool:
        return staged.did_change() or drifted

    server.shell(
        name="sshd: check the staged config with sshd -t, then move it into place",
        commands=sshd_install_commands(),
        _if=changed,
    )
    systemd.service(
        name="Reload sshd", service="ssh.service", running=True, reloaded=True, _if=changed
    )
