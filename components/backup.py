"""Backup: AWS Backup tiers for the database, a locked vault, and a scheduled restore drill.

RDS's own automated backups stay on (point-in-time restore within
``backup_retention_days``); this component adds what they cannot give: copies kept for
months, out of reach of a deleted instance or a changed retention, optionally in a second
Region, and a restore that AWS Backup runs and checks on a schedule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components._common import child_opts, merge_tags, region_and_account

# The three tiers (docs/targets.md: daily kept 30 days, weekly 3 months, monthly 1 year), each a
# rule of the plan. Schedules are AWS Backup cron expressions in UTC, kept clear of the
# database's backup window (03:00-04:00) and its Sunday maintenance window (04:30-05:30,
# components/database.py): AWS Backup jobs started during or up to an hour before an RDS
# backup window fail. Source: AWS Backup developer guide, cloudwatch.html
# (NumberOfBackupJobsFailed: "often caused by scheduling a backup job during or 1 hour
# before a database resource's ... automated backup window"); botocore backup
# BackupRuleInput.ScheduleExpression ("A CRON expression in UTC").
TIER_SCHEDULES = {
    "daily": "cron(0 6 * * ? *)",
    "weekly": "cron(0 6 ? * SAT *)",
    "monthly": "cron(0 6 1 * ? *)",
}
# A job that has not started within an hour is cancelled (and reported EXPIRED).
# Source: botocore backup BackupRuleInput.StartWindowMinutes ("must be at least 60").
START_WINDOW_MINUTES = 60
COMPLETION_WINDOW_MINUTES = 24 * 60
# The restore drill runs every day after the daily backup, on the newest snapshot of the
# last two days. Source: botocore backup RestoreTestingPlanForCreate.ScheduleExpression,
# StartWindowHours (1-168); RestoreTestingRecoveryPointSelection.Algorithm
# (LATEST_WITHIN_WINDOW | RANDOM_WITHIN_WINDOW), RecoveryPointTypes (SNAPSHOT |
# CONTINUOUS), SelectionWindowDays (1-365).
DRILL_SCHEDULE = "cron(0 9 * * ? *)"
DRILL_START_WINDOW_HOURS = 3
DRILL_SELECTION_WINDOW_DAYS = 2
# Restore testing's name for an RDS DB instance. Source: botocore backup
# RestoreTestingSelectionForCreate.ProtectedResourceType ("RDS for Amazon Relational
# Database Service").
DRILL_RESOURCE_TYPE = "RDS"
# Vault lock modes: governance (an IAM principal with backup:DeleteBackupVaultLockConfiguration
# may still lift it) or compliance (immutable once the cooling-off days have passed).
# Source: pulumi_aws backup.VaultLockConfiguration `changeable_for_days` ("If omitted
# creates a vault lock in governance mode, otherwise ... compliance mode"); botocore
# backup PutBackupVaultLockConfigurationInput.ChangeableForDays ("3 or greater", at most
# 36,500).
VAULT_LOCK_MODES = ("none", "governance", "compliance")
MIN_CHANGEABLE_DAYS, MAX_CHANGEABLE_DAYS = 3, 36_500
# Source: botocore backup BackupVaultName pattern ^[a-zA-Z0-9\-\_]{2,50}$; the plan and
# selection names (BackupPlanName, BackupSelectionName: 1-50 of [a-zA-Z0-9-_.]) add
# "-database" to it, and the copy vault "-copy", so the vault name keeps to 40.
VAULT_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{2,40}")
# Restore testing plan and selection names: letters, digits and underscores, 1-50.
# Source: pulumi_aws backup.RestoreTestingPlan `name`; botocore backup
# RestoreTestingSelectionForCreate.RestoreTestingSelectionName.
DRILL_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,50}")
# The AWS managed policies of AWS Backup's default service role: take backups of, and
# restore, the supported resource types (RDS included). Source: AWS Backup developer
# guide, iam-service-roles.html (AWSBackupServiceRolePolicyForBackup,
# AWSBackupServiceRolePolicyForRestores, both under service-role/).
BACKUP_POLICY_ARNS = (
    "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup",
    "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores",
)
# AWS Backup's job metrics: namespace AWS/Backup, dimensions resource type and vault
# name, published only when non-zero. Source: AWS Backup developer guide, cloudwatch.html.
BACKUP_NAMESPACE = "AWS/Backup"
# Job states worth a notification. Backup and copy job events carry `state`, restore job
# events `status`. Source: AWS Backup developer guide, eventbridge.html; EventBridge
# events reference, events-ref-backup.html (detail types).
FAILED_STATES = ("FAILED", "ABORTED", "EXPIRED")
JOB_EVENTS = ("Backup Job State Change", "Copy Job State Change", "Restore Job State Change")
# Commercial Regions (the stack's own list is in stacks/config.py; a copy target is one).
REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


@dataclass(frozen=True)
class BackupArgs:
    """Inputs of :class:`Backup`."""

    vault_name: str
    """Name of the backup vault (and prefix of the plan's names): 2-40 letters, digits,
    hyphens and underscores. Replaces the vault. Required. Example: ``"prodstack-prod"``."""

    db_instance_arn: pulumi.Input[str]
    """ARN of the RDS instance the plan selects and the drill restores. Required.
    Example: ``db.arn``."""

    alarm_topic_arn: pulumi.Input[str]
    """SNS topic for failed backup, copy and restore jobs and the drill's alarms (its
    policy must let EventBridge and CloudWatch publish: components/observability.py).
    Required. Example: ``obs.topic_arn``."""

    daily_retention_days: int = 30
    """Days each daily recovery point is kept, 1 or more. Default: ``30`` (docs/targets.md).
    Example: ``7``."""

    weekly_retention_days: int = 90
    """Days each weekly recovery point is kept, at least ``daily_retention_days``.
    Default: ``90`` (3 months, docs/targets.md). Example: ``35``."""

    monthly_retention_days: int = 365
    """Days each monthly recovery point is kept, at least ``weekly_retention_days``.
    Default: ``365`` (1 year, docs/targets.md). Example: ``90``."""

    vault_lock: str = "governance"
    """``none``, ``governance`` or ``compliance`` (:data:`VAULT_LOCK_MODES`): a lock
    refuses deleting a recovery point, or shortening its retention, below the daily
    tier's days and above the monthly tier's. Governance can be lifted by a principal
    allowed ``backup:DeleteBackupVaultLockConfiguration``; compliance cannot be lifted by
    anyone, the root user included, once ``lock_changeable_days`` have passed.
    Default: ``"governance"``. Example: ``"compliance"``."""

    lock_changeable_days: int = 3
    """Compliance mode: days before the lock becomes immutable, 3-36,500 (the window to
    delete a mistaken lock). Ignored in governance mode. Default: ``3``. Example: ``14``."""

    copy_region: str = ""
    """A second Region that receives a copy of every recovery point, into a vault of its
    own (encrypted with a key of that Region, locked like the first), kept as long as
    the original. Empty: no copy. Default: ``""``. Example: ``"eu-central-1"``."""

    restore_drill: bool = True
    """A daily AWS Backup restore test of the newest snapshot (restored to a new,
    throwaway instance, then deleted), with an alarm when a drill fails and when none
    completed for two days. Default: ``True``. Example: ``False``."""

    force_destroy: bool = False
    """Let ``pulumi destroy`` delete the vault with its recovery points in it (refused
    while a compliance lock holds them). Default: ``False``. Example: ``True`` (dev)."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every taggable child. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        if not VAULT_NAME_RE.fullmatch(self.vault_name):
            problems.append(f"vault_name={self.vault_name!r}: 2-40 letters, digits, - and _")
        if self.daily_retention_days < 1:
            problems.append(f"daily_retention_days={self.daily_retention_days}: at least 1")
        if self.weekly_retention_days < self.daily_retention_days:
            problems.append(f"weekly_retention_days={self.weekly_retention_days}: at least "
                            f"daily_retention_days ({self.daily_retention_days})")
        if self.monthly_retention_days < self.weekly_retention_days:
            problems.append(f"monthly_retention_days={self.monthly_retention_days}: at least "
                            f"weekly_retention_days ({self.weekly_retention_days})")
        if self.vault_lock not in VAULT_LOCK_MODES:
            problems.append(f"vault_lock={self.vault_lock!r}: " + " | ".join(VAULT_LOCK_MODES))
        if not MIN_CHANGEABLE_DAYS <= self.lock_changeable_days <= MAX_CHANGEABLE_DAYS:
            problems.append(f"lock_changeable_days={self.lock_changeable_days}: "
                            f"{MIN_CHANGEABLE_DAYS}-{MAX_CHANGEABLE_DAYS}")
        if self.copy_region and not REGION_RE.fullmatch(self.copy_region):
            problems.append(f"copy_region={self.copy_region!r}: an AWS Region name")
        if self.vault_lock == "compliance" and self.force_destroy:
            problems.append("force_destroy: a compliance lock keeps every recovery point "
                            "until it expires; destroy cannot empty the vault")
        if problems:
            raise ValueError("BackupArgs: " + "; ".join(problems))

    @property
    def tiers(self) -> dict[str, int]:
        """Tier name -> days kept, in schedule order."""
        return {"daily": self.daily_retention_days, "weekly": self.weekly_retention_days,
                "monthly": self.monthly_retention_days}


class Backup(pulumi.ComponentResource):
    """AWS Backup for the database: a KMS-encrypted vault (locked), three tiers, a restore drill.

    Creates:
        ``{name}-key`` (KMS key of the vault, rotated), ``{name}-vault``,
        ``{name}-vault-lock`` (unless ``vault_lock="none"``), ``{name}-role`` (AWS
        Backup's service role; ``-backup`` and ``-restores`` attach its AWS managed
        policies), ``{name}-plan`` (rules ``daily``, ``weekly``, ``monthly``, each with
        its own retention and, with ``copy_region``, a copy action), ``{name}-selection``
        (the RDS instance), ``{name}-job-failures`` + ``-target`` (EventBridge: failed,
        aborted or expired backup, copy and restore jobs to the alarm topic). With
        ``copy_region``: ``{name}-copy-key``, ``{name}-copy-vault`` and
        ``{name}-copy-vault-lock`` in that Region. With ``restore_drill``:
        ``{name}-drill`` (restore testing plan), ``{name}-drill-rds`` (its selection),
        alarms ``{name}-drill-failed`` and ``{name}-drill-missing``.

    Example:
        ``Backup("app-backup", BackupArgs(vault_name="prodstack-prod",
        db_instance_arn=db.arn, alarm_topic_arn=obs.topic_arn))``

    Cost:
        Snapshot storage of RDS in AWS Backup, warm, $0.095/GB-month: the daily tier
        keeps 30 points, the weekly 13, the monthly 12, each billed for the data that
        changed since the one before (the first is a full copy). A 100 GB database
        changing 2 GB a day: 100 + 2 x 30 + 14 x 12 + 60 x 11 ~ 990 GB -> **~$94/month**
        (``prodstack cost`` prices it from the usage profile). A cross-Region copy
        doubles the storage and adds $0.02/GB transferred. A restore drill: one restore
        job and the throwaway instance's hours (about an hour a day of the same class).
        KMS key $1/month each. Knobs: the three ``*_retention_days``, ``copy_region``,
        ``restore_drill``.

    Secure defaults:
        The vault is encrypted with its own customer-managed key; a governance lock
        refuses deleting or shortening a recovery point; the service role can be assumed
        by AWS Backup for this account only; every failed job and every failed or
        missing drill notifies the alarm topic.

    Opt-outs:
        ``vault_lock="none"`` and ``restore_drill=False`` (dev: the stack config turns
        both off); ``force_destroy=True`` (dev).
    """

    vault_name: pulumi.Output[str]
    """Name of the primary vault."""
    vault_arn: pulumi.Output[str]
    """ARN of the primary vault."""
    plan_id: pulumi.Output[str]
    """ID of the backup plan."""
    copy_vault_arn: pulumi.Output[str] | None
    """ARN of the second Region's vault, ``None`` without ``copy_region``."""

    def __init__(
        self, name: str, args: BackupArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:backup:Backup", name, None, opts)
        self._name = name
        self._args = args
        self._region, self._account = region_and_account(self)

        vault = self._create_vault("", region=None)
        self.vault_name = vault.name
        self.vault_arn = vault.arn
        self.copy_vault_arn = None
        if args.copy_region:
            self.copy_vault_arn = self._create_vault("copy-", region=args.copy_region).arn
        role = self._create_role()
        self._create_plan(vault, role)
        self._create_job_notifications()
        if args.restore_drill:
            self._create_drill(role)

        self.register_outputs({
            "vault_name": self.vault_name,
            "vault_arn": self.vault_arn,
            "plan_id": self.plan_id,
            "copy_vault_arn": self.copy_vault_arn,
        })

    def _tags(self, role: str) -> dict[str, str]:
        return merge_tags(self._args.tags, role)

    def _create_vault(self, prefix: str, *, region: str | None) -> aws.backup.Vault:
        """A vault (and its key and lock) in ``region``, or the stack's when ``None``."""
        n, a = self._name, self._args
        where = {"region": region} if region else {}
        key = aws.kms.Key(
            f"{n}-{prefix}key",
            description=f"prodstack backup vault {a.vault_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            # The account administers and uses the key; AWS Backup uses it through the
            # service role's grants (AWSBackupServiceRolePolicyForBackup: kms:CreateGrant
            # for backup). Source: AWS Backup developer guide, encryption.html.
            policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "AccountAdmin",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{self._account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }],
            }),
            tags=self._tags(f"{prefix}backup-key"),
            opts=child_opts(self),
            **where,
        )
        # Source: pulumi_aws backup.Vault (`kms_key_arn`, `force_destroy`, `region`).
        vault = aws.backup.Vault(
            f"{n}-{prefix}vault",
            name=f"{a.vault_name}-copy" if prefix else a.vault_name,
            kms_key_arn=key.arn,
            force_destroy=a.force_destroy,
            tags=self._tags(f"{prefix}backup-vault"),
            opts=child_opts(self),
            **where,
        )
        if a.vault_lock != "none":
            # The lock's floor is the shortest tier and its ceiling the longest: every
            # rule's retention must lie between them or AWS Backup refuses the job.
            # Source: botocore backup PutBackupVaultLockConfigurationInput
            # (MinRetentionDays, MaxRetentionDays: "any backup or copy job to the vault
            # must have a lifecycle policy with a retention period" within them).
            aws.backup.VaultLockConfiguration(
                f"{n}-{prefix}vault-lock",
                backup_vault_name=vault.name,
                min_retention_days=min(a.tiers.values()),
                max_retention_days=max(a.tiers.values()),
                **({"changeable_for_days": a.lock_changeable_days}
                   if a.vault_lock == "compliance" else {}),
                opts=child_opts(self),
                **where,
            )
        return vault

    def _create_role(self) -> aws.iam.Role:
        n, account = self._name, self._account
        sources = [f"arn:aws:backup:{r}:{account}:*"
                   for r in (self._region, self._args.copy_region) if r]
        # AWS Backup assumes the role for this account only. aws:SourceArn pins it to this
        # account's AWS Backup resources in the stack's Region (and the copy Region's)
        # when the service sends the key; AWS Backup's guide does not say it does for role
        # assumption, so the ARN test is IfExists and a missing key cannot stop backups.
        # Source: IAM user guide, confused-deputy.html and
        # reference_policies_elements_condition_operators.html (...IfExists).
        role = aws.iam.Role(
            f"{n}-role",
            description="AWS Backup: back up and restore the prodstack database",
            assume_role_policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "backup.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                    "Condition": {
                        "StringEquals": {"aws:SourceAccount": account},
                        "ArnLikeIfExists": {"aws:SourceArn": sources[0] if len(sources) == 1
                                            else sources},
                    },
                }],
            }),
            tags=self._tags("backup-role"),
            opts=child_opts(self),
        )
        for suffix, arn in zip(("backup", "restores"), BACKUP_POLICY_ARNS, strict=True):
            aws.iam.RolePolicyAttachment(
                f"{n}-role-{suffix}", role=role.name, policy_arn=arn, opts=child_opts(self))
        return role

    def _create_plan(self, vault: aws.backup.Vault, role: aws.iam.Role) -> None:
        n, a = self._name, self._args
        rules = []
        for tier, days in a.tiers.items():
            # Source: pulumi_aws backup.PlanRuleArgs (`rule_name`, `target_vault_name`,
            # `schedule`, `start_window`, `completion_window`, `lifecycle.delete_after`,
            # `copy_actions`); botocore backup Lifecycle.DeleteAfterDays.
            rule = {
                "rule_name": tier,
                "target_vault_name": vault.name,
                "schedule": TIER_SCHEDULES[tier],
                "start_window": START_WINDOW_MINUTES,
                "completion_window": COMPLETION_WINDOW_MINUTES,
                "lifecycle": {"delete_after": days},
                "recovery_point_tags": {**self._tags(f"backup-{tier}"),
                                        "prodstack:backup-tier": tier},
            }
            if self.copy_vault_arn is not None:
                rule["copy_actions"] = [{"destination_vault_arn": self.copy_vault_arn,
                                         "lifecycle": {"delete_after": days}}]
            rules.append(rule)
        plan = aws.backup.Plan(
            f"{n}-plan",
            name=f"{a.vault_name}-tiers",
            rules=rules,
            tags=self._tags("backup-plan"),
            opts=child_opts(self),
        )
        self.plan_id = plan.id
        aws.backup.Selection(
            f"{n}-selection",
            name=f"{a.vault_name}-database",
            plan_id=plan.id,
            iam_role_arn=role.arn,
            resources=[a.db_instance_arn],
            opts=child_opts(self),
        )

    def _create_job_notifications(self) -> None:
        n = self._name
        # Backup and copy jobs report `state`, restore jobs `status`: either one failing.
        # Source: EventBridge user guide, eb-create-pattern-operators.html ("$or" inside
        # the object whose fields it chooses between).
        pattern = {
            "source": ["aws.backup"],
            "detail-type": list(JOB_EVENTS),
            "detail": {"$or": [{"state": list(FAILED_STATES)},
                               {"status": list(FAILED_STATES)}]},
        }
        rule = aws.cloudwatch.EventRule(
            f"{n}-job-failures",
            description="Failed, aborted or expired AWS Backup jobs (backup, copy, restore)",
            event_pattern=json.dumps(pattern),
            tags=self._tags("backup-job-failures"),
            opts=child_opts(self),
        )
        aws.cloudwatch.EventTarget(
            f"{n}-job-failures-target", rule=rule.name, arn=self._args.alarm_topic_arn,
            opts=child_opts(self))

    def _create_drill(self, role: aws.iam.Role) -> None:
        n, a = self._name, self._args
        drill_name = re.sub(r"[^A-Za-z0-9_]", "_", a.vault_name)[:44] + "_drill"
        plan = aws.backup.RestoreTestingPlan(
            f"{n}-drill",
            name=drill_name,
            schedule_expression=DRILL_SCHEDULE,
            start_window_hours=DRILL_START_WINDOW_HOURS,
            recovery_point_selection={
                "algorithm": "LATEST_WITHIN_WINDOW",
                "include_vaults": [self.vault_arn],
                "recovery_point_types": ["SNAPSHOT"],
                "selection_window_days": DRILL_SELECTION_WINDOW_DAYS,
            },
            tags=self._tags("restore-drill"),
            opts=child_opts(self),
        )
        # The restored instance takes its settings from the backup's own metadata (its
        # class, subnet group and security groups) and is deleted when the test ends.
        # Source: AWS Backup developer guide, restore-testing-inferred-metadata.html.
        aws.backup.RestoreTestingSelection(
            f"{n}-drill-rds",
            name="database",
            restore_testing_plan_name=plan.name,
            protected_resource_type=DRILL_RESOURCE_TYPE,
            protected_resource_arns=[a.db_instance_arn],
            iam_role_arn=role.arn,
            opts=child_opts(self),
        )
        dimensions = {"BackupVaultName": self.vault_name, "ResourceType": DRILL_RESOURCE_TYPE}
        # Source: botocore cloudwatch PutMetricAlarmInput (period a multiple of 60,
        # period x evaluation periods <= 7 days, treat_missing_data values).
        aws.cloudwatch.MetricAlarm(
            f"{n}-drill-failed",
            alarm_description="A restore job (the daily drill) failed: the newest backup "
                              "may not restore",
            namespace=BACKUP_NAMESPACE, metric_name="NumberOfRestoreJobsFailed",
            dimensions=dimensions, statistic="Sum", period=3600, evaluation_periods=1,
            comparison_operator="GreaterThanThreshold", threshold=0,
            treat_missing_data="notBreaching",
            alarm_actions=[a.alarm_topic_arn], ok_actions=[a.alarm_topic_arn],
            tags=self._tags("drill-failed"),
            opts=child_opts(self),
        )
        # AWS Backup publishes a job metric only when it is non-zero, so a day with no
        # completed restore has no data point: missing data breaches. Wrong dimensions
        # would leave no data at all and keep this alarm firing, never silent.
        aws.cloudwatch.MetricAlarm(
            f"{n}-drill-missing",
            alarm_description="No restore drill completed for 2 days: the drill is not "
                              "running (or every run failed)",
            namespace=BACKUP_NAMESPACE, metric_name="NumberOfRestoreJobsCompleted",
            dimensions=dimensions, statistic="Sum", period=86400, evaluation_periods=2,
            comparison_operator="LessThanThreshold", threshold=1,
            treat_missing_data="breaching",
            alarm_actions=[a.alarm_topic_arn], ok_actions=[a.alarm_topic_arn],
            tags=self._tags("drill-missing"),
            opts=child_opts(self),
        )
