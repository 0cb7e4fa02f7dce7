"""nginx in front of the replicas, and its TLS certificate (Let's Encrypt, given, self-signed)."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd

from tasks.config import MONITORING_PORTS, Settings
from tasks.facts import Ipv6Enabled
from tasks.templates import put_secret, restart_on_change, template, unit_file

TLS_DIR = "/etc/prodstack/tls"
CERT = f"{TLS_DIR}/fullchain.pem"
KEY = f"{TLS_DIR}/privkey.pem"
WEBROOT = "/var/www/letsencrypt"
# Written by prodstack-release (prodstack/host/release.py): the replicas currently in service.
UPSTREAM_SERVERS = "/etc/nginx/prodstack/upstream-servers.conf"


@deploy("TLS certificate")
def certificate(cfg: Settings):
    """Returns the operations whose change means nginx must reload."""
    files.directory(name="TLS directory", path=TLS_DIR, mode="700")
    changed = []
    if cfg.tls == "provided":
        changed.append(
            files.put(
                name="Provided certificate", src=cfg.tls_certificate_file, dest=CERT, mode="644"
            )  # fmt: skip
        )
        changed.append(
            put_secret(name="Provided private key", src=cfg.tls_key_file, dest=KEY, mode="600")
        )
        return changed
    if host.get_fact(File, path=CERT) is None:
        # Self-signed: the stack works without public DNS. With Let's Encrypt it only
        # bridges the first minutes until certbot has a certificate.
        name = cfg.domain or "localhost"
        changed.append(
            server.shell(
                name=f"Self-signed certificate for {name}",
                commands=[
                    "openssl req -x509 -newkey rsa:2048 -nodes -days 825 -sha256 "
                    f"-subj /CN={name} -addext subjectAltName=DNS:{name} "
                    f"-keyout {KEY} -out {CERT} 2>/dev/null",
                    f"chmod 600 {KEY}",
                ],
            )
        )
    return changed


def certbot_commands(cfg: Settings) -> list[str]:
    """Every value quoted: an e-mail address may hold characters the shell acts on."""
    domain, email = shlex.quote(cfg.domain), shlex.quote(cfg.letsencrypt_email)
    lineage = shlex.quote(f"/etc/letsencrypt/live/{cfg.domain}")
    return [
        f"certbot certonly --webroot -w {WEBROOT} -d {domain} --non-interactive "
        f"--agree-tos -m {email} --keep-until-expiring",
        f"RENEWED_LINEAGE={lineage} /etc/letsencrypt/renewal-hooks/deploy/prodstack.sh",
    ]


@deploy("Let's Encrypt")
def letsencrypt(cfg: Settings) -> None:
    template(
        name="certbot deploy hook: copy renewed certificates, reload nginx",
        src="certbot-deploy-hook.j2.sh",
        dest="/etc/letsencrypt/renewal-hooks/deploy/prodstack.sh",
        mode="755",
        cfg=cfg,
    )
    if host.get_fact(File, path=f"/etc/letsencrypt/live/{cfg.domain}/fullchain.pem") is None:
        server.shell(
            name=f"Obtain a Let's Encrypt certificate for {cfg.domain}",
            commands=certbot_commands(cfg),
        )
    systemd.service(
        name="certbot renewal timer", service="certbot.timer", running=True, enabled=True
    )


@deploy("nginx")
def load_balancer(cfg: Settings, packages_op=None) -> None:
    files.directory(name="Upstream directory", path="/etc/nginx/prodstack", mode="755")
    files.directory(name="ACME webroot", path=WEBROOT, mode="755")
    tls_ops = certificate(cfg)
    if packages_op is not None:
        # Debian enables a default site on first install, after this run's facts were read.
        server.shell(
            name="Remove Debian's default site (after nginx was first installed)",
            commands=["rm -f /etc/nginx/sites-enabled/default"],
            _if=packages_op.did_change,
        )
    default = files.link(
        name="No default site", path="/etc/nginx/sites-enabled/default", present=False
    )
    site = template(
        name="Site: upstream, rate limit, TLS, redirect, headers",
        src="nginx-site.j2.conf",
        dest="/etc/nginx/sites-available/prodstack.conf",
        cfg=cfg,
        cert=CERT,
        key=KEY,
        webroot=WEBROOT,
        upstream_servers=UPSTREAM_SERVERS,
        ipv6=bool(host.get_fact(Ipv6Enabled)),
        status_port=MONITORING_PORTS["nginx stub_status"],
        grafana_port=MONITORING_PORTS["grafana"],
    )
    link = files.link(
        name="Enable the site",
        path="/etc/nginx/sites-enabled/prodstack.conf",
        target="/etc/nginx/sites-available/prodstack.conf",
    )
    template(
        name="logrotate for nginx",
        src="logrotate-nginx.j2.conf",
        dest="/etc/logrotate.d/nginx",
        cfg=cfg,
    )
    hourly = unit_file(
        name="logrotate.timer hourly (nginx logs rotate by size within the hour)",
        src="logrotate-hourly.j2.conf",
        dest="/etc/systemd/system/logrotate.timer.d/prodstack-hourly.conf",
        label="logrotate timer",
        cfg=cfg,
    )
    restart_on_change("logrotate.timer", hourly.did_change, label="logrotate timer")
    watched = [site, link, default, *tls_ops]

    def changed() -> bool:
        return any(op.did_change() for op in watched) or (
            packages_op is not None and packages_op.did_change()
        )

    server.shell(name="nginx -t", commands=["nginx -t -q"], _if=changed)
    systemd.service(name="nginx running and enabled", service="nginx.service", running=True,
                    enabled=True)  # fmt: skip
    systemd.service(name="Reload nginx", service="nginx.service", reloaded=True, _if=changed)
    if cfg.tls == "letsencrypt":
        letsencrypt(cfg)
