"""Disaster recovery: AWS Backup vaults encrypted and locked, backup tiers that cover the
database, alarmed restore drills."""

from __future__ import annotations

from pulumi_policy import ReportViolation, StackValidationArgs

from policies._shared import (
    as_list,
    as_map,
    is_prod,
    linked,
    live_databases,
    lookup,
    of_type,
    stack_policy,
)
from policies.alarms import GREATER, LESS, alarm_problem, metrics_read

# ---- disaster recovery: AWS Backup tiers, locked vaults, restore drills ----------------

# The backup tiers in prod (docs/targets.md, "Recovery"): a rule named after each, keeping
# its points at least this long.
PROD_BACKUP_TIERS = {"daily": 30, "weekly": 90, "monthly": 365}
BACKUP = "AWS/Backup"


@stack_policy(
    "backup-vault-encrypted-and-locked",
    "Backup vaults use a customer-managed KMS key; in prod each is locked, "
                "keeping every recovery point at least the daily tier's 30 days.",
)
def backup_vaults_locked(args: StackValidationArgs, report: ReportViolation) -> None:
    locks = of_type(args, "backup/vaultLockConfiguration:VaultLockConfiguration")
    for vault in of_type(args, "backup/vault:Vault"):
        if not lookup(vault.props, "kmsKeyArn"):
            report("A backup vault must be encrypted with a customer-managed KMS key "
                   "(kmsKeyArn).", vault.urn)
        if not is_prod(vault.props):
            continue
        mine = [lock for lock in locks if vault.urn in linked(lock, "backupVaultName")]
        if not mine:
            report("Prod backup vaults must be locked (a VaultLockConfiguration, governance "
                   "or compliance).", vault.urn)
        for lock in mine:
            floor = lock.props.get("minRetentionDays")
            if not isinstance(floor, (int, float)) or floor < PROD_BACKUP_TIERS["daily"]:
                report(f"A prod vault lock must keep every point at least "
                       f"{PROD_BACKUP_TIERS['daily']} days (minRetentionDays), not "
                       f"{floor!r}.", lock.urn)


@stack_policy(
    "backup-tiers-cover-the-database",
    "Every RDS instance is selected by an AWS Backup plan; in prod the plan has "
                "the backup targets (docs/targets.md): daily kept >= 30 days, weekly >= 90, "
                "monthly >= 365.",
)
def backup_tiers(args: StackValidationArgs, report: ReportViolation) -> None:
    plans = {p.urn: p for p in of_type(args, "backup/plan:Plan")}
    selections = of_type(args, "backup/selection:Selection")
    for db in live_databases(args):
        covering = [s for s in selections if db.urn in linked(s, "resources")]
        if not covering:
            report("The database is in no AWS Backup selection (no tiered backups beyond "
                   "RDS's own).", db.urn)
            continue
        rules = [as_map(r) for s in covering for urn in linked(s, "planId")
                 if urn in plans for r in as_list(plans[urn].props.get("rules"))]
        kept = {r.get("ruleName"): as_map(r.get("lifecycle")).get("deleteAfter") for r in rules}
        if not is_prod(db.props):
            if not any(isinstance(d, (int, float)) and d >= 1 for d in kept.values()):
                report("The database's backup plan keeps nothing (no rule with "
                       "lifecycle.deleteAfter >= 1).", db.urn)
            continue
        for tier, floor in PROD_BACKUP_TIERS.items():
            days = kept.get(tier)
            if not isinstance(days, (int, float)) or days < floor:
                report(f"Prod backup tier {tier!r} must keep its points >= {floor} days "
                       f"(docs/targets.md), not {days!r}.", db.urn)


@stack_policy(
    "restore-drill-alarmed",
    "Every prod RDS instance has an AWS Backup restore testing selection, and "
                "alarms that notify when a drill fails and when none completed (missing "
                "data breaching).",
)
def restore_drills(args: StackValidationArgs, report: ReportViolation) -> None:
    tests = of_type(args, "backup/restoreTestingSelection:RestoreTestingSelection")
    alarms = of_type(args, "cloudwatch/metricAlarm:MetricAlarm")
    missing = [a for a in alarms
               if (BACKUP, "NumberOfRestoreJobsCompleted") in metrics_read(a.props)]
    failed = [a for a in alarms if (BACKUP, "NumberOfRestoreJobsFailed") in metrics_read(a.props)]
    for db in live_databases(args):
        if not is_prod(db.props):
            continue
        if not any(db.urn in linked(t, "protectedResourceArns")
                   and t.props.get("protectedResourceType") == "RDS" for t in tests):
            report("Prod databases need a scheduled restore drill (an AWS Backup restore "
                   "testing selection of type RDS naming the instance).", db.urn)
        if not missing:
            report("No alarm fires when no restore drill completed (NumberOfRestoreJobs"
                   "Completed).", db.urn)
        if not failed:
            report("No alarm fires when a restore drill fails (NumberOfRestoreJobsFailed).",
                   db.urn)
    for alarm in missing:
        problem = alarm_problem(alarm, LESS, None)
        if not problem and alarm.props.get("treatMissingData") != "breaching":
            problem = "must treat missing data as breaching (no data: no drill completed)"
        if problem:
            report(f"Missing-drill alarm {problem}.", alarm.urn)
    for alarm in failed:
        problem = alarm_problem(alarm, GREATER, 0)
        if problem:
            report(f"Failed-drill alarm {problem}.", alarm.urn)

