"""Facts pyinfra doesn't ship, each a read-only command with a parsed result."""

from __future__ import annotations

import hashlib
import json
import shlex
import time

from pyinfra.api import FactBase

RELEASE = "/usr/local/sbin/prodstack-release"


class MemTotalMb(FactBase):
    """Total RAM in MiB, from /proc/meminfo (vmstat isn't on minimal images)."""

    def command(self) -> str:
        return "awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo"

    def process(self, output):
        return int(next(iter(output), "0") or 0)


class DockerImageId(FactBase):
    """The local image id of a reference, or None when the image isn't on the host."""

    def command(self, image: str) -> str:
        return (
            f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(image)} 2>/dev/null || true"
        )

    def process(self, output):
        value = "\n".join(output).strip()
        return value or None


class ReleaseStatus(FactBase):
    """`prodstack-release check IMAGE`: "in-sync", or why the replicas differ from it."""

    def command(self, image: str) -> str:
        return (
            f"if [ -x {RELEASE} ]; then {RELEASE} check {shlex.quote(image)} 2>&1 || true; "
            "else echo 'not installed'; fi"
        )

    def process(self, output):
        return "\n".join(output).strip()


class ReleaseCurrent(FactBase):
    """`prodstack-release status --json` (the release serving now), or None before the first
    deploy. A host still on the script's earlier version answers `status` without --json."""

    def command(self) -> str:
        return (
            f"if [ -x {RELEASE} ]; then {RELEASE} status --json 2>/dev/null || "
            f"{RELEASE} status 2>/dev/null || true; fi"
        )

    def process(self, output):
        try:
            return json.loads("\n".join(output) or "null")
        except ValueError:
            return None


class UfwStatus(FactBase):
    """`ufw status verbose` parsed: active, default policies and the allowed rules; plus
    `ufw show added` (the rules ufw keeps even while it is inactive)."""

    def command(self) -> str:
        return (
            "LANG=C ufw status verbose 2>/dev/null || true; echo '-- added'; "
            "LANG=C ufw show added 2>/dev/null || true"
        )

    def process(self, output):
        status = {"active": False, "defaults": "", "rules": [], "added": []}
        section = None
        for line in output:
            line = line.strip()
            if line == "-- added":
                section = "added"
            elif section == "added":
                if line.startswith("ufw "):
                    status["added"].append(" ".join(line.split()))
            elif line.startswith("Status:"):
                status["active"] = line.split(":", 1)[1].strip() == "active"
            elif line.startswith("Default:"):
                status["defaults"] = line.split(":", 1)[1].strip()
            elif line.startswith("--"):
                section = "rules"
            elif section == "rules" and line:
                status["rules"].append(" ".join(line.split()))
        return status


class Ipv6Enabled(FactBase):
    """Whether the host has IPv6 (containers and some VPSs lack it): nginx needs it for [::]."""

    def command(self) -> str:
        return "cat /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null || echo 1"

    def process(self, output):
        return next(iter(output), "1").strip() == "0"


# The app's three roles (tasks/postgres.py): the owner and its two login roles. Names reach
# the server as psql variables (:'owner' quotes a literal), never as SQL text.
APP_ROLES_QUERY = """SELECT coalesce(json_object_agg(a.rolname, json_build_object(
  'login', a.rolcanlogin,
  'verifier', a.rolpassword,
  'member', coalesce(pg_has_role(a.oid, o.oid, 'MEMBER'), false),
  'default_role', EXISTS (SELECT FROM pg_db_role_setting s WHERE s.setrole = a.oid
                          AND s.setdatabase = 0 AND 'role=' || :'owner' = ANY (s.setconfig))
)), '{}')
FROM pg_authid a LEFT JOIN pg_authid o ON o.rolname = :'owner'
WHERE a.rolname IN (:'owner', :'owner' || '_a', :'owner' || '_b');
"""


def psql_stdin(script: str, variables: dict[str, str], *, options: str = "-XAtq") -> str:
    """`psql` reading `script` from a quoted here-document, with `variables` as psql
    variables: values reach the server quoted by psql (:'x' a literal, :"x" an identifier),
    never as SQL text, never through the shell, and never on psql's command line (which
    every user of the host reads in /proc): each is a `\\set` at the top of the script."""
    assert "\nPRODSTACK_SQL\n" not in "\n" + script + "\n"
    given = "".join(f"\\set {k} {psql_quoted(v)}\n" for k, v in variables.items())
    return (f"psql {options} -v ON_ERROR_STOP=1 -d postgres -f - <<'PRODSTACK_SQL'\n"
            f"{given}{script}PRODSTACK_SQL\n")  # fmt: skip


def psql_quoted(value: str) -> str:
    """`value` as one single-quoted argument of a psql meta-command: a backslash escapes
    the next character, and a line break is written `\\n`, so a value is one line and
    never ends the here-document."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + escaped.replace("\n", "\\n").replace("\r", "\\r") + "'"


class PostgresAppRoles(FactBase):
    """For the app's owner role and its login roles `<owner>_a`, `<owner>_b`, each that
    exists: whether it can log in, its SCRAM verifier (pg_authid.rolpassword), whether it is
    a member of the owner, and whether the owner is its default role. {} before PostgreSQL
    is installed or when none exists."""

    def default(self):
        return {}

    def command(self, owner: str) -> str:
        return (
            "if command -v psql >/dev/null && id postgres >/dev/null 2>&1; then "
            f"runuser -u postgres -- {psql_stdin(APP_ROLES_QUERY, {'owner': owner})}"
            "fi 2>/dev/null || true"
        )

    def process(self, output):
        return json.loads("\n".join(output).strip() or "{}")


class FirstBuildState(FactBase):
    """Where a file built once by a background oneshot unit stands: "present" when `path`
    exists, "building" while `unit` is still starting, else the unit's ActiveState
    ("inactive", "failed"). A deploy that comes while the build runs must not start it again."""

    def command(self, path: str, unit: str) -> str:
        return (
            f"if [ -e {shlex.quote(path)} ]; then echo present; "
            f"elif [ \"$(systemctl show -p ActiveState --value {shlex.quote(unit)} 2>/dev/null)\" "
            "= activating ]; then echo building; "
            f"else systemctl show -p ActiveState --value {shlex.quote(unit)} 2>/dev/null "
            "|| echo inactive; fi"
        )

    def process(self, output):
        return next(iter(output), "inactive").strip() or "inactive"


class SmallSshModuli(FactBase):
    """How many group-exchange moduli in /etc/ssh/moduli are smaller than `bits`."""

    def command(self, bits: int) -> str:
        return f"awk '$1 !~ /^#/ && $5 < {int(bits) - 1}' /etc/ssh/moduli 2>/dev/null | wc -l"

    def process(self, output):
        return int(next(iter(output), "0") or 0)


class DiskSizeMb(FactBase):
    """Size in MiB of the filesystem that holds `path` (0 when unknown)."""

    def command(self, path: str) -> str:
        return f"df -Pm {shlex.quote(path)} 2>/dev/null | awk 'NR == 2 {{print $2}}' || true"

    def process(self, output):
        value = "\n".join(output).strip()
        return int(value) if value.isdigit() else 0


class PostgresRoleMember(FactBase):
    """Whether PostgreSQL role `role` exists and is a member of `group`."""

    def command(self, role: str, group: str) -> str:
        query = shlex.quote(
            f"SELECT pg_has_role('{role}', '{group}', 'member') "
            f"FROM pg_roles WHERE rolname = '{role}'"
        )
        return (
            "(command -v psql >/dev/null && id postgres >/dev/null 2>&1 && "
            f"runuser -u postgres -- psql -XAtc {query}) 2>/dev/null || true"
        )

    def process(self, output):
        return "\n".join(output).strip() == "t"


class PgbackrestRepos(FactBase):
    """The state of a pgBackRest stanza per repository, from `pgbackrest info`:
    {repo key: (status code, number of backups)}; {} before pgBackRest is set up.
    Status codes are pgBackRest's: 0 ok, 1 missing stanza path, 2 no valid backups, ..."""

    def command(self, stanza: str) -> str:
        quoted = shlex.quote(stanza)
        return (
            f"if command -v pgbackrest >/dev/null && [ -f /etc/pgbackrest.conf ]; then "
            f"runuser -u postgres -- pgbackrest --stanza={quoted} --output=json info "
            "2>/dev/null || echo '[]'; else echo '[]'; fi"
        )

    def process(self, output):
        try:
            stanzas = json.loads("\n".join(output) or "[]")
        except ValueError:
            return {}
        if not stanzas:
            return {}
        backups = {}
        for b in stanzas[0].get("backup", []):
            key = b["database"]["repo-key"]
            backups[key] = backups.get(key, 0) + 1
        return {
            r["key"]: (r["status"]["code"], backups.get(r["key"], 0))
            for r in stanzas[0].get("repo", [])
        }


class PgbackrestCipherDigest(FactBase):
    """SHA-256 (hex) of the repositories' passphrase in /etc/pgbackrest.conf, or None
    before pgBackRest is set up: compared with the secrets' without moving the secret.

    The Debian package's own pgbackrest.conf has no passphrase: a host where it was
    installed before the deploy wrote the file (a first deploy stopped half-way, say)
    reads None, not the digest of an empty passphrase."""

    def command(self, path: str = "/etc/pgbackrest.conf") -> str:
        conf = shlex.quote(path)
        return (
            f"if grep -q '^repo1-cipher-pass=' {conf} 2>/dev/null; then "
            f"sed -n 's/^repo1-cipher-pass=//p' {conf} | head -1 | tr -d '\\n' "
            "| sha256sum | cut -d' ' -f1; fi"
        )

    def process(self, output):
        value = "".join(output).strip()
        return value or None


class OffsiteBucket(FactBase):
    """`prodstack-backup bucket-state`: whether the off-site bucket in /etc/pgbackrest.conf
    keeps overwritten objects, asked from the host with its key; None before pgBackRest's
    off-site repository is set up (then `prodstack-backup init` checks it)."""

    def command(self) -> str:
        return (
            "if [ -x /usr/local/sbin/prodstack-backup ] && "
            "grep -q '^repo2-type=s3' /etc/pgbackrest.conf 2>/dev/null; then "
            "/usr/local/sbin/prodstack-backup bucket-state 2>/dev/null || true; fi"
        )

    def process(self, output):
        try:
            return json.loads("".join(output).strip() or "null")
        except ValueError:
            return None


class MountOptions(FactBase):
    """The options a path is mounted with, as /proc/mounts shows them (empty if it isn't a
    mount point)."""

    def command(self, path: str) -> str:
        return f"awk -v p={shlex.quote(path)} '$2 == p {{o = $4}} END {{print o}}' /proc/mounts"

    def process(self, output):
        return [o for o in "".join(output).strip().split(",") if o]


class InContainer(FactBase):
    """Whether the host is a container (systemd-detect-virt): kernel modules, audit and
    some mounts belong to the machine outside it."""

    def command(self) -> str:
        return "systemd-detect-virt --container --quiet && echo yes || echo no"

    def process(self, output):
        return "".join(output).strip() == "yes"


class RedisAuth(FactBase):
    """Which passwords Redis accepts now, from redis.conf: the SHA-256 hashes of each ACL
    user's passwords (`#hash` or a plain `>password`), and of a `requirepass` password
    (as the default user's)."""

    def command(self) -> str:
        return "grep -E '^(user|requirepass) ' /etc/redis/redis.conf 2>/dev/null || true"

    def process(self, output):
        users: dict[str, list[str]] = {}
        for line in output:
            words = line.split()
            if not words:
                continue
            if words[0] == "requirepass" and len(words) > 1:
                users.setdefault("default", []).append(
                    hashlib.sha256(words[1].strip('"').encode()).hexdigest()
                )
            elif words[0] == "user" and len(words) > 1 and "on" in words:
                users[words[1]] = [
                    w[1:] if w.startswith("#") else hashlib.sha256(w[1:].encode()).hexdigest()
                    for w in words[2:]
                    if w.startswith(("#", ">"))
                ]
        return users


class DeployLock(FactBase):
    """`prodstack-release lock status`: the deploy lock's holder, message and time, or None
    (not held, or no prodstack-release yet)."""

    def command(self) -> str:
        return f"if [ -x {RELEASE} ]; then {RELEASE} lock status; else echo null; fi"

    def process(self, output):
        held = json.loads("\n".join(output).strip() or "null")
        if held:
            held["since_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                              time.gmtime(held.get("since", 0)))  # fmt: skip
        return held
