"""The operator verbs on the VPS profile: each one a few commands of the deploy's own host
scripts (prodstack-release, prodstack-audit), docker and journalctl over SSH (ops/ssh.py).

Names come from the hosts and the deploy: the replicas (their port-carrying container names
included) from `prodstack-release replicas`, the backup units and monitoring ports from
pyinfra/tasks/, and the operator's name from tasks/audit.py, the same one the deploy
records and checks against the deploy lock.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from datetime import UTC, datetime
from functools import cache
from typing import Any

from prodstack.errors import UsageError
from prodstack.ops.ssh import AUDIT, PYINFRA_DIR, RELEASE, HostError, Remote, merged, web_hosts

# Debian's units for the services the deploy installs (tasks/nginx.py,
# tasks/postgres.py, tasks/redis.py); prodstack's own backup units come from tasks/pgbackrest.py.
PACKAGE_UNITS = {
    "nginx": ("web", ["nginx.service"]),
    "postgres": ("db", ["postgresql@*-main.service"]),
    "redis": ("db", ["redis-server.service"]),
}
SERVICES = (*PACKAGE_UNITS, "backup")
# What `status` asks each host's Prometheus (loopback only), in one query.
STATUS_METRICS = (
    "pg_up", "redis_up",
    "prodstack_backup_last_success_timestamp_seconds", "prodstack_backup_last_duration_seconds",
    "prodstack_restore_drill_success", "prodstack_restore_drill_duration_seconds",
    "prodstack_restore_drill_last_success_timestamp_seconds",
)  # fmt: skip


@cache
def _deploy() -> dict[str, Any]:
    """What the verbs take from the deploy's own modules (pyinfra/tasks/)."""
    from prodstack.vps_plan import _tasks_from

    with _tasks_from(PYINFRA_DIR):
        from tasks.audit import operator
        from tasks.config import MONITORING_PORTS
        from tasks.pgbackrest import UNITS

        return {
            "operator": operator(),
            "backup_units": [u for u in UNITS if u.endswith(".service")],
            "prometheus": MONITORING_PORTS["prometheus"],
            "alertmanager": MONITORING_PORTS["alertmanager"],
        }


def operator() -> str:
    return _deploy()["operator"]


def _json(remote: Remote, argv: list[str]) -> Any:
    out = remote.check(argv)
    try:
        return json.loads(out)
    except ValueError:
        raise HostError(f"{remote.name}: `{' '.join(argv)}` did not print JSON: "
                        f"{out.strip()[:200]!r}") from None  # fmt: skip


def _loopback_get(remote: Remote, port: int, path: str, **params: str) -> Any:
    """GET a loopback-only HTTP API on the host (Prometheus, Alertmanager) with its curl:
    sshd forwards no ports (AllowTcpForwarding no)."""
    argv = ["curl", "-fsS", "--max-time", "5", "-G"]
    for key, value in params.items():
        argv += ["--data-urlencode", f"{key}={value}"]
    return _json(remote, [*argv, f"http://127.0.0.1:{port}{path}"])


# --- status ------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = int(seconds)
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s % 60}s" if minutes else f"{s}s"


def _release(remote: Remote) -> dict[str, Any]:
    """The current release and its age, from `prodstack-release status --json` (a host
    deployed before the release history prints JSON for plain `status`, without the time)."""
    result = remote.run([RELEASE, "status", "--json"])
    status = json.loads(result.stdout) if result.code == 0 else _json(remote, [RELEASE, "status"])
    current = status.get("current")
    deployed_at = status.get("deployed_at")
    age = None if deployed_at is None else max(0.0, time.time() - _epoch(deployed_at))
    return {"current": current, "previous": status.get("previous"), "deployed_at": deployed_at,
            "age_seconds": age}  # fmt: skip


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _metrics(remote: Remote) -> dict[str, Any]:
    ports = _deploy()
    query = "{__name__=~\"" + "|".join(STATUS_METRICS) + "\"}"
    answer = _loopback_get(remote, ports["prometheus"], "/api/v1/query", query=query)
    values: dict[str, Any] = {}
    for sample in answer.get("data", {}).get("result", []):
        metric = sample["metric"]
        key = metric["__name__"] + (f":{metric['type']}" if "type" in metric else "")
        values[key] = float(sample["value"][1])
    now = time.time()
    backups = {}
    for key, value in values.items():
        if key.startswith("prodstack_backup_last_success_timestamp_seconds:"):
            kind = key.split(":", 1)[1]
            backups[kind] = {
                "finished_at": _iso(value), "age_seconds": round(now - value),
                "duration_seconds": values.get(f"prodstack_backup_last_duration_seconds:{kind}"),
            }  # fmt: skip
    drill = None
    if "prodstack_restore_drill_success" in values:
        last_ok = values.get("prodstack_restore_drill_last_success_timestamp_seconds")
        drill = {
            "passed": values["prodstack_restore_drill_success"] == 1,
            "duration_seconds": values.get("prodstack_restore_drill_duration_seconds"),
            "last_success_at": _iso(last_ok) if last_ok else None,
        }
    return {
        "postgres_up": values.get("pg_up") == 1 if "pg_up" in values else None,
        "redis_up": values.get("redis_up") == 1 if "redis_up" in values else None,
        "backups": backups,
        "restore_drill": drill,
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _alerts(remote: Remote) -> list[dict[str, Any]]:
    answer = _loopback_get(remote, _deploy()["alertmanager"], "/api/v2/alerts",
                           active="true", silenced="false", inhibited="false")  # fmt: skip
    return [{"name": a["labels"].get("alertname"), "severity": a["labels"].get("severity"),
             "since": a.get("startsAt"), "summary": a.get("annotations", {}).get("summary")}
            for a in answer]  # fmt: skip


def status(remotes: list[Remote]) -> dict[str, Any]:
    hosts = []
    for remote in remotes:
        entry: dict[str, Any] = {"host": remote.name,
                                 "roles": sorted({"web", "db"} & remote.groups)}  # fmt: skip
        if remote.is_web:
            entry["release"] = _release(remote)
            report = _json(remote, [RELEASE, "replicas"])
            entry["strategy"] = report["strategy"]
            entry["replicas_wanted"] = report["replicas_wanted"]
            entry["replicas"] = [
                {k: c[k] for k in ("replica", "name", "port", "image", "running", "ready",
                                   "in_upstream", "baking")}
                for c in report["replicas"]
            ]  # fmt: skip
            entry["upstream"] = [f"127.0.0.1:{port}" for port in report["upstream"]]
            bake = report.get("bake")
            entry["bake"] = None if not bake else {
                "image": bake.get("image"), "ends_at": _iso(bake["until"]),
                "seconds_left": max(0, round(bake["until"] - time.time()))}  # fmt: skip
            entry["lock"] = _json(remote, [RELEASE, "lock", "status"])
        entry.update(_metrics(remote))
        entry["alerts"] = _alerts(remote)
        hosts.append(entry)
    return {"profile": "vps", "hosts": hosts}


def render_status(result: dict[str, Any]) -> str:
    lines = []
    for h in result["hosts"]:
        lines += [f"### {h['host']} ({', '.join(h['roles'])})", ""]
        if "release" in h:
            rel = h["release"]
            ready = sum(1 for r in h["replicas"] if r["ready"] and r["in_upstream"])
            lines.append(f"- release: `{rel['current']}`, deployed {_age(rel['age_seconds'])} ago"
                         if rel["deployed_at"] else f"- release: `{rel['current']}`")  # fmt: skip
            if rel.get("previous"):
                lines.append(f"- previous: `{rel['previous']}` (`prodstack-release rollback`)")
            lines.append(f"- strategy: {h['strategy']}"
                         + (f"; baking the old set `{h['bake']['image']}` for "
                            f"{h['bake']['seconds_left']}s more" if h["bake"] else
                            "; no bake in progress"))  # fmt: skip
            lines.append(f"- replicas: {ready}/{h['replicas_wanted']} ready and routed; nginx "
                         f"upstream {', '.join(h['upstream']) or 'empty'}")  # fmt: skip
            if h["lock"]:
                lines.append(f"- deploy lock: held by {h['lock']['by']}: "
                             f"{json.dumps(h['lock']['message'])}")  # fmt: skip
            lines += ["", "| replica | container | image | running | ready | in nginx |",
                      "|---:|---|---|---|---|---|"]  # fmt: skip
            for r in h["replicas"]:
                lines.append(f"| {r['replica']}{' (baking)' if r['baking'] else ''} | "
                             f"{r['name']} | `{r['image']}` | {_yes(r['running'])} | "
                             f"{_yes(r['ready'])} | {_yes(r['in_upstream'])} |")  # fmt: skip
            lines.append("")
        if "db" in h["roles"]:
            lines.append(f"- PostgreSQL: {_up(h['postgres_up'])}; Redis: {_up(h['redis_up'])}")
            if h["backups"]:
                newest = max(h["backups"].items(), key=lambda kv: kv[1]["finished_at"])
                lines.append(f"- last backup: {newest[0]}, finished {newest[1]['finished_at']} "
                             f"({_age(newest[1]['age_seconds'])} ago)")  # fmt: skip
            else:
                lines.append("- last backup: none recorded")
            drill = h["restore_drill"]
            if drill is None:
                lines.append("- last restore drill: none yet")
            else:
                lines.append(f"- last restore drill: {'passed' if drill['passed'] else 'FAILED'}"
                             f" in {drill['duration_seconds']:.0f}s (last pass "
                             f"{drill['last_success_at']})")  # fmt: skip
        alerts = h["alerts"]
        lines.append(f"- alerts firing: {len(alerts)}" + "".join(
            f"\n  - {a['name']} ({a['severity']}) since {a['since']}: {a['summary']}"
            for a in alerts))  # fmt: skip
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def _up(value: bool | None) -> str:
    return "unknown (no exporter data)" if value is None else ("up" if value else "**DOWN**")


# --- logs --------------------------------------------------------------------------------

_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))\s?(.*)$")


def _line_filter(grep: str | None, request_id: str | None):
    def keep(text: str) -> bool:
        if grep is not None and grep not in text:
            return False
        if request_id is not None:
            try:
                record = json.loads(text)
            except ValueError:
                return request_id in text
            return isinstance(record, dict) and (
                record.get("request_id") == request_id or request_id in str(record.get("message")))
        return True

    return keep


def log_sources(remotes: list[Remote], service: str | None, since: str | None,
                follow: bool) -> list[tuple[str, Any, Any]]:  # fmt: skip
    """One running command per replica (or per unit's host), each with its prefix."""
    streams = []
    if service is None:
        for remote in web_hosts(remotes):
            for c in _json(remote, [RELEASE, "replicas"])["replicas"]:
                argv = ["docker", "logs", "--timestamps"]
                argv += ["--since", since] if since else []
                argv += ["--follow"] if follow else []
                tag = f"{remote.name}/replica-{c['replica']}" + ("-old" if c["baking"] else "")
                streams.append((tag, *remote.lines([*argv, c["name"]])))
        return streams
    if service == "backup":
        role, units = "db", _deploy()["backup_units"]
    else:
        role, units = PACKAGE_UNITS[service]
    for remote in [r for r in remotes if role in r.groups]:
        argv = ["journalctl", "--no-pager", "--output=short-iso-precise", "--quiet"]
        for unit in units:
            argv += ["--unit", unit]
        argv += [f"--since=-{_seconds(since)}s"] if since else ["--lines=200"]
        argv += ["--follow"] if follow else []
        streams.append((f"{remote.name}/{service}", *remote.lines(argv)))
    return streams


def _seconds(since: str) -> int:
    match = re.fullmatch(r"(\d+)([smhd]?)", since)
    if not match:
        raise UsageError(f"--since {since!r}: expected a duration such as 90s, 10m, 2h or 1d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def logs(remotes: list[Remote], *, service: str | None, since: str | None, follow: bool,
         grep: str | None, request_id: str | None, fmt: str, out=sys.stdout) -> int:  # fmt: skip
    if since is not None:
        _seconds(since)  # validated before anything runs
        since = f"{_seconds(since)}s"
    keep = _line_filter(grep, request_id)
    streams = log_sources(remotes, service, since, follow)
    if not streams:
        raise HostError("no log source: no web host runs a replica" if service is None
                        else f"no host runs {service}")  # fmt: skip

    def split(tag: str, raw: str) -> dict[str, str]:
        match = _TIMESTAMP.match(raw)
        when, text = (match.group(1), match.group(2)) if match else ("", raw)
        return {"time": when, "source": tag, "line": text}

    def emit(entry: dict[str, str]) -> None:
        if fmt == "json":
            out.write(json.dumps(entry) + "\n")
        else:
            out.write(f"{entry['source']} {entry['time']} {entry['line']}\n")
        out.flush()

    if follow:
        for tag, raw in merged(streams):
            entry = split(tag, raw)
            if keep(entry["line"]):
                emit(entry)
        return 0
    entries = [split(tag, raw) for tag, raw in merged(streams)]
    # Docker's RFC 3339 nanosecond stamps and journalctl's ISO stamps sort as instants.
    for entry in sorted(entries, key=lambda e: _sort_key(e["time"])):
        if keep(entry["line"]):
            emit(entry)
    return 0


def _sort_key(stamp: str) -> tuple[int, int]:
    """(whole seconds since the epoch, nanoseconds): exact, where a float of the two would
    round nanoseconds away (at today's epoch a double resolves about 0.2 microseconds)."""
    if not stamp:
        return (0, 0)
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", stamp)
    if not match:
        return (0, 0)
    base, frac, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "") else (zone if ":" in zone else f"{zone[:3]}:{zone[3:]}")
    nanoseconds = int((frac or ".0")[1:10].ljust(9, "0"))
    return (int(datetime.fromisoformat(base + zone).timestamp()), nanoseconds)


# --- exec --------------------------------------------------------------------------------


def exec_command(remotes: list[Remote], command: list[str], *, interactive: bool,
                 out=sys.stdout) -> int:  # fmt: skip
    web = web_hosts(remotes)
    if not web:
        raise UsageError("no web host in the inventory (or the one --host names)")
    remote = web[0]
    argv = [RELEASE, "exec", "--by", operator(), *(["-i"] if interactive else []), "--",
            *command]  # fmt: skip
    print(f"prodstack: exec on {remote.name}: {shlex.join(command)}", file=sys.stderr)
    if interactive:
        from prodstack.ops.terminal import interactive_session

        return interactive_session(remote, argv)
    channel, lines = remote.lines(argv)
    for line in lines:
        out.write(line + "\n")
        out.flush()
    return channel.recv_exit_status()


# --- lock --------------------------------------------------------------------------------


def lock(remotes: list[Remote], action: str, message: str | None, force: bool) -> dict[str, Any]:
    web = web_hosts(remotes)
    if not web:
        raise UsageError("no web host in the inventory: the deploy lock lives with "
                         "prodstack-release on the web hosts")  # fmt: skip
    who = operator()
    if action == "status":
        return {"action": "status", "hosts": {r.name: _json(r, [RELEASE, "lock", "status"])
                                              for r in web}}  # fmt: skip
    if action == "acquire":
        taken = []
        for remote in web:
            result = remote.run([RELEASE, "lock", "acquire", "--by", who, "-m", message or ""])
            if result.code != 0:
                for earlier in taken:  # all hosts or none
                    earlier.run([RELEASE, "lock", "release", "--by", who])
                reason = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["refused"]
                raise HostError(f"{remote.name}: {reason[0].removeprefix('prodstack-release: ')}")
            taken.append(remote)
    else:
        for remote in web:
            argv = [RELEASE, "lock", "release", "--by", who, *(["--force"] if force else [])]
            result = remote.run(argv)
            if result.code != 0:
                reason = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["refused"]
                raise HostError(f"{remote.name}: {reason[0].removeprefix('prodstack-release: ')}")
    return {"action": action, "by": who,
            "hosts": {r.name: _json(r, [RELEASE, "lock", "status"]) for r in web}}  # fmt: skip


def render_lock(result: dict[str, Any]) -> str:
    lines = []
    for host, held in result["hosts"].items():
        if held:
            since = _iso(held["since"])
            lines.append(f"- {host}: held by {held['by']} since {since}: "
                         f"{json.dumps(held['message'])}")  # fmt: skip
        else:
            lines.append(f"- {host}: not held")
    return "\n".join(lines) + "\n"


# --- audit -------------------------------------------------------------------------------


def audit(remotes: list[Remote], limit: int) -> list[dict[str, Any]]:
    entries = []
    for remote in remotes:
        out = remote.check([AUDIT, "show", "--json"])
        for line in out.splitlines():
            if line.strip():
                entry = json.loads(line)
                # The inventory's name for the host, as every other verb prints it.
                entry["hostname"], entry["host"] = entry.get("host"), remote.name
                entries.append(entry)
    entries.sort(key=lambda e: e.get("time", ""))
    return entries[-limit:] if limit else entries


def render_audit(entries: list[dict[str, Any]]) -> str:
    lines = ["| time | host | event | by | details |", "|---|---|---|---|---|"]
    for e in entries:
        shown = ("time", "host", "hostname", "event", "by")
        details = ", ".join(f"{k}={v}" for k, v in sorted(e.items())
                            if k not in shown and v != "")  # fmt: skip
        details = details.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {e.get('time')} | {e.get('host')} | {e.get('event')} | {e.get('by')} "
                     f"| {details} |")  # fmt: skip
    return "\n".join(lines) + "\n"
