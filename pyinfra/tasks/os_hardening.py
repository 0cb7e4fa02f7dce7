"""Kernel and filesystem hardening after the dev-sec os-hardening baseline and CIS Debian 12
Level 1: /proc hidepid, /dev/shm options, no core dumps, login.defs policy, auditd, legacy
protocols blacklisted. The sysctl set itself is in base.py (sysctl.j2.conf).

In a container (the end-to-end test host) some of this belongs to the machine outside:
kernel modules and the audit subsystem are not namespaced, so the files are written but
auditd is not started; see docs/vps.md "Hardening baselines" for the exact list.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd

from tasks.config import Settings
from tasks.facts import InContainer, MountOptions
from tasks.templates import template, unit_file

# Members see every process under hidepid=invisible (the services listed below).
PROC_GROUP = "proc"
# Services that read other processes' /proc entries: logind tracks sessions' processes,
# the node exporter reads /proc/1/mounts for its filesystem metrics.
PROC_READERS = ("systemd-logind.service", "prometheus-node-exporter.service")
PROC_OPTIONS = "hidepid=invisible"
SHM_OPTIONS = ("nosuid", "nodev", "noexec")
# Legacy or unused network protocols and filesystems (CIS 1.1.1.x, 3.2.x; dev-sec).
# USB and FireWire storage: a server takes no removable disks (CIS 1.1.1.8 and 1.1.1.9).
BLACKLISTED_MODULES = ("dccp", "sctp", "rds", "tipc", "cramfs", "freevxfs", "jffs2", "hfs",
                       "hfsplus", "udf",
                       "usb-storage", "firewire-core", "firewire-ohci")  # fmt: skip
# The pre-login warning at the console (/etc/issue) and, through sshd's Banner, over SSH
# (/etc/issue.net), in place of Debian's, which names the system's version (CIS 1.7).
BANNERS = ("/etc/issue", "/etc/issue.net")
# /etc/login.defs: umask 027 for new files and homes, password ageing (the accounts log in
# with keys and have no passwords; this holds for any that gets one).
LOGIN_DEFS = {"UMASK": "027", "PASS_MAX_DAYS": "365", "PASS_MIN_DAYS": "1",
              "PASS_WARN_AGE": "14", "SHA_CRYPT_MIN_ROUNDS": "65536",
              "SHA_CRYPT_MAX_ROUNDS": "65536"}  # fmt: skip


@deploy("OS hardening")
def os_hardening(cfg: Settings, packages_op=None) -> None:
    in_container = bool(host.get_fact(InContainer))

    # /proc: other users' processes hidden.
    server.group(name=f"Group {PROC_GROUP} (sees all processes)", group=PROC_GROUP)
    for unit in PROC_READERS:
        unit_file(
            name=f"{unit} sees all processes under hidepid",
            src="proc-hidepid.j2.conf",
            dest=f"/etc/systemd/system/{unit}.d/prodstack-proc.conf",
            label=unit,
            proc_group=PROC_GROUP,
        )
    files.line(
        name="/proc mounted hidepid=invisible (fstab)",
        path="/etc/fstab",
        line=r"^proc\s+/proc\s",
        replace=f"proc /proc proc defaults,{PROC_OPTIONS},gid={PROC_GROUP} 0 0",
    )
    if PROC_OPTIONS not in (host.get_fact(MountOptions, path="/proc") or []):
        server.shell(
            name="Remount /proc hidepid=invisible",
            commands=[
                f"mount -o remount,{PROC_OPTIONS},gid=$(getent group {PROC_GROUP} | "
                "cut -d: -f3) /proc"
            ],  # fmt: skip
        )
    # /dev/shm: no devices, setuid or executables.
    files.line(
        name="/dev/shm nosuid,nodev,noexec (fstab)",
        path="/etc/fstab",
        line=r"^tmpfs\s+/dev/shm\s",
        replace=f"tmpfs /dev/shm tmpfs defaults,{','.join(SHM_OPTIONS)} 0 0",
    )
    shm = host.get_fact(MountOptions, path="/dev/shm") or []
    if shm and not set(SHM_OPTIONS) <= set(shm):
        server.shell(
            name="Remount /dev/shm nosuid,nodev,noexec",
            commands=[f"mount -o remount,{','.join(SHM_OPTIONS)} /dev/shm"],
        )

    # No core dumps.
    template(
        name="No core dumps (limits)",
        src="limits-core.j2.conf",
        dest="/etc/security/limits.d/10-prodstack-core.conf",
    )
    template(
        name="No core dumps (systemd-coredump)",
        src="coredump.j2.conf",
        dest="/etc/systemd/coredump.conf.d/prodstack.conf",
    )

    for key, value in LOGIN_DEFS.items():
        files.line(
            name=f"login.defs {key} {value}",
            path="/etc/login.defs",
            line=rf"^#?\s*{key}\s",
            replace=f"{key}\t{value}",
        )

    for path in BANNERS:
        template(name=f"Login warning {path}", src="issue.j2.txt", dest=path)

    template(
        name="Legacy protocols and filesystems never loaded",
        src="modprobe-blacklist.j2.conf",
        dest="/etc/modprobe.d/prodstack-blacklist.conf",
        modules=BLACKLISTED_MODULES,
    )

    rules = template(
        name="auditd rules (identity, privilege, sshd, secrets, time, modules)",
        src="audit.j2.rules",
        dest="/etc/audit/rules.d/prodstack.rules",
        mode="640",
    )
    if in_container:
        # The audit subsystem is the kernel's, outside any container: not started here.
        systemd.service(name="auditd off in a container", service="auditd.service",
                        running=False, enabled=False)  # fmt: skip
        if packages_op is not None:
            # Its package started it once on install, and it failed (EPERM) in here.
            server.shell(name="Forget auditd's failed start", _if=packages_op.did_change,
                         commands=["systemctl reset-failed auditd.service || true"])  # fmt: skip
    else:
        systemd.service(name="auditd running and enabled", service="auditd.service",
                        running=True, enabled=True)  # fmt: skip
        # auditd refuses a manual restart (RefuseManualStop): load the rules instead. Rules
        # loaded with `-e 2` are locked until reboot: a changed file then waits for it.
        server.shell(
            name="Load the audit rules (or, locked by -e 2, at the next boot)",
            commands=["augenrules --load || { auditctl -s | grep -q '^enabled 2' && "
                      "echo 'audit rules are immutable (-e 2): the new ones load at the next "
                      "boot'; }"],
            _if=rules.did_change,
        )  # fmt: skip
