"""Every template renders; the nginx site passes `nginx -t`; shell and JSON outputs parse."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import jinja2
import pytest
from tasks.aide import DATABASE as AIDE_DATABASE
from tasks.aide import EXCLUDED as AIDE_EXCLUDED
from tasks.base import SSH_GROUP
from tasks.config import MONITORING_PORTS, settings_for
from tasks.os_hardening import BLACKLISTED_MODULES, PROC_GROUP
from tasks.postgres import tuning
from tasks.prometheus import HEALTH_USER, scrape_jobs
from tasks.pwquality import PWQUALITY
from tasks.redis import wanted_users
from tasks.templates import TEMPLATES

TEMPLATE_NAMES = sorted(p.name for p in TEMPLATES.glob("*.j2.*"))
PROFILES = {
    "single-host": ({}, {"web", "db"}),
    "single-host-s3-domain": (
        {
            "backup_s3_bucket": "backups",
            "backup_s3_endpoint_url": "https://127.0.0.1:5000",
            "domain": "api.example.com",
            "letsencrypt_email": "ops@example.com",
            "replicas": 5,
            "grafana": True,
        },
        {"web", "db"},
    ),  # fmt: skip
    "db-host": (
        {"private_address": "10.0.0.20", "db_client_cidrs": ["10.0.0.10/32"]},
        {"db"},
    ),
}


def render(name: str, cfg, **extra) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    context = {
        "cfg": cfg,
        "settings": tuning(4096, 2, 50, 200),
        "maxmemory_mb": 409,
        "cert": "/etc/prodstack/tls/fullchain.pem",
        "key": "/etc/prodstack/tls/privkey.pem",
        "webroot": "/var/www/letsencrypt",
        "ipv6": True,
        "version": "15",
        "upstream_servers": "/etc/nginx/prodstack/upstream-servers.conf",
        "tls_dir": "/etc/postgresql/tls",
        "expiries": {"/etc/prodstack/ca.crt": 2000000000},
        "ca_file": "/etc/prodstack/ca.crt",
        "ssh_group": SSH_GROUP,
        "status_port": MONITORING_PORTS["nginx stub_status"],
        "grafana_port": MONITORING_PORTS["grafana"],
        "keyring": "/etc/apt/keyrings/grafana.asc",
        "dashboards_dir": "/var/lib/grafana/dashboards/prodstack",
        "ports": MONITORING_PORTS,
        "host_name": "vps",
        "jobs": scrape_jobs(cfg),
        "api_targets": "/etc/prometheus/targets/api.json",
        "retention_size_mb": 1024,
        "archive_queue_max_mb": 2048,
        "textfile_dir": "/var/lib/prometheus/node-exporter",
        "alertmanager_url": "http://127.0.0.1:9093",
        "slack": False,
        "exporter_ca": "/etc/prometheus/prodstack-ca.crt",
        "health_user": HEALTH_USER,
        "units": "prodstack-backup-*.service",
        "drill": False,
        "modules": BLACKLISTED_MODULES,
        "proc_group": PROC_GROUP,
        "excluded": AIDE_EXCLUDED,
        "database": AIDE_DATABASE,
        "rules": PWQUALITY,
        **extra,
    }
    if name == "redis.j2.conf":
        context.setdefault("users", wanted_users(cfg))
    if name == "credentials.j2.json":
        from tasks.rotation import fingerprints

        context.setdefault("prints", fingerprints(cfg))
    return env.from_string((TEMPLATES / name).read_text()).render(**context)


def with_login(cfg):
    """As deploy.py leaves it: the login role decided from the db host (tasks/postgres.py)."""
    return replace(cfg, postgres_login=cfg.postgres_login_roles[0])


@pytest.fixture(params=list(PROFILES))
def cfg(request, data, environ):
    override, groups = PROFILES[request.param]
    return with_login(settings_for({**data, **override}, groups, environ=environ))


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_template_renders(name, cfg):
    if name == "grafana.j2.ini" and not cfg.grafana:
        # Its admin password is only read (and required) when Grafana is on.
        with pytest.raises(jinja2.UndefinedError, match="GRAFANA_ADMIN_PASSWORD"):
            render(name, cfg)
        return
    text = render(name, cfg)
    if name.endswith(".json"):
        json.loads(text)
    if name.endswith(".sh"):
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    assert "{{" not in text and "{%" not in text


def test_app_env_holds_the_urls_and_no_app_version(data, environ):
    cfg = with_login(settings_for(data, {"web", "db"}, environ=environ))
    env = dict(line.split("=", 1) for line in render("app.j2.env", cfg).splitlines() if "=" in line)
    assert env["DATABASE_URL"] == cfg.database_url
    assert env["DATABASE_URL"].startswith("postgresql://prodstack_a:")  # never the owner
    assert env["REDIS_URL"] == cfg.redis_url
    assert env["API_TOKEN"] == cfg.secrets["API_TOKEN"]
    assert "APP_VERSION" not in env  # the image's baked version must show in /health


def test_redis_and_postgres_settings(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    redis = render("redis.j2.conf", cfg)
    for line in (
        "bind 127.0.0.1 172.30.232.1",
        "user default off resetpass -@all",
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory 409mb",
        "maxmemory-policy allkeys-lru",
    ):
        assert line in redis.splitlines()
    pg = render("postgresql.j2.conf", cfg)
    assert "listen_addresses = '127.0.0.1,172.30.232.1'" in pg
    assert "password_encryption = scram-sha-256" in pg
    assert "shared_buffers = 512MB" in pg
    hba = render("pg_hba.j2.conf", cfg)
    # The owner (no login of its own after the first deploy) and its two login roles.
    assert ("host    prodstack  prodstack,prodstack_a,prodstack_b  172.30.232.0/24  "
            "scram-sha-256") in hba  # fmt: skip
    assert "trust" not in hba and " md5" not in hba


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
@pytest.mark.parametrize(("ipv6", "grafana"), [(False, False), (True, True)])
def test_rendered_nginx_site_passes_nginx_t(tmp_path: Path, data, environ, ipv6, grafana):
    cfg = settings_for(
        {**data, "domain": "api.example.com", "rate_limit_exempt_cidrs": ["127.0.0.0/8"],
         "grafana": grafana, "grafana_allowed_cidrs": ["203.0.113.0/24"]},
        {"web", "db"},
        environ={**environ, "PRODSTACK_GRAFANA_ADMIN_PASSWORD": "grafana-admin-0123456789"},
    )  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=api.example.com", "-keyout", tmp_path / "key.pem",
         "-out", tmp_path / "cert.pem"],
        check=True, capture_output=True,
    )  # fmt: skip
    upstream = tmp_path / "upstream-servers.conf"
    upstream.write_text("server 127.0.0.1:8001 max_fails=3 fail_timeout=30s;\n")
    site = tmp_path / "prodstack.conf"
    site.write_text(
        render(
            "nginx-site.j2.conf",
            cfg,
            cert=str(tmp_path / "cert.pem"),
            key=str(tmp_path / "key.pem"),
            webroot=str(tmp_path),
            upstream_servers=str(upstream),
            ipv6=ipv6,
        )
    )
    # The same http{} context Debian's nginx.conf gives sites-enabled/ (gzip is on there).
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  gzip on;\n  access_log off;\n  include {site};\n}}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    text = site.read_text()
    for directive in (
        "least_conn;",
        "limit_req_zone $prodstack_limit_key zone=prodstack_api:10m rate=10r/s;",
        "limit_req zone=prodstack_api burst=20 nodelay;",
        "limit_req_status 429;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "server_tokens off;",
        "return 301 https://$host$request_uri;",
        "client_max_body_size 1m;",
        "access_log off;",
        'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;',
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header Upgrade $http_upgrade;",
    ):
        assert directive in text


def _sshd_options(text: str) -> dict[str, str]:
    lines = (line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#"))
    options: dict[str, str] = {}
    for keyword, value in lines:
        options.setdefault(keyword.lower(), value)  # sshd: the first value wins
    return options


def test_sshd_offers_only_modern_algorithms(data, environ):
    """Mozilla's modern OpenSSH guideline and dev-sec's ssh-baseline: no weak MAC, key
    exchange, cipher or host key algorithm; verbose logging; no password login."""
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    sshd = _sshd_options(render("sshd.j2.conf", cfg))
    macs = sshd["macs"].split(",")
    kex = sshd["kexalgorithms"].split(",")
    ciphers = sshd["ciphers"].split(",")
    assert macs and all(m.endswith("-etm@openssh.com") for m in macs)
    assert not [m for m in macs if "sha1" in m or "md5" in m or "umac-64" in m]
    assert not [k for k in kex if "group14" in k or "group1-" in k or "sha1" in k]
    assert not [k for k in kex if "nistp" in k]
    assert not [c for c in ciphers if "cbc" in c or "3des" in c or "arcfour" in c]
    assert "ssh-rsa" not in sshd["hostkeyalgorithms"].split(",")
    assert sshd["loglevel"] == "VERBOSE"
    assert sshd["allowgroups"] == f"{SSH_GROUP} root"  # root: until the deploy user takes over
    assert sshd["permitrootlogin"] == "prohibit-password"
    assert sshd["passwordauthentication"] == "no"


def test_sshd_lets_root_out_once_root_login_is_no(data, environ):
    cfg = settings_for({**data, "ssh_user": "deploy"}, {"web", "db"}, environ=environ)
    sshd = _sshd_options(render("sshd.j2.conf", cfg))
    assert sshd["permitrootlogin"] == "no"
    assert sshd["allowgroups"] == SSH_GROUP


def test_fail2ban_watches_the_ssh_port(data, environ):
    """fail2ban's sshd jail watches the configured SSH port, not a fixed 22."""
    cfg = settings_for({**data, "ssh_port": 2222}, {"web", "db"}, environ=environ)
    jail = render("fail2ban.j2.local", cfg).split("[sshd]", 1)[1]
    assert "port = 2222" in jail.splitlines()


def test_sshd_and_fail2ban_take_on_the_next_ssh_port_beside_the_current_one(data, environ):
    moving = settings_for({**data, "ssh_next_port": 2222}, {"web", "db"}, environ=environ)
    ports = [line for line in render("sshd.j2.conf", moving).splitlines()
             if line.startswith("Port ")]  # fmt: skip
    assert ports == ["Port 22", "Port 2222"]  # the port connected on first, always kept
    jail = render("fail2ban.j2.local", moving).split("[sshd]", 1)[1]
    assert "port = 22,2222" in jail.splitlines()
    moved = settings_for({**data, "ssh_port": 2222}, {"web", "db"}, environ=environ)
    assert [line for line in render("sshd.j2.conf", moved).splitlines()
            if line.startswith("Port ")] == ["Port 2222"]  # fmt: skip


def test_aide_leaves_the_services_data_out_and_nothing_else(data, environ):
    """Each excluded path is a whole directory (the name and what is under it, not a
    sibling that shares its prefix), and /etc, /usr and the stack's config stay in."""
    import re

    cfg = settings_for(data, {"web", "db"}, environ=environ)
    rules = [line[1:] for line in render("aide-prodstack.j2.conf", cfg).splitlines()
             if line.startswith("!")]  # fmt: skip
    assert len(rules) == len(AIDE_EXCLUDED)

    def excluded(path: str) -> bool:
        return any(re.match(rule, path) for rule in rules)

    for path in ("/var/lib/docker", "/var/lib/docker/overlay2/x", "/var/lib/postgresql/15/main",
                 "/var/lib/prodstack/releases.json"):  # fmt: skip
        assert excluded(path), path
    for path in ("/etc/passwd", "/usr/bin/sudo", "/etc/prodstack/app.env",
                 "/var/lib/dockerfile", "/usr/local/sbin/prodstack-release"):  # fmt: skip
        assert not excluded(path), path


def test_the_first_aide_database_is_built_once_at_idle_priority(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    unit = render("prodstack-aide-init.j2.service", cfg).splitlines()
    assert f"ConditionPathExists=!{AIDE_DATABASE}" in unit
    assert {"Nice=19", "IOSchedulingClass=idle", "Type=oneshot"} <= set(unit)


def test_passwords_need_14_characters_of_4_classes_root_included(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    lines = set(render("pwquality.j2.conf", cfg).splitlines())
    assert {"minlen = 14", "minclass = 4", "enforce_for_root"} <= lines


def test_sshd_warns_before_login_and_sends_no_spoofable_keepalives(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    sshd = _sshd_options(render("sshd.j2.conf", cfg))
    assert sshd["banner"] == "/etc/issue.net" and sshd["tcpkeepalive"] == "no"
    assert int(sshd["clientaliveinterval"]) > 0  # what finds a dead peer instead
    banner = render("issue.j2.txt", cfg)
    assert "Authorised access only" in banner and "Debian" not in banner


def test_usb_and_firewire_storage_never_load(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    lines = render("modprobe-blacklist.j2.conf", cfg).splitlines()
    for module in ("usb-storage", "firewire-core", "firewire-ohci"):
        assert f"install {module} /bin/false" in lines and f"blacklist {module}" in lines


def test_db_only_host_opens_neither_80_nor_443(data, environ):
    """A db host serves SSH, and PostgreSQL/Redis to the web hosts only."""
    from tasks.firewall import wanted_rules

    override, groups = PROFILES["db-host"]
    rules = [line for _, line in wanted_rules(settings_for({**data, **override}, groups,
                                                           environ=environ))]  # fmt: skip
    assert rules[0] == "22/tcp ALLOW IN Anywhere"
    assert not [r for r in rules if r.startswith(("80/", "443/"))]
    assert "5432/tcp ALLOW IN 10.0.0.10" in rules  # ufw prints a /32 as the bare address


@pytest.mark.parametrize("strategy", ["rolling", "blue_green"])
def test_release_settings_carry_the_strategy_and_bake(data, environ, strategy):
    cfg = settings_for({**data, "deploy_strategy": strategy, "bake_seconds": 90}, {"web", "db"},
                       environ=environ)  # fmt: skip
    release = json.loads(render("release.j2.json", cfg))
    assert (release["strategy"], release["bake_seconds"]) == (strategy, 90)
    assert release["ca_file"] is None  # one host: no private CA to mount


# --- Redis ACL users, checked against a real redis-server -----------------------------------


def _redis_server(tmp_path: Path, conf_text: str):
    """A redis-server on a free loopback port with the rendered ACL lines (bind, port, dir and
    supervision swapped for the test)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    keep = [line for line in conf_text.splitlines() if line.startswith("user ")]
    (tmp_path / "redis.conf").write_text(
        "\n".join(
            [f"port {port}", "bind 127.0.0.1", f"dir {tmp_path}", 'save ""', "appendonly no", *keep]
        )
        + "\n"  # fmt: skip
    )
    proc = subprocess.Popen(["redis-server", str(tmp_path / "redis.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return proc, port


def _redis_cli(port: int, *args: str, user: str | None = None, password: str | None = None):
    env = {"REDISCLI_AUTH": password} if password else {}
    command = ["redis-cli", "-p", str(port), "--no-auth-warning"]
    if user:
        command += ["--user", user]
    out = subprocess.run([*command, *args], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", **env})  # fmt: skip
    return (out.stdout + out.stderr).strip()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_acl_users_do_only_what_they_must(tmp_path: Path, data, environ):
    import time

    from tasks.config import redis_password_hash
    from tasks.redis import transition_users

    cfg = settings_for(data, {"web", "db"}, environ=environ)
    conf = render("redis.j2.conf", cfg)
    assert cfg.secrets["REDIS_PASSWORD"] not in conf  # hashes only
    assert "requirepass" not in conf
    app, health = cfg.secrets["REDIS_PASSWORD"], cfg.redis_health_password
    assert app not in health
    # A rotation from an old password: old and new both accepted while replicas switch.
    old = "old-redis-password-0123456789"
    current = {"prodstack": [redis_password_hash(old)], "default": [redis_password_hash(old)]}
    rotation = render("redis.j2.conf", cfg, users=transition_users(cfg, current))
    assert transition_users(cfg, {k: v for k, v in wanted_users(cfg).items()}) is None
    for text, old_ok in ((conf, False), (rotation, True)):
        directory = tmp_path / ("rotation" if old_ok else "final")
        directory.mkdir()
        proc, port = _redis_server(directory, text)
        try:
            deadline = time.monotonic() + 10
            while "NOAUTH" not in _redis_cli(port, "ping") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "NOAUTH" in _redis_cli(port, "ping")  # the default user is off
            assert _redis_cli(port, "set", "k", "v", user="prodstack", password=app) == "OK"
            assert _redis_cli(port, "get", "k", user="prodstack", password=app) == "v"
            for dangerous in (["config", "get", "dir"], ["flushall"], ["keys", "*"],
                              ["acl", "list"], ["shutdown"]):  # fmt: skip
                assert "NOPERM" in _redis_cli(port, *dangerous, user="prodstack", password=app)
            assert _redis_cli(port, "ping", user="healthcheck", password=health) == "PONG"
            for command in (["get", "k"], ["info"], ["config", "get", "dir"], ["flushall"]):
                assert "NOPERM" in _redis_cli(port, *command, user="healthcheck",
                                              password=health), command  # fmt: skip
            # The exporter's user: server statistics, nothing else.
            monitor = {"user": cfg.redis_monitor_user, "password": cfg.redis_monitor_password}
            assert "redis_version:" in _redis_cli(port, "info", "server", **monitor)
            for command in (["get", "k"], ["config", "get", "dir"], ["flushall"], ["keys", "*"],
                            ["acl", "list"]):  # fmt: skip
                assert "NOPERM" in _redis_cli(port, *command, **monitor), command
            old_reply = _redis_cli(port, "get", "k", user="prodstack", password=old)
            assert (old_reply == "v") is old_ok, old_reply
            legacy = _redis_cli(port, "get", "k", password=old)  # old replicas: no user name
            assert (legacy == "v") is old_ok, legacy
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_the_move_from_requirepass_keeps_old_clients_working_until_the_end(data, environ):
    """Moving off `requirepass` is seamless: a host still on it (and the exporter's plain
    `>password`) is read back as hashes; the first redis.conf accepts the old password as
    the default user's, the last one has `default` off again."""
    from tasks.config import redis_password_hash
    from tasks.facts import RedisAuth
    from tasks.redis import transition_users

    cfg = settings_for(data, {"web", "db"}, environ=environ)
    before = ['requirepass "old-redis-password-0123456789"',
              f"user prodstack-monitor on >{cfg.redis_monitor_password} resetkeys -@all +info"]
    current = RedisAuth().process(before)
    old = redis_password_hash("old-redis-password-0123456789")
    assert current == {"default": [old],
                       "prodstack-monitor": [redis_password_hash(cfg.redis_monitor_password)]}
    during = transition_users(cfg, current)
    assert during["default"] == [old]
    assert during[cfg.redis_monitor_user] == wanted_users(cfg)[cfg.redis_monitor_user]
    first = render("redis.j2.conf", cfg, users=during)
    assert f"user default on #{old} ~* &* +@all" in first.splitlines()
    # What the deploy reads back after that first step still needs the last one ...
    assert transition_users(cfg, RedisAuth().process(first.splitlines())) is not None
    # ... and once it wrote the final file, nothing is left to do.
    final = render("redis.j2.conf", cfg)
    assert transition_users(cfg, RedisAuth().process(final.splitlines())) is None
    assert "user default off resetpass -@all" in final.splitlines()


def test_app_and_health_check_use_their_redis_users(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    assert cfg.redis_url.startswith("redis://prodstack:")
    env = render("healthcheck.j2.env", cfg)
    assert cfg.secrets["REDIS_PASSWORD"] not in env
    assert f"REDISCLI_AUTH={cfg.redis_health_password}" in env
    assert "--user healthcheck" in render("prodstack-healthcheck.j2.sh", cfg)
    sysctl = render("sysctl.j2.conf", cfg)
    assert "vm.overcommit_memory = 1" in sysctl.splitlines()


# --- The loopback guard: Docker's published ports are not reachable from a neighbour --------


def test_loopback_guard_drops_loopback_traffic_from_other_interfaces(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    unit = render("prodstack-loopback-guard.j2.service", cfg)
    assert "After=docker.service ufw.service" in unit
    assert "-t raw -I PREROUTING ! -i lo -d 127.0.0.0/8 -j DROP" in unit
    assert "! -i lo -d ::1/128 -j DROP" in unit


def test_guard_lets_the_hosts_own_traffic_reach_the_container_subnet(data, environ):
    """Each rule goes in with -I (first): replay the ExecStart lines to get the chain, where
    the host's own packets to the bridge's gateway (they arrive on lo) must be accepted
    before the drop of everything else addressed to the container subnet."""
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    unit = render("prodstack-loopback-guard.j2.service", cfg)
    chain: list[str] = []
    for line in unit.splitlines():
        if line.startswith("ExecStart=") and " iptables " in line:
            chain.insert(0, line.split(" -I PREROUTING ", 1)[1].rstrip("'"))
    subnet = cfg.docker_subnet
    first = next(rule for rule in chain if f"-d {subnet}" in rule)
    assert first == f"-i lo -d {subnet} -j ACCEPT"
    assert f"! -i {cfg.docker_bridge} -d {subnet} -j DROP" in chain
    assert f"-i {cfg.docker_bridge} -d 169.254.0.0/16 -j DROP" in chain


# --- Kernel settings -------------------------------------------------------------------------


def _sysctl(cfg) -> dict[str, str]:
    lines = render("sysctl.j2.conf", cfg).splitlines()
    return dict(line.split(" = ", 1) for line in lines if " = " in line and line[0] != "#")


def test_sysctl_has_the_dev_sec_set(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    sysctl = _sysctl(cfg)
    for key, value in {
        "kernel.kexec_load_disabled": "1", "vm.mmap_rnd_bits": "32",
        "net.ipv6.conf.all.accept_ra": "0", "net.ipv6.conf.default.accept_ra": "0",
        "kernel.unprivileged_bpf_disabled": "1", "fs.protected_fifos": "2",
        "fs.protected_regular": "2", "fs.suid_dumpable": "0", "kernel.yama.ptrace_scope": "1",
        "net.ipv4.tcp_syncookies": "1", "kernel.core_pattern": "|/bin/false",
    }.items():  # fmt: skip
        assert sysctl.get(key) == value, key


def test_core_dumps_off_and_legacy_protocols_never_load(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    assert "*    hard    core    0" in render("limits-core.j2.conf", cfg).splitlines()
    assert "Storage=none" in render("coredump.j2.conf", cfg).splitlines()
    blacklist = render("modprobe-blacklist.j2.conf", cfg).splitlines()
    for module in ("dccp", "sctp", "rds", "tipc"):
        assert f"install {module} /bin/false" in blacklist


# --- systemd sandboxing ----------------------------------------------------------------------


def _unit_options(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")


def test_health_check_unit_is_sandboxed(data, environ):
    """Its own user (not DynamicUser: it writes a metric into the textfile directory), no
    capabilities, a read-only system, and nothing to read below /etc/prodstack."""
    for override, groups in PROFILES.values():
        cfg = settings_for({**data, **override}, groups, environ=environ)
        text = render("prodstack-healthcheck.j2.service", cfg)
        unit = _unit_options(text)
        for key, value in {"User": HEALTH_USER, "NoNewPrivileges": "yes",
                           "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
                           "CapabilityBoundingSet": "", "ProtectProc": "invisible",
                           "RestrictSUIDSGID": "yes"}.items():  # fmt: skip
            assert unit.get(key) == value, (key, groups)
        assert "DynamicUser" not in unit
        writable = unit.get("ReadWritePaths", "").split()
        # Every host writes its pending-reboot metric there, a web host its certificate's expiry.
        assert writable == ["/var/lib/prometheus/node-exporter"]
        # Nothing it reads is below /etc/prodstack (root's 0750), out of its user's reach.
        script = render("prodstack-healthcheck.j2.sh", cfg,
                        ca_file="/etc/prometheus/prodstack-ca.crt")  # fmt: skip
        assert "/etc/prodstack" not in script.replace("/etc/prodstack/tls/fullchain.pem", "")
        if cfg.is_web:
            assert "openssl s_client -connect 127.0.0.1:443" in script


def test_backup_units_get_the_sandbox_drop_in(data, environ):
    from tasks.pgbackrest import OFFSITE_UNITS, SANDBOXED, UNITS

    # Every backup and drill service is covered: by name, or by the prefix drop-in.
    services = [u for u in UNITS + OFFSITE_UNITS if u.endswith(".service")]
    assert services
    for unit in services:
        assert any(unit == d or (d.endswith("-.service") and unit.startswith(d[:-len(".service")]))
                   for d in SANDBOXED), unit  # fmt: skip
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    for dropin, units in SANDBOXED.items():
        drill = dropin.startswith("prodstack-restore-drill")
        text = render("backup-sandbox.j2.conf", cfg, units=units, drill=drill)
        options = _unit_options(text)
        assert options["NoNewPrivileges"] == "yes" and options["ProtectSystem"] == "strict"
        assert options["PrivateTmp"] == "yes" and options["ProtectHome"] == "yes"
        # pgBackRest's repository, log and spool, the data directory (and the drill's
        # scratch cluster under it), the backup points and the textfile metrics.
        assert set(options["ReadWritePaths"].split()) >= {
            "/var/lib/pgbackrest", "/var/log/pgbackrest", "/var/spool/pgbackrest",
            "/var/lib/postgresql", "/var/lib/prodstack/backup-points",
            "/var/lib/prometheus/node-exporter",
        }  # fmt: skip
        caps = set(options["CapabilityBoundingSet"].split())
        assert "CAP_SYS_ADMIN" not in caps and "CAP_NET_ADMIN" not in caps
    # pgBackRest's locks are outside the units' private /tmp, so every process sees them.
    assert "lock-path=/var/spool/pgbackrest/lock" in render(
        "pgbackrest.j2.conf", cfg).splitlines()  # fmt: skip
    # OnFailure and the time limit stay in the units themselves.
    for unit in services:
        text = render(unit.replace(".", ".j2.", 1), cfg)
        assert "OnFailure=prodstack-alert@%n.service" in text.splitlines(), unit
        assert any(line.startswith("TimeoutStartSec=") for line in text.splitlines()), unit


# --- Hostile values quoted, secrets uploaded privately, logs bounded, start order ---------


def test_letsencrypt_email_is_quoted(data, environ):
    import shlex

    from tasks.nginx import certbot_commands

    email = "ops+$(reboot)@example.com"
    cfg = settings_for({**data, "domain": "api.example.com", "letsencrypt_email": email},
                       {"web", "db"}, environ=environ)  # fmt: skip
    words = shlex.split(certbot_commands(cfg)[0])
    assert words[words.index("-m") + 1] == email


def test_files_holding_secrets_are_uploaded_through_the_0700_directory(data, environ):
    """Every template whose output holds a secret is marked secret=True (tasks/*.py), with
    every optional secret set (SMTP, the webhook, Grafana's admin)."""
    import ast

    optional = {"PRODSTACK_ALERT_SMTP_PASSWORD": "smtp-password-0123456789",
                "PRODSTACK_ALERT_WEBHOOK_URL": "https://hooks.example.com/T0/B0/tok3n",
                "PRODSTACK_GRAFANA_ADMIN_PASSWORD": "grafana-admin-0123456789"}  # fmt: skip
    cfg = with_login(settings_for(
        {**data, "backup_s3_bucket": "prodstack-backups",
         "backup_s3_endpoint_url": "https://127.0.0.1:1", "grafana": True,
         "alert_email": "ops@example.com", "alert_smarthost": "smtp.example.com:587",
         "alert_smarthost_user": "ops"},
        {"web", "db"},
        environ={**environ, **optional},
    ))  # fmt: skip
    assert set(optional.values()) <= set(cfg.secrets.values()) | {cfg.alert_webhook_url}
    marked = set()
    for path in (TEMPLATES.parent / "tasks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "template":
                kw = {k.arg: k.value for k in node.keywords}
                if isinstance(kw.get("src"), ast.Constant) and isinstance(
                    kw.get("secret"), ast.Constant
                ):
                    marked.add(kw["src"].value)
    secrets = [*cfg.secrets.values(), cfg.redis_monitor_password, cfg.alert_webhook_url]
    holding = set()
    for name in TEMPLATE_NAMES:
        try:
            text = render(name, cfg)
        except jinja2.UndefinedError:
            continue  # needs another profile's settings (rendered by the tests above)
        if any(secret in text for secret in secrets):
            holding.add(name)
    assert holding, "no template holds a secret?"
    assert holding <= marked, holding - marked


def test_nginx_logs_rotate_by_size_too(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    assert "    maxsize 100M" in render("logrotate-nginx.j2.conf", cfg).splitlines()


def test_db_only_host_starts_its_services_after_the_network_is_online(data, environ):
    override, groups = PROFILES["db-host"]
    cfg = settings_for({**data, **override}, groups, environ=environ)
    dropin = render("after-docker.j2.conf", cfg).splitlines()
    assert "After=network-online.target" in dropin and "Wants=network-online.target" in dropin
    assert "After=docker.service" not in dropin
    assert _sysctl(cfg)["net.ipv4.ip_nonlocal_bind"] == "1"
    assert _sysctl(cfg)["net.ipv4.ip_forward"] == "0"


# --- Containers ----------------------------------------------------------------------------


def test_audit_rules_end_locked_until_reboot(data, environ):
    """`-e 2` last: root cannot remove the rules without a reboot. (The test host is a
    container, where the kernel's audit subsystem is not ours to start.)"""
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    rules = [x for x in render("audit.j2.rules", cfg).splitlines() if x and x[0] != "#"]
    assert rules[-1] == "-e 2" and rules.count("-e 2") == 1


def test_logrotate_is_timed_hourly_so_size_limits_hold_within_the_hour(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    timer = render("logrotate-hourly.j2.conf", cfg).splitlines()
    # An empty OnCalendar= first: a drop-in otherwise adds to the daily calendar.
    assert timer[timer.index("OnCalendar=") + 1] == "OnCalendar=hourly"


def test_private_keys_are_uploaded_through_the_0700_directory():
    """A private key goes up with put_secret (tasks/templates.py), never a bare files.put."""
    import ast

    bare = []
    for path in (TEMPLATES.parent / "tasks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "put"):  # fmt: skip
                name = next((k.value for k in node.keywords if k.arg == "name"), None)
                if name is not None and "key" in ast.unparse(name).lower():
                    bare.append(f"{path.name}:{node.lineno}")
    assert bare == []
