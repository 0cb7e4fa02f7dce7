"""End to end, the host hardening on the shared test host (after test_e2e.py).

Checked on the real host: the role password never reached a command line or the journal,
sshd runs the staged-and-checked configuration with modern algorithms only, and a broken
candidate never replaces the live file. Last, the two-step first deploy on a non-default
SSH port: the host is switched to the deploy user on port 2222 (root refused, ufw open on
2222 only, fail2ban watching it, a second run changing nothing), then put back on root and
port 22 for the files after this one.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import time

import paramiko
import pytest
from tasks.facts import FirstBuildState

from tests.vps.e2e import grand_total

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(900)]

# The port the provider's image would have sshd on, besides 22 (set out of band, below).
ALT_SSH_PORT = 2222
PORTS_DROPIN = "/etc/ssh/sshd_config.d/05-e2e-ports.conf"


def _reachable(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.5):
            return True
    except OSError:
        return False


def _ssh_login(stack, user: str, port: int) -> bool:
    """Whether `user` logs in with the test key, as an operator would from outside."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(stack.host.address, port=port, username=user,
                       key_filename=str(stack.host.key), look_for_keys=False,
                       allow_agent=False, timeout=10)  # fmt: skip
        return True
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()


def _deployed_cleanly(result) -> tuple[str, str]:
    assert result.returncode == 0, result.stdout[-5000:]
    _, changed, errors = grand_total(result.stdout)
    return changed, errors


def test_role_password_never_on_a_command_line_or_in_the_journal(stack):
    """postgres.role gets a SCRAM verifier; sudo journals every command line."""
    password = stack.secrets["POSTGRES_PASSWORD"]
    journal = stack.host.run("journalctl --no-pager -o cat").stdout
    assert "COMMAND=" in journal  # sudo's entries are there to search
    assert "SCRAM-SHA-256$" in journal  # the role's password went through sudo ...
    assert password not in journal  # ... as a verifier, never the password
    cmdlines = stack.host.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '").stdout
    assert password not in cmdlines
    # The replicas' login role logs in with the password (a fresh host's first is _a).
    stack.host.run(
        f"PGPASSWORD={password} psql -h 127.0.0.1 -U prodstack_a -d prodstack -Atc 'select 1'"
    )


def test_sshd_runs_modern_algorithms_verbose_logging_and_allow_groups(stack):
    """Modern algorithms only, verbose logging, AllowGroups and no root password login, as
    sshd itself resolves its configuration."""
    effective: dict[str, str] = {}
    for line in stack.host.run("sshd -T").stdout.splitlines():
        key, _, value = line.partition(" ")
        # sshd -T prints one line per AllowGroups entry.
        effective[key] = (
            f"{effective[key]} {value}" if key == "allowgroups" and key in effective else value
        )
    assert effective["loglevel"] == "VERBOSE"
    assert effective["allowgroups"].split() == ["ssh-users", "root"]
    assert effective["permitrootlogin"] == "without-password"  # sshd's name for it
    assert all(m.endswith("-etm@openssh.com") for m in effective["macs"].split(","))
    assert "group14" not in effective["kexalgorithms"]
    assert "nistp" not in effective["kexalgorithms"]
    small = stack.host.run("awk '$1 !~ /^#/ && $5 < 3071' /etc/ssh/moduli | wc -l").stdout
    assert small.strip() == "0"
    staged = stack.host.run("cat /etc/ssh/prodstack-sshd.conf").stdout
    assert stack.host.run("cat /etc/ssh/sshd_config.d/10-prodstack.conf").stdout == staged
    assert "ssh-users" in stack.host.run("id -nG deploy").stdout.split()


def test_a_broken_sshd_candidate_never_replaces_the_live_file(stack):
    """The move into sshd_config.d happens only after `sshd -t` accepts it."""
    from tasks.base import sshd_install_commands

    # A broken MACs line first (for sshd the first value of a keyword wins).
    stack.host.run(
        "mkdir -p /tmp/sshd-check && cp /etc/ssh/sshd_config.d/10-prodstack.conf "
        "/tmp/sshd-check/live.conf && { echo 'MACs hmac-sha1,no-such-mac'; "
        "cat /etc/ssh/prodstack-sshd.conf; } > /tmp/sshd-check/staged.conf"
    )
    before = stack.host.run("md5sum < /tmp/sshd-check/live.conf").stdout
    script = " && ".join(
        sshd_install_commands("/tmp/sshd-check/staged.conf", "/tmp/sshd-check/live.conf")
    )
    refused = stack.host.run(script, check=False)
    assert refused.returncode != 0
    assert stack.host.run("md5sum < /tmp/sshd-check/live.conf").stdout == before
    # The same commands move a good candidate into place.
    stack.host.run("cp /etc/ssh/prodstack-sshd.conf /tmp/sshd-check/staged.conf && "
                   "echo '# changed' >> /tmp/sshd-check/staged.conf")  # fmt: skip
    stack.host.run(script)
    assert stack.host.run("tail -n 1 /tmp/sshd-check/live.conf").stdout.strip() == "# changed"
    stack.host.run("rm -rf /tmp/sshd-check")


# --- Neighbours, Redis users, containers, sandboxing, OS -----------------------------------


def _dnat_packets(stack, port: int) -> int:
    """Packets Docker's nat rule for this published port has sent on to the replica."""
    rules = stack.host.run("iptables -t nat -L DOCKER -v -n -x").stdout.splitlines()
    (line,) = [r for r in rules if f"dpt:{port} " in r + " " and "DNAT" in r]
    return int(line.split()[0])


def test_a_neighbour_cannot_reach_a_replica_port(stack):
    """moby#45610: a container beside the host on the same bridge routes
    127.0.0.1 through the host's bridge address and sends to a replica's published port.
    Docker 20.10 forwards such packets to the replica (its nat rule counts them); with the
    loopback guard they are dropped before Docker's rules see them."""
    from tests.vps.host import host_image

    name = f"{stack.host.name}-neighbour"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--cap-add", "NET_ADMIN",
         "--sysctl", "net.ipv4.conf.all.route_localnet=1",
         "--entrypoint", "sleep", host_image(), "120"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        status = stack.host.run("prodstack-release status --json").stdout
        port = json.loads(status)["replicas"][0]["port"]
        probe = (
            "ip route del local 127.0.0.0/8 dev lo table local; "
            "ip route del local 127.0.0.1 dev lo table local; "
            f"ip route replace 127.0.0.1/32 via {stack.host.address} dev eth0; "
            f"curl -s -o /dev/null --max-time 2 http://127.0.0.1:{port}/health/live; true"
        )

        def forwarded() -> int:
            before = _dnat_packets(stack, port)
            subprocess.run(["docker", "exec", name, "sh", "-c", probe], capture_output=True)
            return _dnat_packets(stack, port) - before

        # Without the guard the neighbour's packets reach the replica: the probe works.
        stack.host.run("systemctl stop prodstack-loopback-guard.service")
        try:
            assert forwarded() > 0
        finally:
            stack.host.run("systemctl start prodstack-loopback-guard.service")
        assert forwarded() == 0
        dropped = stack.host.run("iptables -t raw -L PREROUTING -v -n -x").stdout
        assert re.search(r"^\s*[1-9]\d*\s+\d+\s+DROP\b.*127\.0\.0\.0/8", dropped, re.M)
        unit = stack.host.run("systemctl show -p After prodstack-loopback-guard.service").stdout
        assert "docker.service" in unit

        # The same neighbour, routing the replica's own container address through the host:
        # Docker 20.10's filter rule for the published port accepts it from any interface.
        replica = json.loads(status)["replicas"][0]["name"]
        address = stack.host.run(
            "docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "
            + replica
        ).stdout.strip()
        direct = (
            f"ip route replace {address}/32 via {stack.host.address} dev eth0; "
            f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 http://{address}:8000/health/live"
        )

        def reached() -> str:
            return subprocess.run(["docker", "exec", name, "sh", "-c", direct],
                                  capture_output=True, text=True).stdout  # fmt: skip

        stack.host.run("systemctl stop prodstack-loopback-guard.service")
        try:
            assert reached() == "200"
        finally:
            stack.host.run("systemctl start prodstack-loopback-guard.service")
        assert reached() == "000"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_containers_cannot_reach_the_link_local_metadata_address(stack):
    """A container cannot send to 169.254.0.0/16, where providers serve instance metadata
    and credentials. The stand-in: the metadata address on the host's loopback, where
    nginx's port 80 answers it (a real provider's is a hop away; the raw-table rule drops
    both before routing)."""
    address = "169.254.169.254"
    stack.host.run(f"ip addr add {address}/32 dev lo 2>/dev/null || true")
    try:
        status = json.loads(stack.host.run("prodstack-release status --json").stdout)
        replica = status["replicas"][0]["name"]
        # The replica's image has Python and no curl: one TCP connection from inside it.
        connect = (f"docker exec {replica} python -c \"import socket; "
                   f"socket.create_connection(('{address}', 80), timeout=2)\"")  # fmt: skip
        stack.host.run("systemctl stop prodstack-loopback-guard.service")
        try:
            assert stack.host.run(connect, check=False).returncode == 0
        finally:
            stack.host.run("systemctl start prodstack-loopback-guard.service")
        assert stack.host.run(connect, check=False).returncode != 0
    finally:
        stack.host.run(f"ip addr del {address}/32 dev lo", check=False)

def test_redis_users_on_the_host(stack):
    """No default user, the app's without admin commands, a ping-only health user, the
    exporter's limited to statistics; redis.conf holds no password."""
    for address in ("127.0.0.1", "172.30.232.1"):
        assert "NOAUTH" in stack.host.run(f"redis-cli -h {address} ping", check=False).stdout
    app = (f"REDISCLI_AUTH={stack.secrets['REDIS_PASSWORD']} redis-cli -h 172.30.232.1 "
           "--user prodstack --no-auth-warning")  # fmt: skip
    assert stack.host.run(f"{app} set hardening-check 1").stdout.strip() == "OK"
    assert "NOPERM" in stack.host.run(f"{app} config get dir", check=False).stdout
    assert "NOPERM" in stack.host.run(f"{app} flushall", check=False).stdout
    conf = stack.host.run("cat /etc/redis/redis.conf").stdout
    assert stack.secrets["REDIS_PASSWORD"] not in conf and "requirepass" not in conf
    assert "user default off" in conf
    health = stack.host.run("grep -oP '^REDISCLI_AUTH=\\K.*' /etc/prodstack/healthcheck.env").stdout
    ping = "redis-cli -h 127.0.0.1 --user healthcheck --no-auth-warning"
    assert stack.host.run(f"REDISCLI_AUTH={health.strip()} {ping} ping").stdout.strip() == "PONG"
    assert "NOPERM" in stack.host.run(f"REDISCLI_AUTH={health.strip()} {ping} get hardening-check",
                                      check=False).stdout  # fmt: skip
    assert "appendonlydir" in stack.host.run("ls /var/lib/redis").stdout  # AOF is on


def test_replicas_run_read_only_and_migrate_is_confined_and_bounded(stack, images):
    """Replicas run with a read-only root, no capabilities and a memory limit; a migration
    stuck on a lock runs confined the same way, is stopped after migrate_timeout_seconds
    and leaves no container behind."""
    names = stack.host.run(
        "docker ps --filter label=prodstack.role=api --format '{{.Names}}'"
    ).stdout.split()
    assert names
    for name in names:
        info = json.loads(stack.host.run(f"docker inspect {name}").stdout)[0]["HostConfig"]
        assert info["ReadonlyRootfs"] is True
        assert "/tmp" in info["Tmpfs"]
        assert info["CapDrop"] == ["ALL"] and info["Memory"] > 0
    # A migration stuck on a lock: stopped after migrate_timeout_seconds, no container left.
    dockerfile = (f"FROM {images['v1']}\n"
                  'ENTRYPOINT ["sh", "-c", "sleep 120", "--"]\n')  # fmt: skip
    stack.host.run("docker build -q -t prodstack-api:stuck -", input=dockerfile, timeout=120)
    # The installed archive, imported as the host's python3 runs it.
    script = (
        "import json, sys; sys.path.insert(0, '/usr/local/lib/prodstack/prodstack-host.pyz'); "
        "from prodstack.host import release as m; "
        "cfg = m.load_config(); cfg['migrate_timeout_seconds'] = 8; "
        "print(json.dumps(m.Release(m.Host()).migrate(cfg, 'prodstack-api:stuck')))"
    )
    started = time.monotonic()
    proc = subprocess.Popen(["docker", "exec", stack.host.name, "python3", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    host_config = None
    while time.monotonic() - started < 7 and host_config is None:
        out = stack.host.run("docker inspect prodstack-api-migrate 2>/dev/null", check=False)
        if out.returncode == 0:
            host_config = json.loads(out.stdout)[0]["HostConfig"]
        time.sleep(0.5)
    stdout, stderr = proc.communicate(timeout=60)
    assert stdout.strip().splitlines()[-1] == "false", stdout + stderr
    assert "migrate_timeout_seconds" in stdout
    assert host_config is not None
    assert host_config["ReadonlyRootfs"] is True and host_config["CapDrop"] == ["ALL"]
    assert host_config["Memory"] > 0
    assert stack.host.run("docker ps -aq --filter name=prodstack-api-migrate").stdout.strip() == ""
    stack.host.run("docker rmi prodstack-api:stuck")


def _exposure(stack, unit: str) -> float:
    out = stack.host.run(f"systemd-analyze security {unit} --no-pager").stdout
    return float(out.strip().splitlines()[-1].split(":")[1].split()[0])


def _ran_cleanly(stack, unit: str) -> None:
    """A oneshot unit exists, ran, and its main process exited 0 (not just `Result`)."""
    stack.host.run(f"systemctl start {unit}", timeout=180)
    status = stack.host.run(f"systemctl show -p ExecMainStatus,LoadState,Result {unit}").stdout
    assert {"ExecMainStatus=0", "LoadState=loaded", "Result=success"} <= set(status.split()), (
        status
    )


def test_health_check_and_backup_units_are_sandboxed(stack):
    """Each unit's systemd exposure score (0 best, 10 worst) stays at or below the recorded
    one, and the units still run sandboxed: the health check as its own user (its metric
    written as that user), a differential backup under the backup units' drop-in."""
    scores = {unit: _exposure(stack, unit) for unit in EXPOSURE}
    print(f"systemd-analyze security: {scores}")
    for unit, recorded in EXPOSURE.items():
        assert scores[unit] <= recorded, (unit, scores[unit], recorded)
    for unit in ("prodstack-backup-diff.service", "prodstack-restore-drill.service"):
        dropins = stack.host.run(f"systemctl show -p DropInPaths {unit}").stdout
        assert "prodstack-sandbox.conf" in dropins, (unit, dropins)
    _ran_cleanly(stack, "prodstack-healthcheck.service")
    metric = "/var/lib/prometheus/node-exporter/prodstack_tls.prom"
    owner = stack.host.run(f"stat -c %U {metric}").stdout.strip()
    assert owner == "prodstack-health"
    assert "prodstack_tls_certificate_expiry_timestamp_seconds" in stack.host.run(
        f"cat {metric}").stdout  # fmt: skip
    _ran_cleanly(stack, "prodstack-backup-diff.service")


def test_os_hardening_applies_where_a_container_allows(stack):
    """OS hardening on the container host: what applies is checked; what belongs to the
    machine outside (sysctl writes, kernel modules, the audit subsystem) is checked as written."""
    mounts = stack.host.run(
        'awk \'$2 == "/proc" || $2 == "/dev/shm" {print $2, $4}\' /proc/mounts'
    ).stdout
    assert "hidepid=invisible" in mounts
    # The deploy user sees only its own processes.
    seen = stack.host.run("runuser -u deploy -- ps -e --no-headers | wc -l").stdout
    assert int(seen) < 5
    for path in ("/etc/security/limits.d/10-prodstack-core.conf",
                 "/etc/modprobe.d/prodstack-blacklist.conf", "/etc/audit/rules.d/prodstack.rules",
                 "/etc/systemd/coredump.conf.d/prodstack.conf"):  # fmt: skip
        stack.host.run(f"test -s {path}")
    defs = stack.host.run("grep -E '^(UMASK|PASS_MAX_DAYS)' /etc/login.defs").stdout.split()
    assert defs == ["PASS_MAX_DAYS", "365", "UMASK", "027"] or set(defs) >= {"UMASK", "027"}
    assert stack.host.run("grep ^IPT_SYSCTL= /etc/default/ufw").stdout.strip() == "IPT_SYSCTL="
    # Not in a container: sysctl (read-only /proc/sys), auditd (the kernel's audit is not
    # namespaced), modules (the machine's kernel). The unit and files are still in place.
    assert stack.host.run("systemd-detect-virt --container").stdout.strip() == "docker"
    assert stack.host.run("systemctl is-enabled auditd", check=False).stdout.strip() == "disabled"
    sysctl = stack.host.run("cat /etc/sysctl.d/60-prodstack-hardening.conf").stdout
    assert "kernel.kexec_load_disabled = 1" in sysctl


def test_aide_builds_its_database_once_and_finds_a_changed_file(stack):
    """The first database is built in the background after the first deploy (no deploy
    waits for it), Debian's daily timer checks against it, and a check sees a new file in
    /etc while the services' data is left out."""
    deadline = time.monotonic() + 600
    while stack.host.run("test -s /var/lib/aide/aide.db", check=False).returncode:
        assert time.monotonic() < deadline, stack.host.run(
            "systemctl status prodstack-aide-init.service --no-pager; "
            "cat /var/log/aide/aideinit.errors", check=False).stdout  # fmt: skip
        time.sleep(5)
    timer = stack.host.run("systemctl show -p ActiveState,UnitFileState dailyaidecheck.timer")
    assert set(timer.stdout.split()) == {"ActiveState=active", "UnitFileState=enabled"}
    conf = "--config=/etc/aide/aide.conf"
    # --path-check: exit 0 and `[X]` for a path a check covers, 1 and `[ ]` for one left out.
    data = stack.host.run(f"aide {conf} --path-check=d:/var/lib/postgresql/15/main",
                          check=False)  # fmt: skip
    assert data.returncode == 1 and data.stdout.startswith("[ ]"), data.stdout
    assert stack.host.run(f"aide {conf} --path-check=f:/etc/passwd").stdout.startswith("[X]")
    probe = "/etc/prodstack-aide-probe"
    stack.host.run(f"echo probe > {probe}")
    try:
        check = stack.host.run(f"aide {conf} --check --limit='^{probe}'", check=False)
    finally:
        stack.host.run(f"rm -f {probe}")
    # aide's exit code: 1 = new files found, 2 = removed, 4 = changed.
    assert check.returncode & 1, check.stdout[-2000:]
    assert probe in check.stdout


def test_a_background_build_reads_building_while_it_runs_so_no_deploy_restarts_it(stack):
    """tasks/aide.py starts AIDE's first build only when FirstBuildState says neither
    "present" nor "building". On a loaded host the build outlasts a deploy; the next
    deploy must see it running (a transient oneshot stands in for it), not start it again."""
    fact = FirstBuildState()
    unit, path = "prodstack-build-probe.service", "/root/prodstack build probe's 'output'"
    state = lambda: fact.process(  # noqa: E731
        stack.host.run(fact.command(path=path, unit=unit)).stdout.splitlines())
    assert state() == "inactive"
    stack.host.run(f"systemd-run --unit={unit} -p Type=oneshot --no-block sleep 60")
    try:
        assert state() == "building"
        stack.host.run(f"touch {shlex.quote(path)}")
        assert state() == "present"
        stack.host.run(f"rm {shlex.quote(path)}; systemctl kill --signal=KILL {unit}")
        # A build that died is no longer "building": the next deploy starts it again.
        deadline = time.monotonic() + 30
        while state() == "building" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert state() == "failed"
    finally:
        stack.host.run(f"systemctl stop {unit}; systemctl reset-failed {unit}; "
                       f"rm -f {shlex.quote(path)}", check=False)  # fmt: skip
    assert state() == "inactive"


def test_process_accounting_records_each_command(stack):
    stack.host.run("cp /bin/true /root/acctprobe && /root/acctprobe && rm /root/acctprobe")
    assert stack.host.run("systemctl is-enabled acct.service").stdout.strip() == "enabled"
    assert "acctprobe" in stack.host.run("lastcomm --command acctprobe").stdout


def test_a_weak_password_is_refused_for_any_account_root_included(stack):
    """pam_pwquality checks every password set through PAM, as root too."""
    stack.host.run("useradd -M pwprobe")
    shadow = "getent shadow pwprobe | cut -d: -f2"
    try:
        before = stack.host.run(shadow).stdout
        weak = stack.host.run("echo 'pwprobe:Summer2026' | chpasswd", check=False)
        assert weak.returncode != 0, weak
        assert stack.host.run(shadow).stdout == before
        strong = stack.host.run("echo 'pwprobe:Kx9#vLq2!mWz7$Rt' | chpasswd", check=False)
        assert strong.returncode == 0, strong
    finally:
        stack.host.run("userdel pwprobe", check=False)


def test_ssh_warns_before_login_and_usb_and_firewire_storage_never_load(stack):
    effective = {key: value for key, _, value in
                 (line.partition(" ") for line in stack.host.run("sshd -T").stdout.splitlines())}
    assert effective["banner"] == "/etc/issue.net" and effective["tcpkeepalive"] == "no"
    transport = paramiko.Transport((stack.host.address, stack.ssh_port))
    try:
        transport.connect(username="root", pkey=paramiko.Ed25519Key.from_private_key_file(
            str(stack.host.key)))  # fmt: skip
        assert "Authorised access only" in transport.get_banner().decode()
    finally:
        transport.close()
    blacklist = stack.host.run("cat /etc/modprobe.d/prodstack-blacklist.conf").stdout
    for module in ("usb-storage", "firewire-core", "firewire-ohci"):
        assert f"install {module} /bin/false" in blacklist


# --- The baselines, measured (docs/vps.md "Hardening baselines") --------------------------
# Scores recorded from the deployed test host; a change that lowers one fails here. A fresh
# Debian 12 host (the same image, undeployed) scored: lynis 60, ssh-audit 12 algorithms to
# remove plus warnings on the rest, sslscan not applicable (no TLS service).
LYNIS_HARDENING_INDEX = 80
# ssh-audit 2.5.0's one recommendation: it does not know sntrup761x25519 (OpenSSH's default
# post-quantum hybrid since 9.0), kept on purpose; ssh-audit 3 recommends it.
SSH_AUDIT_ACCEPTED = {"sntrup761x25519-sha512@openssh.com"}
# ssh-audit 2.5.0 asks to add diffie-hellman-group14-sha256 (for old clients); refused, as the
# dev-sec baseline does: 2048-bit is below the 3072-bit floor kept elsewhere.
SSH_AUDIT_NOT_ADDED = {"diffie-hellman-group14-sha256"}
# Mozilla's intermediate configuration (TLS 1.2 ciphers; every TLS 1.3 suite is in it).
MOZILLA_INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
}  # fmt: skip
# systemd-analyze security on the test host (docs/vps.md, "The baselines, measured").
# Before the sandboxes each scored 9.6 (UNSAFE).
EXPOSURE = {
    "prodstack-healthcheck.service": 1.1,
    "prodstack-backup-diff.service": 2.6,
    "prodstack-restore-drill.service": 2.6,
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: scripts/setup.sh installs it on the test machine"
    return path


def _fail2ban_read_the_scan(stack, gateway: str) -> None:
    """fail2ban reads the journal a moment behind: wait until it logged the scan's
    connections as ignored (its count of `Ignore ADDRESS` lines stops growing), so none is
    counted once the exemption is gone."""
    def ignored() -> int:
        out = stack.host.run(f"grep -c 'Ignore {gateway} by' /var/log/fail2ban.log",
                             check=False).stdout  # fmt: skip
        return int(out.strip() or 0)

    last, deadline = -1, time.monotonic() + 30
    while time.monotonic() < deadline:
        now = ignored()
        if now and now == last:
            return
        last = now
        time.sleep(2)


def test_ssh_audit_finds_nothing_but_the_recorded_exception(stack):
    # ssh-audit's probing connections look like failed logins to fail2ban: the test machine
    # is exempted in the running jail for the scan only (never in the deployed settings).
    gateway = stack.host.run("ip route show default | awk '{print $3}'").stdout.strip()
    stack.host.run(f"fail2ban-client set sshd addignoreip {gateway}")
    try:
        out = subprocess.run(
            [_tool("ssh-audit"), "-n", "-p", str(stack.ssh_port), stack.host.address],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
    finally:
        _fail2ban_read_the_scan(stack, gateway)
        stack.host.run(f"fail2ban-client set sshd delignoreip {gateway}")
    banned = stack.host.run("fail2ban-client status sshd").stdout.split("Banned IP list:")[-1]
    assert gateway not in banned, banned
    assert "# algorithm recommendations" in out, out[-2000:]
    removals = set(re.findall(r"\(rec\) -(\S+)\s+-- \w+ algorithm to remove", out))
    additions = set(re.findall(r"\(rec\) \+(\S+)\s+-- \w+ algorithm to append", out))
    fails = [line for line in out.splitlines() if "[fail]" in line]
    print(f"ssh-audit: {len(removals)} to remove {sorted(removals)}, {len(fails)} fail lines")
    assert not fails, fails
    assert removals <= SSH_AUDIT_ACCEPTED, removals - SSH_AUDIT_ACCEPTED
    assert additions <= SSH_AUDIT_NOT_ADDED, additions - SSH_AUDIT_NOT_ADDED


def test_tls_scanner_finds_only_mozilla_intermediate(stack):
    out = subprocess.run(
        [_tool("sslscan"), "--no-colour", "--no-heartbleed", f"{stack.host.address}:443"],
        capture_output=True, text=True, timeout=180,
    ).stdout  # fmt: skip
    accepted = re.findall(r"^(?:Preferred|Accepted)\s+(TLSv1\.[0-3]|SSLv[23])\s+\d+ bits\s+(\S+)",
                          out, flags=re.M)  # fmt: skip
    assert accepted, out[-2000:]
    protocols = {p for p, _ in accepted}
    outside = [(p, c) for p, c in accepted
               if p not in ("TLSv1.2", "TLSv1.3")
               or (p == "TLSv1.2" and c not in MOZILLA_INTERMEDIATE_TLS12)]  # fmt: skip
    print(f"sslscan: {len(accepted)} accepted suites, protocols {sorted(protocols)}, "
          f"{len(outside)} outside Mozilla intermediate")  # fmt: skip
    assert protocols == {"TLSv1.2", "TLSv1.3"}
    assert not outside, outside
    for line in ("TLSv1.0   disabled", "TLSv1.1   disabled", "SSLv3     disabled"):
        assert line in out


def test_lynis_hardening_index_holds(stack):
    """lynis inside the host, installed for the audit and removed after it."""
    stack.host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
                   "lynis >/dev/null", timeout=300)  # fmt: skip
    try:
        out = stack.host.run("lynis audit system --quick --no-colors 2>&1", timeout=600).stdout
        report = stack.host.run("cat /var/log/lynis-report.dat").stdout
    finally:
        stack.host.run(
            "DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq lynis >/dev/null; "
            "rm -f /var/log/lynis.log /var/log/lynis-report.dat",
            timeout=300,
        )
    index = int(re.search(r"Hardening index : (\d+)", out).group(1))
    suggestions = [line.split("=", 1)[1] for line in report.splitlines()
                   if line.startswith(("suggestion[]=", "warning[]="))]  # fmt: skip
    print(f"lynis hardening index {index}, {len(suggestions)} suggestions")
    print("\n".join(suggestions))
    assert index >= LYNIS_HARDENING_INDEX


# --- Last: the deploy user on a non-default SSH port, then back ---------------------------


def test_deploy_user_on_port_2222_locks_nobody_out(stack):
    """A firewall enabled on a fresh host opens the port pyinfra uses, and
    the first run as the deploy user turns root login off."""
    # The provider's image: sshd on 22 and 2222, and ufw not yet enabled.
    stack.host.run(
        f"printf 'Port 22\\nPort {ALT_SSH_PORT}\\n' > {PORTS_DROPIN} && systemctl reload ssh "
        "&& ufw --force disable"
    )
    stack.ssh_user, stack.ssh_port = "deploy", ALT_SSH_PORT
    _, errors = _deployed_cleanly(stack.pyinfra())
    assert errors == "-"
    address = stack.host.address
    assert _reachable(address, ALT_SSH_PORT)
    assert not _reachable(address, 22)  # sshd still listens there; ufw closed it
    assert stack.host.run("ss -Htln 'sport = :22'").stdout.strip()
    assert _ssh_login(stack, "deploy", ALT_SSH_PORT)
    assert not _ssh_login(stack, "root", ALT_SSH_PORT)
    # fail2ban counted the refused login on 2222 (it reads the journal a moment later);
    # forgive it, the test logs in again.
    deadline = time.monotonic() + 20
    while "Total failed:\t0" in (failed := stack.host.run("fail2ban-client status sshd").stdout):
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "Currently failed:\t0" not in failed and "Total failed:\t0" not in failed
    stack.host.run("fail2ban-client unban --all")
    actions = [line for line in stack.host.run("fail2ban-client -d").stdout.splitlines()
               if line.startswith("['multi-set', 'sshd', 'action'")]  # fmt: skip
    assert actions and f"['port', '{ALT_SSH_PORT}']" in actions[0]


def test_second_run_as_deploy_user_on_2222_changes_nothing(stack):
    assert _deployed_cleanly(stack.pyinfra()) == ("-", "-")


def test_back_to_root_on_port_22_for_the_next_files(stack):
    # The way back: 22 open again, root login on (keys only), then 2222 closed.
    stack.host.run("ufw allow 22/tcp")
    stack.ssh_port = 22
    result = stack.pyinfra(ssh_permit_root_login="prohibit-password")
    _deployed_cleanly(result)
    stack.host.run(f"rm -f {PORTS_DROPIN} && systemctl reload ssh")
    stack.ssh_user = "root"
    deadline = time.monotonic() + 20  # sshd re-executes itself on reload
    while not _reachable(stack.host.address, 22) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ssh_login(stack, "root", 22)
    assert not _reachable(stack.host.address, ALT_SSH_PORT)
    # Root with the default (auto) resolves to the same configuration: nothing changes.
    assert _deployed_cleanly(stack.pyinfra()) == ("-", "-")


def test_logrotate_runs_hourly(stack):
    shown = stack.host.run("systemctl show -p TimersCalendar logrotate.timer").stdout
    # Hourly in place of the package's daily calendar, not beside it.
    assert "OnCalendar=*-*-* *:00:00" in shown and shown.count("OnCalendar=") == 1


def test_needrestart_restarts_updated_services_unasked_but_holds_the_stacks_own(stack):
    # needrestart's own reading of its configuration (it evaluates conf.d after its file).
    show = ("perl -e 'our %nrconf; our $LOGPREF = q(); do q(/etc/needrestart/needrestart.conf);"
            " print qq($nrconf{restart} $nrconf{kernelhints}\\n);"
            " print qq($_=$nrconf{override_rc}{$_}\\n) for grep { /docker|containerd|postgresql"
            "|redis/ } keys %{$nrconf{override_rc}}'")  # fmt: skip
    lines = stack.host.run(show).stdout.splitlines()
    assert lines[0] == "a 0", lines
    held = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in lines[1:]}
    assert {"(?^:^docker)", "(?^:^containerd)", "(?^:^postgresql)", "(?^:^redis)"} <= set(held)
    assert set(held.values()) == {"0"}
    # And needrestart runs with it: batch mode parses every file without an error.
    assert "NEEDRESTART-VER" in stack.host.run("needrestart -b").stdout


def test_a_pending_reboot_is_a_metric_until_the_reboot(stack):
    textfile = "/var/lib/prometheus/node-exporter/prodstack_reboot.prom"
    health = "systemctl start prodstack-healthcheck.service"
    try:
        stack.host.run(f"touch /run/reboot-required; {health}", check=False)
        assert "prodstack_reboot_required 1" in stack.host.run(f"cat {textfile}").stdout
        assert "prodstack_reboot_required 1" in stack.host.run(
            "curl -fsS http://127.0.0.1:9100/metrics").stdout
    finally:
        stack.host.run(f"rm -f /run/reboot-required; {health}", check=False)
    assert "prodstack_reboot_required 0" in stack.host.run(f"cat {textfile}").stdout


# --- Last: SSH moved to another port in two deploys, and back ------------------------------

NEXT_SSH_PORT = 2022


def _sshd_listens_on(stack) -> set[int]:
    out = stack.host.run("ss -Htlnp | grep '\"sshd\"' || true").stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines()}


def _sshd_ports_configured(stack) -> set[int]:
    return {int(line.split()[1]) for line in stack.host.run("sshd -T").stdout.splitlines()
            if line.startswith("port ")}  # fmt: skip


def _fail2ban_ports(stack) -> str:
    actions = [line for line in stack.host.run("fail2ban-client -d").stdout.splitlines()
               if line.startswith("['multi-set', 'sshd', 'action'")]  # fmt: skip
    return re.search(r"\['port', '([^']*)'\]", actions[0]).group(1)


def _moves(stack, old: int, new: int) -> None:
    """Step one on `old` with ssh_next_port=new, then step two connected on `new`."""
    address = stack.host.address
    assert stack.ssh_port == old and _reachable(address, old)
    assert not _reachable(address, new)
    _, errors = _deployed_cleanly(stack.pyinfra(ssh_next_port=new))
    assert errors == "-"
    # Both open: sshd listens on both (its drop-in was checked and reloaded), ufw lets
    # both in, fail2ban watches both; a login on the new port works before anything closes.
    assert _sshd_ports_configured(stack) == {old, new}
    assert {old, new} <= _sshd_listens_on(stack)
    assert _reachable(address, old) and _reachable(address, new)
    assert _ssh_login(stack, stack.ssh_user, new)
    assert _fail2ban_ports(stack) == f"{old},{new}"

    stack.ssh_port = new
    # The key left at the new port: the same as removing it.
    _, errors = _deployed_cleanly(stack.pyinfra(ssh_next_port=new))
    assert errors == "-"
    assert _sshd_ports_configured(stack) == {new}
    deadline = time.monotonic() + 20  # sshd re-executes itself on reload
    while old in _sshd_listens_on(stack) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert old not in _sshd_listens_on(stack)
    assert not _reachable(address, old)
    assert not re.search(rf"^{old}/tcp", stack.host.run("ufw status").stdout, re.M)
    assert _ssh_login(stack, stack.ssh_user, new)
    assert _fail2ban_ports(stack) == str(new)


def test_ssh_moves_to_another_port_in_two_deploys_and_back(stack):
    """docs/vps.md "SSH port": ssh_next_port opens the next port beside the one pyinfra
    connects on; a deploy connecting on the new one closes the old. Then the same two
    steps back to 22 (a privileged port works as well), for the files after this one."""
    assert stack.ssh_port == 22 and stack.ssh_user == "root"
    try:
        _moves(stack, 22, NEXT_SSH_PORT)
        _moves(stack, NEXT_SSH_PORT, 22)
    finally:
        # Whatever failed above, the next files find the host on 22.
        stack.host.run(f"ufw allow 22/tcp && sed -i '/^Port {NEXT_SSH_PORT}$/d' "
                       "/etc/ssh/sshd_config.d/10-prodstack.conf /etc/ssh/prodstack-sshd.conf "
                       "&& systemctl reload ssh", check=False)  # fmt: skip
        stack.ssh_port = 22
    assert not _reachable(stack.host.address, NEXT_SSH_PORT)
