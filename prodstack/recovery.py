"""RPO and RTO of both profiles: the one table `prodstack choose`, `prodstack cost` and the
docs read (tests/plan/test_choose.py fails when docs/cloud.md or docs/cost.md say
otherwise).

Each profile has the project's recovery objectives and, per recovery mechanism, what it
gives: the data lost (RPO) and the time to serve again (RTO), with where the figure comes
from. A figure nobody has measured says so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mechanism:
    """One way back after a loss, and what it gives."""

    name: str
    """What recovers, in a few words."""
    rpo: str
    """Data lost at worst."""
    rto: str
    """Time until the API serves again."""
    source: str
    """Where the figures come from."""


# The project's recovery objectives, the same for both profiles (README, "Deploying to a
# VPS": RTO 1 hour, RPO 1 hour).
TARGET_RPO = "1 hour"
TARGET_RTO = "1 hour"

RECOVERY: dict[str, tuple[Mechanism, ...]] = {
    "cloud": (
        Mechanism(
            "Multi-AZ failover (medium, large)", "none (synchronous standby)", "60-120 s",
            "RDS user guide, Concepts.MultiAZ.Failover (\"typically ... 60-120 seconds\")"),
        Mechanism(
            "RDS point-in-time restore",
            "5 minutes", "tens of minutes: a new instance, by size (not measured here)",
            "RDS user guide, USER_PIT (automated backups, `backup_retention_days`: "
            "transaction logs uploaded every 5 minutes; the latest restorable time is "
            "typically within 5 minutes)"),
        Mechanism(
            "AWS Backup daily tier (weekly, monthly for older points)", "24 hours",
            "tens of minutes: a new instance from the snapshot, by size (not measured here)",
            "the plan's schedule (components/backup.py); AWS Backup developer guide, "
            "restoring-rds.html"),
    ),
    "vps": (
        Mechanism(
            "pgBackRest point-in-time restore",
            "about a minute (measured 7-60 s)",
            "12-79 s measured (`restore.py`, replicas stopped to serving)",
            "docs/vps.md, section 6 (WAL archived continuously, archive_timeout 60 s)"),
        Mechanism(
            "a new host from the off-site repository (`backup_s3_bucket`)",
            "35-48 s measured; everything without `backup_s3_bucket`",
            "0.7-1.4 min measured from the loss with the new host deployed (its deploy "
            "4.2-5.2 min)",
            "docs/vps.md, section 8 (tests/vps/test_e2e_host_lost.py, three runs)"),
    ),
}


def primary(profile: str) -> Mechanism:
    """The mechanism a lost or damaged database is recovered with on ``profile``: point in
    time (the cloud's Multi-AZ failover covers only an instance or AZ failure)."""
    return RECOVERY[profile][1] if profile == "cloud" else RECOVERY[profile][0]


def summary(profile: str) -> dict[str, str]:
    """RPO and RTO lines of ``profile``, as `choose` and `cost` print them."""
    m = primary(profile)
    return {
        "rpo": f"{m.rpo} by {m.name} (target {TARGET_RPO})",
        "rto": f"{m.rto} by {m.name} (target {TARGET_RTO})",
    }


def markdown_table() -> str:
    """Every profile's mechanisms with their figures: what docs/cloud.md shows."""
    lines = ["| profile | mechanism | RPO | RTO | source |", "|---|---|---|---|---|"]
    for profile, mechanisms in RECOVERY.items():
        for m in mechanisms:
            lines.append(f"| {profile} | {m.name} | {m.rpo} | {m.rto} | {m.source} |")
    lines.append(f"| both | the objectives | {TARGET_RPO} | {TARGET_RTO} "
                 "| README, Deploying to a VPS |")
    return "\n".join(lines)
