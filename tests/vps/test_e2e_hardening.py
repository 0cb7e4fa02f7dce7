"""End to end, the hardening of issue 10 on the shared test host (after test_e2e.py).

Checked on the real host: the role password never reached a command line or the journal,
sshd runs the staged-and-checked configuration with modern algorithms only, and a broken
candidate never replaces the live file. Last, the two-step first deploy on a non-default
SSH port: the host is switched to the deploy user on port 2222 (root refused, ufw open on
2222 only, fail2ban watching it, a second run changing nothing), then put back on root and
port 22 for the files after this one.
"""

from __future__ import annotations

import socket
import time

import paramiko
import pytest

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
    """Finding 4: postgres.role gets a SCRAM verifier; sudo journals every command line."""
    password = stack.secrets["POSTGRES_PASSWORD"]
    journal = stack.host.run("journalctl --no-pager -o cat").stdout
    assert "COMMAND=" in journal  # sudo's entries are there to search
    assert "SCRAM-SHA-256$" in journal  # the role's password went through sudo ...
    assert password not in journal  # ... as a verifier, never the password
    cmdlines = stack.host.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '").stdout
    assert password not in cmdlines
    # The role still logs in with the password.
    stack.host.run(
        f"PGPASSWORD={password} psql -h 127.0.0.1 -U prodstack -d prodstack -Atc 'select 1'"
    )


def test_sshd_runs_modern_algorithms_verbose_logging_and_allow_groups(stack):
    """Finding 8, as sshd itself resolves its configuration."""
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
    """Finding 8: the move into sshd_config.d happens only after `sshd -t` accepts it."""
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


# --- Last: the deploy user on a non-default SSH port, then back ---------------------------


def test_deploy_user_on_port_2222_locks_nobody_out(stack):
    """Findings 1 and 8: a firewall enabled on a fresh host opens the port pyinfra uses, and
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
    # fail2ban counted the refused login on 2222; forgive it, the test logs in again.
    failed = stack.host.run("fail2ban-client status sshd").stdout
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
