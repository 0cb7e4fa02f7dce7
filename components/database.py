"""Database: RDS PostgreSQL 16 with forced TLS, a managed master secret and scaled tuning."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components._common import (
    LOG_RETENTION_DAYS,
    RESTORE_SOURCE_TAG,
    SECURITY_LOG_CLASS,
    SECURITY_LOG_TAG,
    assume_role_policy,
    child_opts,
    merge_tags,
    region_and_account,
)

# Memory (GiB) of the instance classes we allow; the tuning below scales with it.
# Source: AWS RDS user guide, "Hardware specifications for DB instance classes"
# (Concepts.DBInstanceClass.Summary.html); all support PostgreSQL 16.
INSTANCE_MEMORY_GIB = {
    "db.t4g.micro": 1, "db.t4g.small": 2, "db.t4g.medium": 4, "db.t4g.large": 8,
    "db.t4g.xlarge": 16,
    "db.m7g.large": 8, "db.m7g.xlarge": 16, "db.m7g.2xlarge": 32, "db.m7g.4xlarge": 64,
    "db.r7g.large": 16, "db.r7g.xlarge": 32, "db.r7g.2xlarge": 64,
}
# The major version only: with auto minor upgrades on, the provider takes a prefix and
# reports the running minor in `engine_version_actual` (pulumi_aws rds.Instance,
# `engine_version`: "If `auto_minor_version_upgrade` is enabled, you can provide a prefix
# of the version such as `8.0` (for `8.0.36`)"). The parameter group family follows it.
ENGINE_VERSIONS = ("16",)
PARAMETER_GROUP_FAMILY = "postgres16"
# Performance Insights retention: 7, 731 or 31*n (n=1..23). Source: botocore rds
# CreateDBInstanceMessage.PerformanceInsightsRetentionPeriod.
PI_RETENTION_DAYS = (7, 731, *(31 * n for n in range(1, 24)))
# Log types RDS for PostgreSQL can export. Source: botocore rds
# CreateDBInstanceMessage.EnableCloudwatchLogsExports; RDS user guide USER_LogAccess.
LOG_EXPORTS = ("postgresql", "upgrade", "iam-db-auth-error")
# The exports that are security logs (failed IAM database logins), kept
# security_log_retention_days.
SECURITY_LOG_EXPORTS = ("iam-db-auth-error",)
# The CA that signs the instance's certificate: RSA 2048, valid to 2061; the API verifies
# it against the matching region's root in the bundle its image ships (stacks/rds_ca.py).
# Source: RDS user guide UsingWithRDS.SSL (certificate authorities table).
CA_CERT_IDENTIFIER = "rds-ca-rsa2048-g1"
# Enhanced Monitoring intervals in seconds; 0 turns it off. Source: pulumi_aws
# rds.Instance `monitoring_interval` ("Valid Values: 0, 1, 5, 10, 15, 30, 60").
MONITORING_INTERVALS = (0, 1, 5, 10, 15, 30, 60)
# The AWS managed policy RDS's monitoring role needs. Source: AWS managed policy
# reference, AmazonRDSEnhancedMonitoringRole; RDS user guide USER_Monitoring.OS.Enabling.
ENHANCED_MONITORING_POLICY_ARN = (
    "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
)
# PostgreSQL role names: a letter or underscore first, then letters, digits, underscores;
# at most 63 bytes (NAMEDATALEN - 1). Lowercase only, so no quoting is ever needed.
ROLE_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# A point in time to restore to, in UTC (RDS takes the restore time in UTC). Source:
# botocore rds RestoreDBInstanceToPointInTimeMessage.RestoreTime ("Must be a time in
# Universal Coordinated Time (UTC) format", example 2009-09-07T23:45:00Z).
RESTORE_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
RESTORE_SOURCES = ("keep", "release")


def restored_identifier(identifier: str, restore_to_time: str) -> str:
    """The restored instance's identifier: ``<identifier>-r<yymmddHHMM>`` (at most 62 of
    RDS's 63 characters for a 50-character identifier), one per restore time."""
    digits = re.sub(r"\D", "", restore_to_time)
    return f"{identifier}-r{digits[2:12]}"


# gp3 storage for PostgreSQL: 20-65,536 GiB. Source: RDS user guide CHAP_Storage#gp3-storage.
MIN_STORAGE_GB, MAX_STORAGE_GB = 20, 65_536

# The tuning reference for a 4-core / 8 GB PostgreSQL host (docs/targets.md: max_connections=200,
# shared_buffers=2GB, effective_cache_size=6GB, maintenance_work_mem=512MB,
# wal_buffers=16MB, checkpoint_completion_target=0.9, default_statistics_target=100).
REFERENCE_MEMORY_GIB = 8
REFERENCE_MAX_CONNECTIONS = 200


def tuned_parameters(memory_gib: int, log_min_duration_ms: int) -> dict[str, str]:
    """The reference PostgreSQL tuning scaled to ``memory_gib``, plus forced TLS and slow logs.

    Ratios from the reference 8 GB host: shared_buffers 25 %, effective_cache_size 75 %,
    maintenance_work_mem 1/16 (capped at 2 GB), max_connections 25 per GiB (at least 80,
    at most 5000). Units are RDS's: 8 kB pages for the buffers, kB for work memory.
    """
    kib = memory_gib * 1024 * 1024
    return {
        "rds.force_ssl": "1",
        "shared_buffers": str(kib // 4 // 8),
        "effective_cache_size": str(kib * 3 // 4 // 8),
        "maintenance_work_mem": str(min(kib // 16, 2 * 1024 * 1024)),
        "max_connections": str(
            max(80, min(5000, REFERENCE_MAX_CONNECTIONS * memory_gib // REFERENCE_MEMORY_GIB))
        ),
        "wal_buffers": str(16 * 1024 // 8),
        "checkpoint_completion_target": "0.9",
        "default_statistics_target": "100",
        "log_min_duration_statement": str(log_min_duration_ms),
    }


def max_connections(instance_class: str) -> int:
    """``max_connections`` the parameter group sets for ``instance_class``.

    Lower than RDS's own default for PostgreSQL, ``LEAST({DBInstanceClassMemory/9531392},
    5000)`` (AWS Prescriptive Guidance, tuning-postgresql-parameters/max-connections.html),
    because the reference ratio is kept.
    """
    return int(tuned_parameters(INSTANCE_MEMORY_GIB[instance_class], 0)["max_connections"])


# Slots a non-superuser cannot take: superuser_reserved_connections (3) and
# rds.rds_superuser_reserved_connections (2), both at their defaults. Source: AWS
# Knowledge Center, rds-postgresql-error-connection-slots ("max_connections -
# superuser_reserved_connections - rds.rds_superuser_reserved_connections").
RESERVED_CONNECTIONS = 3 + 2


@dataclass(frozen=True)
class DatabaseArgs:
    """Inputs of :class:`Database`."""

    subnet_ids: Sequence[pulumi.Input[str]]
    """Isolated subnets in at least 2 AZs. Required. Example: ``net.isolated_subnet_ids``."""

    security_group_id: pulumi.Input[str]
    """Security group that admits 5432 from the service only. Required.
    Example: ``net.database_security_group_id``."""

    identifier: str
    """RDS instance identifier: lowercase letters, digits, hyphens, starts with a letter,
    at most 50 characters (room for the final-snapshot suffix). Replaces the instance.
    Required. Example: ``"prodstack-prod"``."""

    instance_class: str = "db.t4g.micro"
    """Instance class, one of :data:`INSTANCE_MEMORY_GIB`. Default: ``"db.t4g.micro"``.
    Example: ``"db.m7g.xlarge"``."""

    engine_version: str = "16"
    """PostgreSQL major version; only ``"16"`` (the ``postgres16`` parameter group).
    The minor is deliberately not pinned: ``auto_minor_version_upgrade`` is on, so RDS
    moves the instance to new 16.x minors in the maintenance window, and a pinned minor
    such as ``"16.11"`` would make every later ``up`` plan a downgrade, which RDS
    refuses. With the major alone RDS creates its current default 16.x minor and the
    provider reports the running one as ``engine_version_actual`` (pulumi_aws
    ``rds.Instance`` docstring, ``engine_version``). Default: ``"16"``. Example: ``"16"``."""

    storage_gb: int = 20
    """Initial gp3 storage, 20-65,536 GiB (below 400 GiB gp3 has a fixed 3,000 IOPS).
    Default: ``20``. Example: ``100``."""

    max_storage_gb: int = 100
    """Storage autoscaling ceiling; at least 10 % above ``storage_gb``.
    Default: ``100``. Example: ``500``."""

    multi_az: bool = False
    """Synchronous standby in a second AZ. Default: ``False`` (the stacks turn it on for
    medium and large). Example: ``True``."""

    backup_retention_days: int = 7
    """Automated backup retention, 1-35 days. Default: ``7``. Example: ``30``."""

    deletion_protection: bool = True
    """Refuse deletes until turned off. Default: ``True``. Example: ``False`` (dev)."""

    final_snapshot: bool = True
    """Take a uniquely named final snapshot on delete. Default: ``True``.
    Example: ``False`` (dev)."""

    performance_insights_retention_days: int = 7
    """Performance Insights retention: 7 (free), 731, or a multiple of 31 up to 713.
    Default: ``7``. Example: ``93``."""

    log_min_duration_ms: int = 500
    """Log statements slower than this (the p99 target, docs/targets.md). Default: ``500``.
    Example: ``250``."""

    log_retention_days: int = 30
    """Retention of the exported PostgreSQL and upgrade log groups (a CloudWatch value).
    Default: ``30``. Example: ``90``."""

    security_log_retention_days: int = 365
    """Retention of the ``iam-db-auth-error`` log group (failed IAM logins: security logs,
    kept apart from the application's), a CloudWatch value. Default: ``365``.
    Example: ``731``."""

    database_name: str = "app"
    """Database created at launch. Replaces the instance. Default: ``"app"``.
    Example: ``"alerts"``."""

    username: str = "prodstack"
    """Master user name; RDS generates and rotates its password in Secrets Manager.
    Replaces the instance. Default: ``"prodstack"``. Example: ``"admin_user"``."""

    app_username: str = "prodstack_app"
    """Least-privilege login role the API uses, created by the migrate step (member of
    ``rds_iam``: it signs in with IAM tokens, it has no password). Must differ from
    ``username``. Default: ``"prodstack_app"``. Example: ``"alerts_app"``."""

    restore_to_time: str = ""
    """Restore to a point in time: a UTC time ``YYYY-MM-DDTHH:MM:SSZ`` within the backup
    retention. A new instance (``<identifier>-r<yymmddHHMM>``) is created from this one as
    it was at that time, and every output (endpoint, secret, IAM ARN) points at it, so
    the service moves to it in the same deployment. The original instance stays, and is
    never deleted by the program (``retain_on_delete``) until ``restore_source`` is
    ``release``. Empty: no restore. Default: ``""``. Example: ``"2026-12-07T05:00:00Z"``."""

    restore_source: str = "keep"
    """With ``restore_to_time``: ``keep`` the original instance in the stack, or
    ``release`` it: the program stops managing it and AWS keeps it (deploy once with
    ``keep`` first, so the retain flag is recorded), to be snapshotted and deleted by
    hand. Default: ``"keep"``. Example: ``"release"``."""

    log_kms_key_arn: pulumi.Input[str] | None = None
    """Customer-managed key of the exported log groups (updated in place). Default:
    ``None`` (CloudWatch Logs' own encryption). Example: ``keys.logs_key_arn``."""

    performance_insights_kms_key_arn: pulumi.Input[str] | None = None
    """Customer-managed key of Performance Insights, used only by an instance created with
    it: AWS refuses to change the key of an existing instance ("Once KMS key is set, it can
    never be changed": pulumi_aws rds.Instance `performance_insights_kms_key_id`; RDS refuses
    ModifyDBInstance with "You can't change your Performance Insights KMS key"), so the
    program ignores changes to it and an existing instance keeps ``aws/rds``. Default:
    ``None``. Example: ``keys.data_key_arn``."""

    monitoring_interval_seconds: int = 60
    """Enhanced Monitoring (OS metrics) interval: 1, 5, 10, 15, 30 or 60; 0 turns it off
    (FSBP RDS.6). Default: ``60``. Example: ``15``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every taggable child. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        if self.instance_class not in INSTANCE_MEMORY_GIB:
            problems.append(
                f"instance_class={self.instance_class!r}: allowed "
                + ", ".join(INSTANCE_MEMORY_GIB)
            )
        if self.engine_version not in ENGINE_VERSIONS:
            problems.append(
                f"engine_version={self.engine_version!r}: the major version only, one of "
                + ", ".join(ENGINE_VERSIONS) + " (auto minor upgrades pick the minor)"
            )
        if not MIN_STORAGE_GB <= self.storage_gb <= MAX_STORAGE_GB:
            problems.append(f"storage_gb={self.storage_gb}: allowed 20-65536")
        # AWS rejects a ceiling less than 10 % above the allocation ("Invalid max storage
        # size"). Source: RDS user guide USER_PIOPS.Autoscaling.
        if self.max_storage_gb < self.storage_gb * 1.1 or self.max_storage_gb > MAX_STORAGE_GB:
            problems.append(
                f"max_storage_gb={self.max_storage_gb}: at least 10% above storage_gb "
                f"({self.storage_gb}) and at most 65536"
            )
        if not 1 <= self.backup_retention_days <= 35:
            problems.append(f"backup_retention_days={self.backup_retention_days}: 1-35")
        if self.performance_insights_retention_days not in PI_RETENTION_DAYS:
            problems.append(
                "performance_insights_retention_days: 7, 731 or a multiple of 31 up to 713"
            )
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            problems.append(f"log_retention_days={self.log_retention_days}: CloudWatch value")
        if self.security_log_retention_days not in LOG_RETENTION_DAYS:
            problems.append(f"security_log_retention_days={self.security_log_retention_days}: "
                            "CloudWatch value")
        if not re.fullmatch(r"[a-z](?!.*--)[a-z0-9-]{0,48}[a-z0-9]", self.identifier):
            problems.append(f"identifier={self.identifier!r}: lowercase, letter first, <=50")
        if self.monitoring_interval_seconds not in MONITORING_INTERVALS:
            problems.append(
                f"monitoring_interval_seconds={self.monitoring_interval_seconds}: "
                "0, 1, 5, 10, 15, 30 or 60"
            )
        if self.restore_to_time and not RESTORE_TIME_RE.fullmatch(self.restore_to_time):
            problems.append(f"restore_to_time={self.restore_to_time!r}: a UTC time "
                            "YYYY-MM-DDTHH:MM:SSZ")
        if self.restore_source not in RESTORE_SOURCES:
            problems.append(f"restore_source={self.restore_source!r}: keep or release")
        if self.restore_source == "release" and not self.restore_to_time:
            problems.append("restore_source=release: only with restore_to_time (the "
                            "original is the only instance otherwise)")
        if not ROLE_NAME_RE.fullmatch(self.app_username) or self.app_username == self.username:
            problems.append(
                f"app_username={self.app_username!r}: lowercase letters, digits and "
                "underscores, letter first, at most 63, not the master username"
            )
        if problems:
            raise ValueError("DatabaseArgs: " + "; ".join(problems))


class Database(pulumi.ComponentResource):
    """RDS PostgreSQL 16 in isolated subnets: encrypted gp3, forced TLS, RDS-managed master secret.

    Creates:
        ``{name}-subnets`` (subnet group), ``{name}-params`` (``postgres16`` parameter
        group: ``rds.force_ssl=1``, reference tuning scaled to the class, slow-statement log),
        ``{name}-log-<type>`` log groups with retention (created before RDS would create
        them without one), ``{name}-monitoring-role`` (+ ``-managed``: Enhanced
        Monitoring), ``{name}-snapshot-suffix`` and ``{name}-instance``.

    Example:
        ``Database("app-db", DatabaseArgs(subnet_ids=net.isolated_subnet_ids,
        security_group_id=net.database_security_group_id, identifier="prodstack-prod"))``

    Cost:
        db.t4g.micro single-AZ ~$0.016/h -> **~$12/month** + gp3 $0.115/GB-month
        (20 GB = $2.30). Multi-AZ doubles the instance and storage price. db.m7g.xlarge
        Multi-AZ ~$0.67/h -> ~$490/month. Backups beyond the DB size cost
        $0.095/GB-month. Knobs: ``instance_class``, ``multi_az``, ``storage_gb``.

    Secure defaults:
        Not publicly accessible; storage encrypted; TLS forced; master password managed
        by RDS in Secrets Manager (never in config or state); deletion protection; final
        snapshot; 7-day backups; Performance Insights, Enhanced Monitoring (60 s) and log
        exports on; minor upgrades; IAM database authentication on, so the API's own
        role (``app_username``) signs in with 15-minute tokens and has no password to
        rotate, while the master secret (rotated by RDS) serves only the migrate step.

    Opt-outs:
        ``deletion_protection=False`` and ``final_snapshot=False`` (dev only);
        ``monitoring_interval_seconds=0``.
    """

    address: pulumi.Output[str]
    """Hostname of the instance."""
    port: pulumi.Output[int]
    """Port (5432)."""
    identifier: pulumi.Output[str]
    """Instance identifier, the CloudWatch ``DBInstanceIdentifier`` dimension."""
    arn: pulumi.Output[str]
    """ARN of the instance (what AWS Backup selects and restore-tests)."""
    master_secret_arn: pulumi.Output[str]
    """Secrets Manager ARN of the RDS-managed master secret (JSON ``username``/``password``)."""
    resource_id: pulumi.Output[str]
    """``db-...`` resource ID, the instance part of the ``rds-db:connect`` ARN."""
    iam_connect_arn: pulumi.Output[str]
    """``arn:aws:rds-db:<region>:<account>:dbuser:<resource-id>/<app_username>``: the one
    resource the API's task role may ``rds-db:connect`` to."""
    app_username: str
    """Login role of the API (IAM authentication, least privilege)."""
    database_name: str
    """Name of the application database."""
    max_connections: int
    """``max_connections`` set in the parameter group."""
    storage_gb: int
    """Initial allocated storage (GiB), used for the free-storage alarm."""
    max_storage_gb: int
    """Storage autoscaling ceiling (GiB), the free-storage alarm's denominator."""

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:database:Database", name, None, opts)
        self._name = name
        self._args = args
        params = tuned_parameters(
            INSTANCE_MEMORY_GIB[args.instance_class], args.log_min_duration_ms
        )
        self.max_connections = max_connections(args.instance_class)
        self.storage_gb = args.storage_gb
        self.max_storage_gb = args.max_storage_gb
        self.database_name = args.database_name
        self.app_username = args.app_username
        self._region, self._account = region_and_account(self)

        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=list(args.subnet_ids),
            tags=self._tags("subnets"),
            opts=child_opts(self),
        )
        parameter_group = self._create_parameter_group(params)
        log_groups = self._create_log_groups()
        monitoring = self._create_monitoring_role()
        self._create_instance(subnet_group, parameter_group, log_groups, monitoring)

        self.register_outputs(
            {
                "address": self.address,
                "port": self.port,
                "identifier": self.identifier,
                "arn": self.arn,
                "master_secret_arn": self.master_secret_arn,
                "resource_id": self.resource_id,
                "iam_connect_arn": self.iam_connect_arn,
                "app_username": self.app_username,
                "database_name": self.database_name,
                "max_connections": self.max_connections,
                "storage_gb": self.storage_gb,
                "max_storage_gb": self.max_storage_gb,
            }
        )

    def _tags(self, role: str) -> dict[str, str]:
        return merge_tags(self._args.tags, role)

    def _create_parameter_group(self, params: dict[str, str]) -> aws.rds.ParameterGroup:
        return aws.rds.ParameterGroup(
            f"{self._name}-params",
            family=PARAMETER_GROUP_FAMILY,
            # As deployed: a new description would replace the parameter group (ForceNew),
            # and with it the instance's, for a wording change.
            description="prodstack PostgreSQL 16: forced TLS, seed tuning",
            # pending-reboot is valid for static and dynamic parameters alike; new
            # instances start with these values. Source: botocore rds Parameter.ApplyMethod.
            parameters=[
                {"name": k, "value": v, "apply_method": "pending-reboot"}
                for k, v in params.items()
            ],
            tags=self._tags("params"),
            opts=child_opts(self),
        )

    def _create_log_groups(self, identifier: str | None = None,
                           prefix: str = "") -> list[aws.cloudwatch.LogGroup]:
        # RDS writes exports to /aws/rds/instance/<identifier>/<type> and would create
        # those groups with no expiry; creating them first sets the retention.
        identifier = identifier or self._args.identifier
        return [
            aws.cloudwatch.LogGroup(
                f"{self._name}-{prefix}log-{log_type}",
                name=f"/aws/rds/instance/{identifier}/{log_type}",
                retention_in_days=(self._args.security_log_retention_days
                                   if log_type in SECURITY_LOG_EXPORTS
                                   else self._args.log_retention_days),
                **({"kms_key_id": self._args.log_kms_key_arn}
                   if self._args.log_kms_key_arn is not None else {}),
                tags=self._tags(f"log-{log_type}") | (
                    {SECURITY_LOG_TAG: SECURITY_LOG_CLASS}
                    if log_type in SECURITY_LOG_EXPORTS else {}),
                opts=child_opts(self),
            )
            for log_type in LOG_EXPORTS
        ]

    def _create_monitoring_role(self) -> aws.iam.RolePolicyAttachment | None:
        """The role RDS assumes to publish Enhanced Monitoring metrics (none when off)."""
        args = self._args
        if args.monitoring_interval_seconds == 0:
            return None
        self.monitoring_role = aws.iam.Role(
            f"{self._name}-monitoring-role",
            # Only this instance may have RDS assume the role. Source: RDS user guide,
            # USER_Monitoring.OS.Enabling ("Protecting against the confused deputy
            # problem": aws:SourceArn arn:aws:rds:<region>:<account>:db:<identifier>).
            assume_role_policy=assume_role_policy(
                "monitoring.rds.amazonaws.com",
                account=self._account,
                # A restore's instance is <identifier>-r<time>: the same prefix.
                source_arn=f"arn:aws:rds:{self._region}:{self._account}:db:{args.identifier}"
                + ("*" if args.restore_to_time else ""),
            ),
            tags=self._tags("monitoring-role"),
            opts=child_opts(self),
        )
        return aws.iam.RolePolicyAttachment(
            f"{self._name}-monitoring-role-managed",
            role=self.monitoring_role.name,
            policy_arn=ENHANCED_MONITORING_POLICY_ARN,
            opts=child_opts(self),
        )

    def _create_instance(
        self,
        subnet_group: aws.rds.SubnetGroup,
        parameter_group: aws.rds.ParameterGroup,
        log_groups: list[aws.cloudwatch.LogGroup],
        monitoring: aws.iam.RolePolicyAttachment | None,
    ) -> None:
        args = self._args
        restoring = bool(args.restore_to_time)
        self.instance = None
        if not (restoring and args.restore_source == "release"):
            # Once a restore exists, the original is never deleted by the program: dropping
            # it (restore_source: release) only makes Pulumi forget it.
            self.instance = self._instance(
                "instance", args.identifier, subnet_group, parameter_group,
                [*log_groups, *([monitoring] if monitoring else [])],
                retain_on_delete=restoring)
        active = self.instance
        if restoring:
            identifier = restored_identifier(args.identifier, args.restore_to_time)
            restored_logs = self._create_log_groups(identifier, prefix="restored-")
            # Source: pulumi_aws rds.Instance `restore_to_point_in_time`
            # (`source_db_instance_identifier`, `restore_time`; the new instance needs
            # `identifier`); botocore rds RestoreDBInstanceToPointInTimeMessage (the
            # settings below are all accepted on a restore). The database name and
            # master user come from the source.
            active = self._instance(
                "restored", identifier, subnet_group, parameter_group,
                [*restored_logs, *([monitoring] if monitoring else [])],
                restore={"source_db_instance_identifier": args.identifier,
                         "restore_time": args.restore_to_time},
                after=[self.instance] if self.instance is not None else [])
        self.active_instance = active
        self._expose(active)

    def _instance(
        self,
        role: str,
        identifier: str,
        subnet_group: aws.rds.SubnetGroup,
        parameter_group: aws.rds.ParameterGroup,
        depends_on: list[pulumi.Resource],
        *,
        restore: dict[str, str] | None = None,
        retain_on_delete: bool = False,
        after: list[pulumi.Resource] | None = None,
    ) -> aws.rds.Instance:
        args = self._args
        monitoring_kw = (
            {
                "monitoring_interval": args.monitoring_interval_seconds,
                "monitoring_role_arn": self.monitoring_role.arn,
            }
            if args.monitoring_interval_seconds
            else {"monitoring_interval": 0}
        )
        created = ({"restore_to_point_in_time": restore} if restore else
                   {"db_name": args.database_name, "username": args.username})
        # A fixed final-snapshot name would collide on the second destroy; the random
        # suffix is created once and kept in state.
        suffix = random.RandomId(
            f"{self._name}-snapshot-suffix" if role == "instance"
            else f"{self._name}-{role}-snapshot-suffix",
            byte_length=4, opts=child_opts(self))
        return aws.rds.Instance(
            f"{self._name}-{role}",
            identifier=identifier,
            engine="postgres",
            engine_version=args.engine_version,
            auto_minor_version_upgrade=True,
            instance_class=args.instance_class,
            allocated_storage=args.storage_gb,
            max_allocated_storage=args.max_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            **created,
            manage_master_user_password=True,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[args.security_group_id],
            parameter_group_name=parameter_group.name,
            publicly_accessible=False,
            multi_az=args.multi_az,
            backup_retention_period=args.backup_retention_days,
            backup_window="03:00-04:00",
            maintenance_window="sun:04:30-sun:05:30",
            copy_tags_to_snapshot=True,
            deletion_protection=args.deletion_protection,
            skip_final_snapshot=not args.final_snapshot,
            final_snapshot_identifier=suffix.hex.apply(
                lambda h: f"{identifier}-final-{h}"
            ),
            # The instance-class exclusions (db.t*.micro/small) in the RDS user guide,
            # USER_DatabaseInsights.Engines, list MariaDB and MySQL, not PostgreSQL.
            performance_insights_enabled=True,
            performance_insights_retention_period=args.performance_insights_retention_days,
            **({"performance_insights_kms_key_id": args.performance_insights_kms_key_arn}
               if args.performance_insights_kms_key_arn is not None else {}),
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            # Logins by IAM token (FSBP RDS.10): the API's role has no password at all.
            # Source: pulumi_aws rds.Instance `iam_database_authentication_enabled`;
            # RDS user guide UsingWithRDS.IAMDBAuth.
            iam_database_authentication_enabled=True,
            # Source: pulumi_aws rds.Instance `monitoring_interval`/`monitoring_role_arn`
            # (a non-zero interval needs the role). FSBP RDS.6.
            **monitoring_kw,
            ca_cert_identifier=CA_CERT_IDENTIFIER,
            apply_immediately=False,
            tags={**self._tags(role),
                  # Replaced by a restore: no longer the one backed up, drilled, alarmed.
                  **({RESTORE_SOURCE_TAG: "kept"} if retain_on_delete else {})},
            # The role must be able to publish before the instance first reports.
            # The Performance Insights key is the one the instance was created with (AWS
            # refuses a change; see DatabaseArgs.performance_insights_kms_key_arn).
            opts=child_opts(self, depends_on=[*depends_on, *(after or [])],
                            retain_on_delete=retain_on_delete,
                            ignore_changes=["performanceInsightsKmsKeyId"]),
        )

    def _expose(self, instance: aws.rds.Instance) -> None:
        """Point the component's outputs at ``instance`` (the restored one after a restore)."""
        args = self._args
        self.address = instance.address
        self.port = instance.port
        self.identifier = instance.identifier
        self.arn = instance.arn
        self.master_secret_arn = instance.master_user_secrets.apply(
            lambda secrets: secrets[0].secret_arn
        )
        self.resource_id = instance.resource_id
        # Source: RDS user guide UsingWithRDS.IAMDBAuth.IAMPolicy (the rds-db:connect
        # resource is arn:aws:rds-db:<region>:<account>:dbuser:<DbiResourceId>/<user>).
        self.iam_connect_arn = pulumi.Output.concat(
            f"arn:aws:rds-db:{self._region}:{self._account}:dbuser:",
            instance.resource_id, f"/{args.app_username}",
        )
