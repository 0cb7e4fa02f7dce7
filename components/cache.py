"""Cache: an encrypted ElastiCache Valkey/Redis replication group with an AUTH secret."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components._common import LOG_RETENTION_DAYS, child_opts, merge_tags, stored_secret

# engine -> (allowed versions, parameter-group family per major). Valkey versions must
# match ^[7-9]\.\d+$ and Redis 6+ major.minor (TF elasticache/engine_version.go);
# families from botocore elasticache CreateCacheParameterGroupMessage.
ENGINES = {
    "valkey": {"7.2": "valkey7", "8.0": "valkey8", "8.1": "valkey8", "8.2": "valkey8"},
    "redis": {"7.0": "redis7", "7.1": "redis7"},
}
# Current-generation node types (no t1/m1-m3/r3). T2/T3/T4g do support failover per the
# API. Source: botocore elasticache CacheNodeType doc; AWS ElastiCache supported node types.
NODE_TYPES = (
    "cache.t4g.micro", "cache.t4g.small", "cache.t4g.medium",
    "cache.m7g.large", "cache.m7g.xlarge", "cache.r7g.large", "cache.r7g.xlarge",
)
# AUTH token: 16-128 printable ASCII; the only specials AWS accepts are ! & # $ ^ < > -
# Source: botocore elasticache CreateReplicationGroupMessage.AuthToken; TF validate.go.
AUTH_TOKEN_SPECIALS = "!&#$^<>-"
REDIS_PORT = 6379


@dataclass(frozen=True)
class CacheArgs:
    """Inputs of :class:`Cache`."""

    subnet_ids: Sequence[pulumi.Input[str]]
    """Isolated subnets in at least 2 AZs. Required. Example: ``net.isolated_subnet_ids``."""

    security_group_id: pulumi.Input[str]
    """Security group that admits 6379 from the service only. Required.
    Example: ``net.cache_security_group_id``."""

    replication_group_id: str
    """Replication group ID: 1-40 lowercase letters, digits, hyphens; starts with a letter;
    no ``--`` or trailing ``-``. Replaces the group. Required. Example: ``"prodstack-prod"``."""

    engine: str = "valkey"
    """``valkey`` (cheaper, Redis-compatible) or ``redis``. Default: ``"valkey"``.
    Example: ``"redis"``."""

    engine_version: str = "8.0"
    """Engine version in ``major.minor`` form; see :data:`ENGINES`. Default: ``"8.0"``.
    Example: ``"7.2"``."""

    node_type: str = "cache.t4g.micro"
    """Node type, one of :data:`NODE_TYPES`. Default: ``"cache.t4g.micro"``.
    Example: ``"cache.m7g.large"``."""

    replicas: int = 0
    """Read replicas, 0-5. With one or more: automatic failover and Multi-AZ.
    Default: ``0``. Example: ``1`` (prod)."""

    snapshot_retention_days: int = 7
    """Daily snapshots kept, 0-35 (0 turns snapshots off). Default: ``7``. Example: ``14``."""

    log_retention_days: int = 30
    """Retention of the slow-log group (a CloudWatch value). Default: ``30``.
    Example: ``90``."""

    secret_recovery_window_days: int = 7
    """Days Secrets Manager keeps the deleted AUTH secret: 0 (delete at once) or 7-30.
    Default: ``7``. Example: ``0`` (dev, so the stack can be recreated at once)."""

    kms_key_arn: pulumi.Input[str] | None = None
    """Customer-managed key for the data at rest (the group's disks and snapshots).
    Changing it replaces the group (kms_key_id is force-new; ElastiCache user guide,
    at-rest-encryption.html: encryption at rest is chosen only at creation). Default:
    ``None`` (service managed encryption). Example: ``keys.data_key_arn``."""

    secret_kms_key_arn: pulumi.Input[str] | None = None
    """Customer-managed key of the AUTH secret (updated in place). Default: ``None``.
    Example: ``keys.secrets_key_arn``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every taggable child. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        versions = ENGINES.get(self.engine)
        if versions is None:
            problems.append(f"engine={self.engine!r}: allowed valkey, redis")
        elif self.engine_version not in versions:
            problems.append(
                f"engine_version={self.engine_version!r}: allowed {', '.join(versions)}"
            )
        if self.node_type not in NODE_TYPES:
            problems.append(f"node_type={self.node_type!r}: allowed {', '.join(NODE_TYPES)}")
        if not 0 <= self.replicas <= 5:
            problems.append(f"replicas={self.replicas}: 0-5")
        if not 0 <= self.snapshot_retention_days <= 35:
            problems.append(f"snapshot_retention_days={self.snapshot_retention_days}: 0-35")
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            problems.append(f"log_retention_days={self.log_retention_days}: CloudWatch value")
        if not (self.secret_recovery_window_days == 0
                or 7 <= self.secret_recovery_window_days <= 30):
            problems.append("secret_recovery_window_days: 0 or 7-30")
        if not re.fullmatch(r"[a-z](?!.*--)[a-z0-9-]{0,38}[a-z0-9]|[a-z]",
                            self.replication_group_id):
            problems.append(f"replication_group_id={self.replication_group_id!r}: invalid")
        if problems:
            raise ValueError("CacheArgs: " + "; ".join(problems))

    @property
    def family(self) -> str:
        """Parameter-group family for the engine and version."""
        return ENGINES[self.engine][self.engine_version]


class Cache(pulumi.ComponentResource):
    """ElastiCache (Valkey by default) with TLS, at-rest encryption, AUTH and LRU eviction.

    Creates:
        ``{name}-subnets``, ``{name}-params`` (``maxmemory-policy allkeys-lru``),
        ``{name}-auth-token`` (random, AWS-safe specials), ``{name}-auth-secret`` +
        ``{name}-auth-secret-value`` (Secrets Manager), ``{name}-slow-log`` (log group
        with retention) and ``{name}-group`` (the replication group).

    Example:
        ``Cache("app-cache", CacheArgs(subnet_ids=net.isolated_subnet_ids,
        security_group_id=net.cache_security_group_id, replication_group_id="prodstack-dev"))``

    Cost:
        cache.t4g.micro ~$0.016/h -> **~$12/month** per node; prod's cache.m7g.large x 2
        (primary + replica) ~$0.158/h each -> ~$231/month. Secrets Manager $0.40/month.
        Knobs: ``node_type``, ``replicas``.

    Secure defaults:
        Isolated subnets only; encryption at rest and in transit (``required``); AUTH
        token generated, stored in Secrets Manager, never in config; snapshots kept;
        slow log shipped; automatic failover + Multi-AZ whenever a replica exists.

    Opt-outs:
        ``replicas=0`` (no failover; dev), ``secret_recovery_window_days=0`` (dev).
    """

    primary_endpoint: pulumi.Output[str]
    """Primary endpoint address (TLS)."""
    port: int
    """Port (6379)."""
    auth_secret_arn: pulumi.Output[str]
    """Secrets Manager ARN holding the AUTH token (plain string)."""
    member_cluster_ids: list[str]
    """Member cluster IDs (``<group>-001``...), the CloudWatch ``CacheClusterId`` values."""

    def __init__(
        self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:cache:Cache", name, None, opts)
        self._name = name
        self._args = args
        self.port = REDIS_PORT
        token = self._create_auth_secret()
        self._create_group(token)
        # ElastiCache names member clusters <replication-group-id>-001, -002, ...
        # Source: ElastiCache user guide, "Creating a Valkey or Redis OSS replication group".
        self.member_cluster_ids = [
            f"{args.replication_group_id}-{i + 1:03d}" for i in range(args.replicas + 1)
        ]
        self.register_outputs(
            {
                "primary_endpoint": self.primary_endpoint,
                "port": self.port,
                "auth_secret_arn": self.auth_secret_arn,
                "member_cluster_ids": self.member_cluster_ids,
            }
        )

    def _tags(self, role: str) -> dict[str, str]:
        return merge_tags(self._args.tags, role)

    def _create_auth_secret(self) -> random.RandomPassword:
        n = self._name
        token = random.RandomPassword(
            f"{n}-auth-token",
            length=48,
            special=True,
            override_special=AUTH_TOKEN_SPECIALS,
            min_special=2,
            opts=child_opts(self),
        )
        secret = stored_secret(
            f"{n}-auth-secret",
            value=token.result,
            description="prodstack cache AUTH token (REDIS_PASSWORD)",
            recovery_window_days=self._args.secret_recovery_window_days,
            tags=self._tags("auth-secret"),
            parent=self,
            kms_key_arn=self._args.secret_kms_key_arn,
        )
        self.auth_secret_arn = secret.arn
        return token

    def _create_group(self, token: random.RandomPassword) -> None:
        n, args = self._name, self._args
        subnet_group = aws.elasticache.SubnetGroup(
            f"{n}-subnets",
            subnet_ids=list(args.subnet_ids),
            tags=self._tags("subnets"),
            opts=child_opts(self),
        )
        params = aws.elasticache.ParameterGroup(
            f"{n}-params",
            family=args.family,
            description="prodstack cache: LRU eviction across all keys",
            parameters=[{"name": "maxmemory-policy", "value": "allkeys-lru"}],
            tags=self._tags("params"),
            opts=child_opts(self),
        )
        slow_log = aws.cloudwatch.LogGroup(
            f"{n}-slow-log",
            retention_in_days=args.log_retention_days,
            tags=self._tags("slow-log"),
            opts=child_opts(self),
        )
        has_replica = args.replicas > 0
        self.group = aws.elasticache.ReplicationGroup(
            f"{n}-group",
            replication_group_id=args.replication_group_id,
            description="prodstack cache",
            engine=args.engine,
            engine_version=args.engine_version,
            node_type=args.node_type,
            port=REDIS_PORT,
            num_cache_clusters=args.replicas + 1,
            automatic_failover_enabled=has_replica,
            multi_az_enabled=has_replica,
            parameter_group_name=params.name,
            subnet_group_name=subnet_group.name,
            security_group_ids=[args.security_group_id],
            at_rest_encryption_enabled=True,
            # Source: pulumi_aws elasticache.ReplicationGroup `kms_key_id` ("Can be specified
            # only if at_rest_encryption_enabled = true"; unset: service managed encryption).
            **({"kms_key_id": args.kms_key_arn} if args.kms_key_arn is not None else {}),
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            auth_token=token.result,
            snapshot_retention_limit=args.snapshot_retention_days,
            snapshot_window="02:00-03:00",
            maintenance_window="sun:05:30-sun:06:30",
            auto_minor_version_upgrade=True,
            apply_immediately=False,
            log_delivery_configurations=[
                {
                    "destination": slow_log.name,
                    "destination_type": "cloudwatch-logs",
                    "log_format": "json",
                    "log_type": "slow-log",
                }
            ],
            tags=self._tags("group"),
            opts=child_opts(self),
        )
        self.primary_endpoint = self.group.primary_endpoint_address
