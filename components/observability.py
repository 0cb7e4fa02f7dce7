"""Observability: CloudWatch alarms for the targets, an encrypted SNS topic, a dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import yaml

from components._common import (
    DEPLOYMENT_ALARM_TAG,
    DEPLOYMENT_ALARM_USE,
    child_opts,
    merge_tags,
    source_conditions,
)

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
GIB = 1024**3
# The alarms an ECS deployment watches; one in ALARM rolls the deployment back. Not
# `healthy-hosts` itself: it treats missing data as breaching (silence means nothing runs),
# so during an outage it is already in ALARM and would roll back the fix-forward deployment
# too. Deployments watch `deploy-healthy-hosts`, its copy with missing data not breaching.
DEPLOYMENT_ALARM_ROLES = ("high-error-rate", "deploy-healthy-hosts")
# RDS db-instance event categories sent to the topic: the instance failed, failed over,
# runs out of storage, was unavailable, or maintenance is due or applied. Source: RDS user
# guide, USER_Events.Messages.html (DB instance events: availability, failover, failure,
# low storage, maintenance, among others).
RDS_EVENT_CATEGORIES = ("availability", "failover", "failure", "low storage", "maintenance")
# ElastiCache events EventBridge receives directly. Source: EventBridge events reference,
# events-ref-elasticache.html.
CACHE_EVENT_TYPES = ("Cache Update Failed", "Cache Updated", "Cache Limit Approaching",
                     "Snapshot Creation Failed")


def alarm_name(prefix: str, role: str) -> str:
    """Physical name of the alarm ``role`` under ``prefix`` (unique per account and Region).

    The ECS service names its deployment alarms before they exist: the alarms need the
    service's name for their dimensions, so the names are fixed up front instead.
    """
    return f"{prefix}-{role}"


@dataclass(frozen=True)
class ObservabilityArgs:
    """Inputs of :class:`Observability`. Thresholds default to docs/targets.md's."""

    load_balancer_arn_suffix: pulumi.Input[str]
    """``app/<name>/<id>`` (CloudWatch ``LoadBalancer``). Required. Example: ``lb.arn_suffix``."""

    target_group_arn_suffix: pulumi.Input[str]
    """``targetgroup/<name>/<id>`` (``TargetGroup``). Required.
    Example: ``lb.target_group_arn_suffix``."""

    cluster_name: pulumi.Input[str]
    """ECS cluster name. Required. Example: ``svc.cluster_name``."""

    service_name: pulumi.Input[str]
    """ECS service name. Required. Example: ``svc.service_name``."""

    db_identifier: pulumi.Input[str]
    """RDS ``DBInstanceIdentifier``. Required. Example: ``db.identifier``."""

    db_storage_gb: int
    """Initial allocated storage (GiB), where storage autoscaling first triggers.
    Required. Example: ``20``."""

    db_max_storage_gb: int
    """Storage autoscaling ceiling (GiB), the free-storage alarm's denominator. Required.
    Example: ``100``."""

    db_max_connections: int
    """``max_connections`` of the database; caps the connection alarm at 80 % of it.
    Required. Example: ``200``."""

    cache_member_ids: Sequence[str]
    """ElastiCache member cluster IDs (``CacheClusterId``). Required.
    Example: ``cache.member_cluster_ids``."""

    alternate_target_group_arn_suffix: pulumi.Input[str] | None = None
    """The blue/green alternate target group's suffix. Production traffic moves between
    the two on every deployment, so the host-count alarms add both up. ``None``: one
    target group. Default: ``None``. Example: ``lb.alternate_target_group_arn_suffix``."""

    prometheus_workspace_arn: pulumi.Input[str] | None = None
    """AMP workspace whose alerts (the VPS profile's API rules) go to the alarm topic
    too, through the workspace's alert manager. ``None``: no AMP alerts. Default:
    ``None``. Example: ``metrics.workspace_arn``."""

    prometheus_workspace_id: pulumi.Input[str] | None = None
    """ID of that workspace (``ws-...``); required with ``prometheus_workspace_arn``.
    Default: ``None``. Example: ``metrics.workspace_id``."""

    alarm_name_prefix: str = ""
    """Physical alarm names are ``<prefix>-<role>`` (see :func:`alarm_name`), so the ECS
    service can name its deployment alarms. Empty: Pulumi names them. Default: ``""``.
    Example: ``"prodstack-prod"``."""

    min_replicas: int = 1
    """Running-task alarm: fewer ECS tasks running than this for 3 minutes (crash loop,
    capacity). Default: ``1``. Example: ``3``."""

    alarm_email: str = ""
    """Address subscribed to the alarm topic (confirm the email AWS sends). Empty means no
    subscription. Default: ``""``. Example: ``"ops@example.com"``."""

    error_rate_percent: float = 1.0
    """HighErrorRate: 5xx share of requests above this, 2 minutes running (target: < 1 %).
    Default: ``1.0``. Example: ``0.5``."""

    p99_latency_ms: int = 500
    """Target p99 response time ceiling (target: p99 < 500 ms). Default: ``500``.
    Example: ``300``."""

    cpu_percent: int = 70
    """ECS and RDS average CPU ceiling (target: CPU < 70 %). Default: ``70``. Example: ``80``."""

    memory_percent: int = 80
    """ECS average memory ceiling (target: memory < 80 %). Default: ``80``. Example: ``85``."""

    db_connections: int = 150
    """RDS connection ceiling (target: DB connections < 150). Default: ``150``. Example: ``300``."""

    db_free_storage_percent: float | None = None
    """Alarm when free storage falls under this percentage of the storage ceiling
    (``db_max_storage_gb``), computed in metric math. RDS publishes no metric of the
    allocated size, which autoscaling keeps growing, so the ceiling is the one fixed
    denominator, and the threshold means the same after every growth. It must lie
    below the point where storage autoscaling acts (free at 10 % of the allocation, at
    the least ``db_storage_gb``), so a routine autoscale never fires it; it fires when
    autoscaling cannot keep up or has reached the ceiling. Default: ``None``, half that
    point: ``5 * db_storage_gb / db_max_storage_gb`` (1 % at the stacks' 5x ceiling).
    Example: ``0.5``."""

    cache_memory_percent: int = 90
    """Redis memory ceiling (target: Redis memory < 90 %). Default: ``90``. Example: ``80``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every taggable child. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        if self.alarm_email and not EMAIL_RE.match(self.alarm_email):
            raise ValueError(f"ObservabilityArgs: alarm_email={self.alarm_email!r}: not an email")
        if self.min_replicas < 1:
            raise ValueError(f"ObservabilityArgs: min_replicas={self.min_replicas}: at least 1")
        if (self.prometheus_workspace_arn is None) != (self.prometheus_workspace_id is None):
            raise ValueError("ObservabilityArgs: prometheus_workspace_arn and "
                             "prometheus_workspace_id go together")
        if not 0 < self.db_storage_gb <= self.db_max_storage_gb:
            raise ValueError(
                f"ObservabilityArgs: db_max_storage_gb={self.db_max_storage_gb}: at least "
                f"db_storage_gb ({self.db_storage_gb})"
            )
        trigger = self.autoscale_trigger_percent
        if self.db_free_storage_percent is not None and not (
            0 < self.db_free_storage_percent < trigger
        ):
            raise ValueError(
                f"ObservabilityArgs: db_free_storage_percent={self.db_free_storage_percent}: "
                f"above 0 and below {trigger:.2f} (where storage autoscaling acts, as a "
                "percentage of the ceiling)"
            )

    @property
    def autoscale_trigger_percent(self) -> float:
        """Free storage at which autoscaling acts on the initial allocation, as a
        percentage of the ceiling: 10 % of ``db_storage_gb``. Source: RDS user guide
        USER_PIOPS.Autoscaling ("free available space is less than or equal to 10
        percent of the allocated storage")."""
        return 10 * self.db_storage_gb / self.db_max_storage_gb

    @property
    def free_storage_percent(self) -> float:
        """Threshold of the free-storage alarm, percent of the ceiling."""
        if self.db_free_storage_percent is not None:
            return self.db_free_storage_percent
        return round(self.autoscale_trigger_percent / 2, 2)

    @property
    def effective_db_connections(self) -> int:
        """Connection threshold actually used: the target's 150, or 80 % of max_connections."""
        return min(self.db_connections, int(self.db_max_connections * 0.8))


class Observability(pulumi.ComponentResource):
    """CloudWatch alarms for the targets, wired to an SNS topic, plus one dashboard.

    Creates:
        ``{name}-key`` (KMS key CloudWatch may use), ``{name}-alarms`` (SNS topic),
        ``{name}-email`` (optional subscription), alarms ``{name}-high-error-rate``,
        ``-p99-latency``, ``-healthy-hosts``, ``-deploy-healthy-hosts`` (what deployments
        roll back on; missing data not breaching, notifies nobody), ``-unhealthy-hosts``,
        ``-running-tasks``,
        ``-ecs-cpu``, ``-ecs-memory``, ``-rds-cpu``, ``-rds-free-storage``,
        ``-rds-connections``, ``-cache-memory-<i>``, ``-cache-evictions-<i>``, and
        ``{name}-dashboard``; ``{name}-alarms-policy`` (CloudWatch alarms, EventBridge
        rules and RDS events of this account may publish to the topic);
        ``{name}-rds-events`` (RDS event subscription: availability, failover, failure,
        low storage, maintenance) and ``{name}-cache-events`` + ``-target`` (ElastiCache
        events through EventBridge). With a Prometheus workspace: the policy admits it
        too, and ``{name}-alertmanager`` sends the workspace's alerts (the API rules,
        the data-tier rules on the API's readiness gauges, tasks gone silent) to the
        topic, grouped as on the VPS profile.

    Silence is an alarm:
        When every task crash-loops, the ALB's request metrics go missing, so the
        error-rate alarm (missing = not breaching) stays quiet. ``-healthy-hosts`` (no
        healthy target, missing = breaching) and ``-running-tasks`` (ECS Container
        Insights, missing = breaching) fire instead. The error rate divides by
        ``RequestCount`` plus ELB 5xx, because requests the ALB answers itself (no
        target to pick) are not in ``RequestCount``.

    Example:
        ``Observability("app-obs", ObservabilityArgs(load_balancer_arn_suffix=lb.arn_suffix,
        ..., alarm_email="ops@example.com"))``

    Cost:
        $0.10 per standard alarm-month (p99 and metric-math alarms $0.30): ~10-12 alarms
        -> **~$1.5/month**; dashboard $3/month beyond the free three; KMS key $1/month.

    Secure defaults:
        The topic is encrypted with a customer-managed KMS key (CloudWatch cannot publish
        to a topic using the AWS-managed ``aws/sns`` key) with rotation on.

    Opt-outs:
        ``alarm_email=""`` (alarms still fire to the topic).
    """

    topic_arn: pulumi.Output[str]
    """SNS topic receiving alarm and OK notifications."""
    dashboard_url: pulumi.Output[str]
    """Console URL of the dashboard."""
    alarm_names: list[str]
    """Logical names of the alarms created."""
    physical_alarm_names: list[pulumi.Output[str]]
    """Their names in CloudWatch (what `prodstack status` asks about)."""
    deployment_alarm_names: list[pulumi.Output[str]]
    """Physical names of the alarms an ECS deployment rolls back on (5xx, healthy hosts)."""

    def __init__(
        self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:observability:Observability", name, None, opts)
        self._name = name
        self._args = args
        self._region = aws.get_region(opts=pulumi.InvokeOptions(parent=self)).region
        self._create_topic()
        self._create_topic_policy()
        self._create_data_tier_events()
        self.alarm_names = []
        self.physical_alarm_names = []
        self._alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        self._create_alarms()
        self.deployment_alarm_names = [self._alarms[r].name for r in DEPLOYMENT_ALARM_ROLES]
        self._create_dashboard()
        if args.prometheus_workspace_arn is not None:
            self._create_alertmanager()
        self.register_outputs(
            {
                "topic_arn": self.topic_arn,
                "dashboard_url": self.dashboard_url,
                "alarm_names": self.alarm_names,
                "physical_alarm_names": self.physical_alarm_names,
                "deployment_alarm_names": self.deployment_alarm_names,
            }
        )

    def _tags(self, role: str) -> dict[str, str]:
        return merge_tags(self._args.tags, role)

    def _create_topic(self) -> None:
        n = self._name
        account = aws.get_caller_identity(opts=pulumi.InvokeOptions(parent=self)).account_id
        key = aws.kms.Key(
            f"{n}-key",
            description="prodstack alarm topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AccountAdmin",
                            "Effect": "Allow",
                            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                            "Action": "kms:*",
                            "Resource": "*",
                        },
                        {
                            "Sid": "CloudWatchAlarms",
                            "Effect": "Allow",
                            "Principal": {"Service": "cloudwatch.amazonaws.com"},
                            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            "Resource": "*",
                            # Only alarms of this account and Region may use the key
                            # (confused deputy). Source: Amazon SNS developer guide,
                            # sns-key-management.html#compatibility-with-aws-services;
                            # IAM user guide, confused-deputy.html.
                            "Condition": source_conditions(
                                account=account,
                                source_arn=f"arn:aws:cloudwatch:{self._region}:{account}:alarm:*",
                            ),
                        },
                        *self._prometheus_key_grant(account),
                        *self._event_key_grants(account),
                    ],
                }
            ),
            tags=self._tags("key"),
            opts=child_opts(self),
        )
        topic = aws.sns.Topic(
            f"{n}-alarms",
            kms_master_key_id=key.arn,
            tags=self._tags("alarms"),
            opts=child_opts(self),
        )
        self.topic = topic
        self._account = account
        self.topic_arn = topic.arn
        if self._args.alarm_email:
            aws.sns.TopicSubscription(
                f"{n}-email",
                topic=topic.arn,
                protocol="email",
                endpoint=self._args.alarm_email,
                opts=child_opts(self),
            )

    def _event_key_grants(self, account: str) -> list[dict]:
        """EventBridge rules (ElastiCache and AWS Backup events) and RDS event
        subscriptions of this account and Region may use the topic's key. Sources:
        EventBridge user guide, eb-use-resource-based.html (an SNS target encrypted with
        a customer managed key needs kms:Decrypt and kms:GenerateDataKey for
        events.amazonaws.com); RDS user guide, USER_Events.Subscribing.html (encrypted
        topics: the same for events.rds.amazonaws.com)."""
        return [{
            "Sid": sid,
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": source_conditions(account=account, source_arn=source_arn),
        } for sid, service, source_arn in self._event_publishers(account)]

    def _event_publishers(self, account: str) -> list[tuple[str, str, str]]:
        """(Sid, service principal, source ARN pattern) of the services that publish data
        tier events to the topic."""
        region = self._region
        return [
            ("EventBridgeRules", "events.amazonaws.com",
             f"arn:aws:events:{region}:{account}:rule/*"),
            # The source is the database (or the subscription) raising the event.
            ("RdsEvents", "events.rds.amazonaws.com", f"arn:aws:rds:{region}:{account}:*"),
        ]

    def _prometheus_key_grant(self, account: str) -> list[dict]:
        """The AMP workspaces of this account and Region may use the topic's key.
        Source: AMP user guide, AMP-alertmanager-receiver-AMPpermission.html (an
        encrypted topic needs kms:GenerateDataKey* and kms:Decrypt for aps)."""
        if self._args.prometheus_workspace_arn is None:
            return []
        return [{
            "Sid": "PrometheusAlerts",
            "Effect": "Allow",
            "Principal": {"Service": "aps.amazonaws.com"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": source_conditions(
                account=account,
                source_arn=f"arn:aws:aps:{self._region}:{account}:workspace/*",
            ),
        }]

    def _create_topic_policy(self) -> None:
        n, a, region, account = self._name, self._args, self._region, self._account
        # Who may publish to the topic: this account's CloudWatch alarms, its EventBridge
        # rules and RDS events, and the Prometheus workspace; no other account. The policy
        # replaces the default one, whose account-wide statement let this account's
        # alarms publish, so CloudWatch is named too. Sources: SNS developer guide,
        # sns-access-policy-use-cases.html (a service publishing, with aws:SourceArn and
        # aws:SourceAccount); EventBridge user guide, eb-use-resource-based.html#eb-sns-
        # permissions; RDS user guide, USER_Events.GrantingPermissions.html; AMP user
        # guide, AMP-alertmanager-receiver-AMPpermission.html (sns:Publish and
        # sns:GetTopicAttributes for aps.amazonaws.com).
        publishers = [("CloudWatchAlarms", "cloudwatch.amazonaws.com",
                       f"arn:aws:cloudwatch:{region}:{account}:alarm:*"),
                      *self._event_publishers(account)]

        def document(v: list) -> str:
            statements = [{
                "Sid": sid,
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sns:Publish",
                "Resource": v[0],
                "Condition": source_conditions(account=account, source_arn=source_arn),
            } for sid, service, source_arn in publishers]
            if v[1] is not None:
                statements.append({
                    "Sid": "PrometheusAlerts",
                    "Effect": "Allow",
                    "Principal": {"Service": "aps.amazonaws.com"},
                    "Action": ["sns:Publish", "sns:GetTopicAttributes"],
                    "Resource": v[0],
                    "Condition": source_conditions(account=account, source_arn=v[1]),
                })
            return json.dumps({"Version": "2012-10-17", "Statement": statements})

        self.topic_policy = aws.sns.TopicPolicy(
            f"{n}-alarms-policy",
            arn=self.topic.arn,
            policy=pulumi.Output.all(self.topic.arn, a.prometheus_workspace_arn).apply(document),
            opts=child_opts(self),
        )

    def _create_data_tier_events(self) -> None:
        """RDS and ElastiCache events to the topic: failures, failovers, low storage and
        maintenance, which no metric alarm sees (a failover shows only as seconds of
        errors)."""
        n, a = self._name, self._args
        # Source: pulumi_aws rds.EventSubscription (`sns_topic`, `source_type`,
        # `source_ids`, `event_categories`); botocore rds CreateEventSubscriptionMessage
        # .SourceType (db-instance); RDS user guide, USER_Events.Messages.html (the
        # db-instance categories).
        aws.rds.EventSubscription(
            f"{n}-rds-events",
            sns_topic=self.topic_arn,
            source_type="db-instance",
            source_ids=[a.db_identifier],
            event_categories=list(RDS_EVENT_CATEGORIES),
            tags=self._tags("rds-events"),
            opts=child_opts(self, depends_on=[self.topic_policy]),
        )
        # ElastiCache cannot publish to an encrypted topic (ElastiCache user guide,
        # ElastiCacheSNS.html), so its events come through EventBridge. The rule matches
        # the Region's ElastiCache events of these types (the event detail's fields are
        # not documented beyond the type names, so no filter on the group).
        # Source: EventBridge events reference, events-ref-elasticache.html.
        rule = aws.cloudwatch.EventRule(
            f"{n}-cache-events",
            description="ElastiCache failures, updates and limits",
            event_pattern=json.dumps({"source": ["aws.elasticache"],
                                      "detail-type": list(CACHE_EVENT_TYPES)}),
            tags=self._tags("cache-events"),
            opts=child_opts(self),
        )
        aws.cloudwatch.EventTarget(
            f"{n}-cache-events-target", rule=rule.name, arn=self.topic_arn,
            opts=child_opts(self, depends_on=[self.topic_policy]))

    def _create_alertmanager(self) -> None:
        n, a, region = self._name, self._args, self._region
        policy = self.topic_policy

        def definition(topic_arn: str) -> str:
            # AMP's alert manager takes Alertmanager's own configuration under
            # `alertmanager_config`, with an SNS receiver signed for the Region. Source:
            # AMP user guide, AMP-alertmanager-config.html and
            # AMP-alertmanager-receiver-config.html (sns_configs, sigv4.region).
            config = {
                # Grouped as the VPS profile's Alertmanager groups them
                # (pyinfra/templates/alertmanager.j2.yml).
                "route": {"receiver": "alarm-topic", "group_by": ["alertname", "host"],
                          "group_wait": "10s", "group_interval": "30s",
                          "repeat_interval": "12h",
                          "routes": [{"matchers": ['severity="critical"'],
                                      "repeat_interval": "1h"}]},
                # No inhibit rules: the VPS profile's inhibits on ApiAllReplicasDown,
                # which the workspace does not run (components/metrics.py VPS_ONLY_RULES);
                # with every task gone no API series reaches it to alert on anyway.
                "receivers": [{"name": "alarm-topic", "sns_configs": [{
                    "topic_arn": topic_arn, "sigv4": {"region": region},
                    "send_resolved": True}]}],
            }
            # A literal block, so plans and diffs show the configuration line by line.
            body = yaml.safe_dump(config, sort_keys=False)
            return "alertmanager_config: |\n" + "".join(
                f"  {line}\n" for line in body.splitlines())

        aws.amp.AlertManagerDefinition(
            f"{n}-alertmanager",
            workspace_id=a.prometheus_workspace_id,
            definition=self.topic.arn.apply(definition),
            opts=child_opts(self, depends_on=[policy]),
        )

    def _alarm(self, role: str, description: str, *, notify: bool = True, **kwargs) -> None:
        # period must be 10, 20, 30 or a multiple of 60; statistic and extended_statistic
        # are exclusive. Source: botocore cloudwatch PutMetricAlarmInput. A metric-math
        # alarm sets its period per query and may not set period, metric_name, namespace
        # or statistic (pulumi_aws cloudwatch.MetricAlarm, `metric_queries`).
        if "metric_queries" not in kwargs:
            kwargs.setdefault("period", 60)
        kwargs.setdefault("treat_missing_data", "notBreaching")
        if self._args.alarm_name_prefix:
            kwargs["name"] = alarm_name(self._args.alarm_name_prefix, role)
        actions = [self.topic_arn] if notify else None
        tags = self._tags(role) | ({} if notify else {DEPLOYMENT_ALARM_TAG: DEPLOYMENT_ALARM_USE})
        self._alarms[role] = aws.cloudwatch.MetricAlarm(
            f"{self._name}-{role}",
            alarm_description=description,
            alarm_actions=actions,
            ok_actions=actions,
            tags=tags,
            opts=child_opts(self),
            **kwargs,
        )
        self.alarm_names.append(f"{self._name}-{role}")
        self.physical_alarm_names.append(self._alarms[role].name)

    def _create_alarms(self) -> None:
        a = self._args
        lb = {"LoadBalancer": a.load_balancer_arn_suffix}
        target_groups = [a.target_group_arn_suffix]
        if a.alternate_target_group_arn_suffix is not None:
            target_groups.append(a.alternate_target_group_arn_suffix)
        ecs = {"ClusterName": a.cluster_name, "ServiceName": a.service_name}
        rds = {"DBInstanceIdentifier": a.db_identifier}
        # Namespaces/dimensions: aws-cdk *-canned-metrics.generated.ts (elbv2, ecs, rds,
        # elasticache); (Un)HealthyHostCount need LoadBalancer + TargetGroup.

        def metric(metric_id: str, metric_name: str, dimensions: dict, stat: str) -> dict:
            return {
                "id": metric_id,
                "metric": {
                    "namespace": "AWS/ApplicationELB",
                    "metric_name": metric_name,
                    "dimensions": dimensions,
                    "period": 60,
                    "stat": stat,
                },
            }

        def over_target_groups(metric_name: str, label: str) -> list[dict]:
            """``metric_name`` of every target group, added up (blue + green)."""
            ids = [f"tg{i}" for i in range(len(target_groups))]
            queries = [metric(i, metric_name, lb | {"TargetGroup": tg}, "Minimum"
                              if metric_name == "HealthyHostCount" else "Maximum")
                       for i, tg in zip(ids, target_groups, strict=True)]
            total = " + ".join(f"FILL({i}, 0)" for i in ids)
            return [*queries, {"id": "total", "expression": total, "label": label,
                               "return_data": True}]

        # RequestCount counts only requests the ALB could send to a target; the ones it
        # answers itself with a 5xx (no healthy target) are in HTTPCode_ELB_5XX_Count only.
        # Source: ELB user guide, load-balancer-cloudwatch-metrics.html (RequestCount).
        self._alarm(
            "high-error-rate",
            f"HighErrorRate: 5xx above {a.error_rate_percent}% of requests for 2 minutes",
            comparison_operator="GreaterThanThreshold",
            threshold=a.error_rate_percent,
            evaluation_periods=2,
            metric_queries=[
                metric("elb5xx", "HTTPCode_ELB_5XX_Count", lb, "Sum"),
                metric("target5xx", "HTTPCode_Target_5XX_Count", lb, "Sum"),
                metric("requests", "RequestCount", lb, "Sum"),
                {
                    "id": "error_rate",
                    "expression": "100 * (FILL(elb5xx, 0) + FILL(target5xx, 0))"
                                  " / (FILL(requests, 0) + FILL(elb5xx, 0))",
                    "label": "5xx %",
                    "return_data": True,
                },
            ],
        )
        self._alarm(
            "p99-latency",
            f"Target p99 response time above {a.p99_latency_ms} ms",
            namespace="AWS/ApplicationELB", metric_name="TargetResponseTime", dimensions=lb,
            extended_statistic="p99", comparison_operator="GreaterThanThreshold",
            threshold=a.p99_latency_ms / 1000, evaluation_periods=5,
        )
        self._alarm(
            "healthy-hosts",
            "No healthy target behind the load balancer (tasks crash-looping or stopped)",
            comparison_operator="LessThanThreshold", threshold=1, evaluation_periods=2,
            # No data at all means no target group reporting: as bad as zero.
            treat_missing_data="breaching",
            metric_queries=over_target_groups("HealthyHostCount", "healthy targets"),
        )
        # What deployments roll back on: the same count, but missing data (no target group
        # reporting: every task gone before the deployment, or the new group not yet
        # reporting) is not a breach, so a fix-forward deployment during an outage is not
        # rolled back for the outage it fixes. Zero healthy targets still breaches. No
        # FILL: a filled gap would be a 0, a breach whatever the missing-data setting.
        # It notifies nobody; `healthy-hosts` does. Source: ECS developer guide,
        # deployment-failure-detection.html (a deployment watches its alarms' state);
        # botocore cloudwatch PutMetricAlarmInput.TreatMissingData.
        deploy_queries = [q for q in over_target_groups("HealthyHostCount", "healthy targets")
                          if "metric" in q]
        ids = [q["id"] for q in deploy_queries]
        self._alarm(
            "deploy-healthy-hosts",
            "Deployment rollback: no healthy target in a target group that reports "
            "(missing data is not a breach)",
            notify=False,
            comparison_operator="LessThanThreshold", threshold=1, evaluation_periods=2,
            treat_missing_data="notBreaching",
            metric_queries=[*deploy_queries, {
                "id": "total", "label": "healthy targets", "return_data": True,
                "expression": ids[0] if len(ids) == 1 else f"SUM([{', '.join(ids)}])"}],
        )
        self._alarm(
            "unhealthy-hosts",
            "At least one target is failing its /health/live check",
            comparison_operator="GreaterThanThreshold", threshold=0, evaluation_periods=2,
            metric_queries=over_target_groups("UnHealthyHostCount", "unhealthy targets"),
        )
        # Container Insights (on for the cluster) publishes RunningTaskCount per service.
        # Source: CloudWatch user guide, Container-Insights-metrics-ECS.html (namespace
        # ECS/ContainerInsights, dimensions ClusterName + ServiceName).
        self._alarm(
            "running-tasks", f"Fewer than {a.min_replicas} ECS tasks running for 3 minutes",
            namespace="ECS/ContainerInsights", metric_name="RunningTaskCount",
            dimensions=ecs, statistic="Minimum", comparison_operator="LessThanThreshold",
            threshold=a.min_replicas, evaluation_periods=3, treat_missing_data="breaching",
        )
        for role, metric_name, threshold in (
            ("ecs-cpu", "CPUUtilization", a.cpu_percent),
            ("ecs-memory", "MemoryUtilization", a.memory_percent),
        ):
            self._alarm(
                role, f"ECS service {metric_name} above {threshold}%",
                namespace="AWS/ECS", metric_name=metric_name, dimensions=ecs,
                statistic="Average", comparison_operator="GreaterThanThreshold",
                threshold=threshold, evaluation_periods=5,
            )
        self._alarm(
            "rds-cpu", f"RDS CPU above {a.cpu_percent}%",
            namespace="AWS/RDS", metric_name="CPUUtilization", dimensions=rds,
            statistic="Average", comparison_operator="GreaterThanThreshold",
            threshold=a.cpu_percent, evaluation_periods=5,
        )
        ceiling_bytes = a.db_max_storage_gb * GIB
        self._alarm(
            "rds-free-storage",
            f"RDS free storage under {a.free_storage_percent}% of its "
            f"{a.db_max_storage_gb} GiB autoscaling ceiling",
            comparison_operator="LessThanThreshold",
            threshold=a.free_storage_percent,
            evaluation_periods=1,
            metric_queries=[
                {
                    "id": "free",
                    "metric": {
                        "namespace": "AWS/RDS",
                        "metric_name": "FreeStorageSpace",
                        "dimensions": rds,
                        "period": 300,
                        "stat": "Minimum",
                    },
                },
                {
                    "id": "free_pct",
                    "expression": f"100 * free / {ceiling_bytes}",
                    "label": "free storage, % of the ceiling",
                    "return_data": True,
                },
            ],
        )
        self._alarm(
            "rds-connections", f"RDS connections above {a.effective_db_connections}",
            namespace="AWS/RDS", metric_name="DatabaseConnections", dimensions=rds,
            statistic="Maximum", comparison_operator="GreaterThanThreshold",
            threshold=a.effective_db_connections, evaluation_periods=3,
        )
        for i, member in enumerate(a.cache_member_ids):
            cache = {"CacheClusterId": member}
            self._alarm(
                f"cache-memory-{i}", f"Redis {member} memory above {a.cache_memory_percent}%",
                namespace="AWS/ElastiCache", metric_name="DatabaseMemoryUsagePercentage",
                dimensions=cache, statistic="Maximum",
                comparison_operator="GreaterThanThreshold",
                threshold=a.cache_memory_percent, evaluation_periods=3,
            )
            self._alarm(
                f"cache-evictions-{i}", f"Redis {member} is evicting keys",
                namespace="AWS/ElastiCache", metric_name="Evictions", dimensions=cache,
                statistic="Sum", comparison_operator="GreaterThanThreshold", threshold=0,
                evaluation_periods=1, period=300,
            )

    def _create_dashboard(self) -> None:
        a, region = self._args, self._region

        def widget(title: str, metrics: list, x: int, y: int) -> dict:
            return {
                "type": "metric", "x": x, "y": y, "width": 12, "height": 6,
                "properties": {"title": title, "region": region, "metrics": metrics,
                               "view": "timeSeries", "stat": "Average", "period": 60},
            }

        lb = a.load_balancer_arn_suffix
        # One line per target group: blue/green serves production from either in turn.
        target_groups = [a.target_group_arn_suffix] + (
            [a.alternate_target_group_arn_suffix]
            if a.alternate_target_group_arn_suffix is not None else [])
        body = {
            "widgets": [
                widget("Requests and 5xx", [
                    ["AWS/ApplicationELB", "RequestCount", "LoadBalancer", lb, {"stat": "Sum"}],
                    [".", "HTTPCode_Target_5XX_Count", ".", ".", {"stat": "Sum"}],
                    [".", "HTTPCode_ELB_5XX_Count", ".", ".", {"stat": "Sum"}],
                ], 0, 0),
                widget("Target latency p99", [
                    ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", lb,
                     "TargetGroup", tg, {"stat": "p99", "label": f"p99, target group {i + 1}"}]
                    for i, tg in enumerate(target_groups)
                ], 12, 0),
                widget("ECS CPU / memory", [
                    ["AWS/ECS", "CPUUtilization", "ClusterName", a.cluster_name,
                     "ServiceName", a.service_name],
                    [".", "MemoryUtilization", ".", ".", ".", "."],
                ], 0, 6),
                widget("RDS", [
                    ["AWS/RDS", "CPUUtilization", "DBInstanceIdentifier", a.db_identifier],
                    [".", "DatabaseConnections", ".", "."],
                ], 12, 6),
                widget("Redis memory %", [
                    ["AWS/ElastiCache", "DatabaseMemoryUsagePercentage", "CacheClusterId", m]
                    for m in a.cache_member_ids
                ], 0, 12),
            ]
        }
        dashboard = aws.cloudwatch.Dashboard(
            f"{self._name}-dashboard",
            dashboard_name=self._name,
            dashboard_body=pulumi.Output.json_dumps(body),
            opts=child_opts(self),
        )
        self.dashboard_url = pulumi.Output.concat(
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            "#dashboards:name=",
            dashboard.dashboard_name,
        )
