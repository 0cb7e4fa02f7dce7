"""Every security and reliability default, weakened one at a time, turns a NAMED rule red.

The recorded prod manifest (the session's ``prod`` fixture; the Pulumi program is not run
again) is deep-copied per weakening, one change is applied, and the policy named in the
table must report a violation that names the weakened resource. A snapshot would only
say "something changed"; these say which invariant broke. The unweakened manifest passes
every rule, and every rule of the pack has at least one weakening here.

Paths walk a resource record: ``inputs.a.b.0`` (list index), ``rules.name=aws-common``
(the list item whose ``name`` is ``aws-common``; in brackets when the value holds a dot,
``[name=rds.force_ssl]``), ``policy$`` (the field holds JSON text:
decode, change, encode again) and ``+`` (append to a list). Paths without a leading
``inputs.``/``property_dependencies.`` are inputs. Deleting a top-level input also drops
its property dependency, as removing the argument from the program would.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from prodstack_cloud_harness import Manifest, run_all, run_policy

from policies import all_policies

DELETE = object()  # the change removes the key / list item
DROP = "<drop>"  # the weakening removes the whole resource
ADD = "<add>"  # the weakening adds a resource (``add`` holds it)

CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
API = "containerDefinitions$.name=api"
MIGRATE = "containerDefinitions$.name=migrate"
COLLECTOR = "containerDefinitions$.name=metrics-collector"
TRACKING = "targetTrackingScalingPolicyConfiguration"
REQUEST_MATH = f"{TRACKING}.customizedMetricSpecification.metrics"


@dataclass(frozen=True)
class Weakening:
    rule: str
    """Name of the policy that must go red."""
    resource: str
    """Resource changed, dropped or added (by name)."""
    changes: dict[str, Any] = field(default_factory=dict)
    """Path -> new value (or DELETE). Empty with ``op``."""
    op: str = ""
    """``DROP`` or ``ADD``."""
    add: dict[str, Any] | None = None
    """For ``ADD``: ``type``, ``inputs`` and ``property_dependencies`` of the new resource."""
    reported_on: str | None = None
    """Resource the violation names when it is not ``resource`` (``""``: none)."""
    why: str = ""
    """What the weakening does, in words (the test id)."""
    manifest: str = "prod"
    """Session fixture of the manifest weakened: ``prod``, or ``prod_proxy`` (prod with
    ``rds_proxy: true``) for what exists only with the proxy."""


def _sg_rule(name: str, group: str, **inputs: Any) -> dict[str, Any]:
    return {"type": "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
            "inputs": {"securityGroupId": f"{group}-id", **inputs},
            "property_dependencies": {
                "securityGroupId": [f"aws:ec2/securityGroup:SecurityGroup::{group}"]}}


W = Weakening
SG = "aws:ec2/securityGroup:SecurityGroup::prodstack-net-"


def P(rule: str, resource: str, changes: dict[str, Any] | None = None, **kw: Any) -> Weakening:
    """A weakening of what ``rds_proxy: true`` adds, on the proxied prod manifest."""
    return Weakening(rule, resource, changes or {}, manifest="prod_proxy", **kw)


WEAKENINGS = [
    # ---- WAF
    W("waf-managed-rules-enforced", "prodstack-waf-acl",
      {"rules.name=aws-common.overrideAction": {"count": {}}}, why="common-group-count-mode"),
    W("waf-managed-rules-enforced", "prodstack-waf-acl",
      {"rules.name=aws-known-bad-inputs.overrideAction": {"count": {}}},
      why="bad-inputs-count-mode"),
    W("waf-managed-rules-enforced", "prodstack-waf-acl",
      {"rules.name=aws-ip-reputation": DELETE}, why="ip-reputation-removed"),
    W("waf-managed-rules-enforced", "prodstack-waf-acl",
      {"rules.name=rate-limit-per-ip.action": {"count": {}}}, why="rate-rule-counts"),
    W("waf-managed-rules-enforced", "prodstack-waf-acl",
      {"rules.name=rate-limit-per-ip": DELETE}, why="rate-rule-removed"),
    W("waf-managed-rules-enforced", "prodstack-waf-acl",
      {"rules.name=aws-common.visibilityConfig.cloudwatchMetricsEnabled": False},
      why="rule-metrics-off"),
    W("waf-attached-and-logged", "prodstack-waf-logging", {"redactedFields": []},
      why="token-not-redacted"),
    W("waf-attached-and-logged", "prodstack-cdn-distribution", {"webAclId": DELETE},
      reported_on="prodstack-waf-acl", why="acl-detached"),
    W("waf-attached-and-logged", "prodstack-waf-logging", op=DROP,
      reported_on="prodstack-waf-acl", why="acl-logging-removed"),
    # ---- IAM
    W("iam-least-privilege", "prodstack-api-task-role-admin", op=ADD, add={
        "type": "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "inputs": {"policyArn": ADMIN, "role": "prodstack-api-task-role"},
        "property_dependencies": {"role": ["aws:iam/role:Role::prodstack-api-task-role"]}},
      why="admin-attached-to-task-role"),
    W("iam-least-privilege", "prodstack-api-task-role",
      {"managedPolicyArns": ["arn:aws:iam::aws:policy/PowerUserAccess"]},
      why="power-user-on-task-role"),
    W("iam-least-privilege", "prodstack-net-flow-logs-policy",
      {"policy$.Statement.0.Resource": "*"}, why="flow-log-policy-resource-star"),
    W("iam-least-privilege", "prodstack-net-flow-logs-policy",
      {"policy$.Statement.0.Action": "logs:*"}, why="flow-log-policy-service-wildcard"),
    W("iam-least-privilege", "prodstack-api-execution-role-secrets",
      {"policy$.Statement.0.Resource": "*"}, why="every-secret-readable"),
    W("iam-least-privilege", "prodstack-api-execution-role-secrets",
      {"policy$.Statement.0.Action": "*:*"}, why="star-star-action"),
    W("iam-least-privilege", "prodstack-api-task-role",
      {"assumeRolePolicy$.Statement.0.Principal": "*"}, why="trust-anyone"),
    W("iam-trust-confused-deputy", "prodstack-api-task-role",
      {"assumeRolePolicy$.Statement.0.Condition": DELETE}, why="task-role-any-account"),
    W("iam-trust-confused-deputy", "prodstack-db-monitoring-role",
      {"assumeRolePolicy$.Statement.0.Condition.ArnLike": DELETE},
      why="monitoring-role-any-instance"),
    W("iam-trust-as-documented", "prodstack-api-ecs-lb-role",
      {"assumeRolePolicy$.Statement.0.Condition": {
          "ArnLike": {"aws:SourceArn": "arn:aws:ecs:eu-west-1:123456789012:*"}}},
      why="ecs-lb-role-trust-conditioned-on-undocumented-keys"),
    W("iam-trust-as-documented", "prodstack-api-ecs-lb-role",
      {"assumeRolePolicy$.Statement.+": {"Effect": "Allow", "Action": "sts:AssumeRole",
                                         "Principal": {"AWS": "arn:aws:iam::999999999999:root"}}},
      why="ecs-lb-role-trusts-another-account"),
    W("kms-service-grant-confused-deputy", "prodstack-prod-obs-key",
      {"policy$.Statement.Sid=CloudWatchAlarms.Condition": DELETE},
      why="key-usable-by-any-accounts-alarms"),
    # ---- security groups and subnets
    W("security-group-egress-restricted", "prodstack-net-service-https-out",
      {"ipProtocol": "-1"}, why="service-egress-all-protocols"),
    W("security-group-egress-restricted", "prodstack-net-service-https-out",
      {"fromPort": 0, "toPort": 65535}, why="service-egress-all-ports"),
    W("security-group-egress-restricted", "prodstack-net-service-to-database-out",
      {"referencedSecurityGroupId": DELETE, "cidrIpv4": "0.0.0.0/0"},
      why="database-port-to-the-world"),
    W("security-group-egress-restricted", "prodstack-net-database-out", op=ADD,
      add=_sg_rule("prodstack-net-database-out", "prodstack-net-database-sg",
                   ipProtocol="tcp", fromPort=443, toPort=443, cidrIpv4="0.0.0.0/0"),
      why="database-group-gets-egress"),
    W("security-group-egress-restricted", "prodstack-net-service-sg",
      {"egress": [{"protocol": "-1", "fromPort": 0, "toPort": 0,
                   "cidrBlocks": ["0.0.0.0/0"]}]}, why="inline-allow-all-egress"),
    W("security-group-ingress-named-sources", "prodstack-net-service-to-database-in",
      {"referencedSecurityGroupId": DELETE, "cidrIpv4": "10.0.0.0/8"},
      why="database-open-to-the-vpc-range"),
    W("security-group-ingress-named-sources", "prodstack-net-service-to-cache-in",
      {"ipProtocol": "-1"}, why="cache-ingress-all-protocols"),
    W("security-group-ingress-named-sources", "prodstack-net-default-sg",
      {"ingress": [{"protocol": "-1", "fromPort": 0, "toPort": 0, "self": True}]},
      why="default-sg-keeps-aws-rules"),
    W("no-world-open-security-groups", "prodstack-net-alb-in-443",
      {"prefixListId": DELETE, "cidrIpv4": "0.0.0.0/0"}, why="alb-open-despite-cdn"),
    W("security-group-ingress-named-sources", "prodstack-net-service-to-database-in",
      {"referencedSecurityGroupId": "prodstack-net-alb-sg-id",
       "property_dependencies.referencedSecurityGroupId": [
           "aws:ec2/securityGroup:SecurityGroup::prodstack-net-alb-sg"]},
      why="database-open-to-the-alb"),
    W("data-subnets-isolated", "prodstack-db-subnets",
      {"subnetIds.0": "prodstack-net-public-0-id",
       "property_dependencies.subnetIds.0": "aws:ec2/subnet:Subnet::prodstack-net-public-0"},
      why="database-in-a-public-subnet"),
    W("data-subnets-isolated", "prodstack-net-isolated-out", op=ADD, add={
        "type": "aws:ec2/route:Route",
        "inputs": {"destinationCidrBlock": "0.0.0.0/0", "natGatewayId": "prodstack-net-nat-0-id",
                   "routeTableId": "prodstack-net-isolated-rt-id"},
        "property_dependencies": {"routeTableId": [
            "aws:ec2/routeTable:RouteTable::prodstack-net-isolated-rt"]}},
      why="data-subnets-get-a-nat-route"),
    W("subnets-no-auto-public-ip", "prodstack-net-private-0",
      {"mapPublicIpOnLaunch": True}, why="private-subnet-public-ips"),
    W("vpc-flow-logs-in-prod", "prodstack-net-flow-logs", op=DROP,
      reported_on="prodstack-net-vpc", why="flow-logs-removed"),
    W("vpc-flow-logs-in-prod", "prodstack-net-flow-logs", {"trafficType": "REJECT"},
      reported_on="prodstack-net-vpc", why="flow-logs-rejects-only"),
    # ---- log bucket
    W("log-buckets-hardened", "prodstack-lb-logs-ownership",
      {"rule.objectOwnership": "BucketOwnerPreferred"}, reported_on="prodstack-lb-logs",
      why="bucket-back-to-acls"),
    W("log-buckets-hardened", "prodstack-lb-logs", {"acl": "log-delivery-write"},
      why="bucket-canned-acl"),
    W("log-buckets-hardened", "prodstack-lb-logs-public-access",
      {"restrictPublicBuckets": False}, reported_on="prodstack-lb-logs",
      why="public-policies-allowed"),
    W("log-buckets-versioned", "prodstack-lb-logs-versioning",
      {"versioningConfiguration.status": "Suspended"}, reported_on="prodstack-lb-logs",
      why="access-log-versions-suspended"),
    W("log-buckets-versioned", "prodstack-lb-logs-lifecycle",
      {"rules.0.noncurrentVersionExpiration": DELETE}, reported_on="prodstack-lb-logs",
      why="noncurrent-log-versions-kept-forever"),
    W("log-buckets-hardened", "prodstack-lb-logs-lifecycle", {"rules.0.status": "Disabled"},
      reported_on="prodstack-lb-logs", why="logs-never-expire"),
    W("log-buckets-hardened", "prodstack-lb-logs-policy",
      {"policy$.Statement.Sid=DenyInsecureTransport": DELETE},
      reported_on="prodstack-lb-logs", why="plain-http-to-bucket"),
    W("s3-buckets-encrypted", "prodstack-lb-logs-encryption", op=DROP,
      reported_on="prodstack-lb-logs", why="bucket-unencrypted"),
    # ---- RDS
    W("rds-instance-hardened", "prodstack-db-instance", {"autoMinorVersionUpgrade": False},
      why="rds-minor-upgrades-off"),
    W("rds-instance-hardened", "prodstack-db-instance", {"engineVersion": "16.11"},
      why="rds-minor-pinned-with-auto-upgrades"),
    W("rds-instance-hardened", "prodstack-db-instance", {"copyTagsToSnapshot": False},
      why="rds-snapshots-untagged"),
    W("rds-instance-hardened", "prodstack-db-instance", {"caCertIdentifier": "rds-ca-2019"},
      why="rds-expired-ca"),
    W("rds-instance-hardened", "prodstack-db-instance", {"caCertIdentifier": DELETE},
      why="rds-ca-unpinned"),
    W("rds-instance-hardened", "prodstack-db-instance",
      {"enabledCloudwatchLogsExports": ["upgrade"]}, why="rds-postgres-log-not-exported"),
    W("rds-instance-hardened", "prodstack-db-instance", {"manageMasterUserPassword": False},
      why="rds-password-not-managed"),
    W("rds-instance-hardened", "prodstack-db-instance", {"multiAz": False},
      why="rds-single-az-in-prod"),
    W("rds-instance-hardened", "prodstack-db-instance", {"performanceInsightsEnabled": False},
      why="rds-performance-insights-off"),
    W("rds-instance-hardened", "prodstack-db-instance", {"maxAllocatedStorage": DELETE},
      why="rds-storage-fixed"),
    W("encryption-everywhere", "prodstack-db-instance", {"storageEncrypted": False},
      why="rds-unencrypted"),
    W("no-public-database-or-tasks", "prodstack-db-instance", {"publiclyAccessible": True},
      why="rds-public"),
    W("prod-deletion-protection-and-backups", "prodstack-db-instance",
      {"deletionProtection": False}, why="rds-deletable"),
    W("prod-deletion-protection-and-backups", "prodstack-db-instance",
      {"backupRetentionPeriod": 3}, why="rds-short-backups"),
    W("rds-force-ssl", "prodstack-db-params",
      {"parameters.[name=rds.force_ssl].value": "0"}, why="rds-tls-optional"),
    W("rds-enhanced-monitoring", "prodstack-db-instance", {"monitoringInterval": 0},
      why="rds-enhanced-monitoring-off"),
    W("rds-enhanced-monitoring", "prodstack-db-instance", {"monitoringRoleArn": DELETE},
      why="rds-monitoring-without-role"),
    W("rds-iam-auth", "prodstack-db-instance", {"iamDatabaseAuthenticationEnabled": False},
      why="rds-iam-auth-off"),
    W("rds-iam-auth", "prodstack-db-instance",
      {"enabledCloudwatchLogsExports": ["postgresql", "upgrade"]},
      why="iam-auth-failures-not-exported"),
    # ---- cache
    W("cache-hardened", "prodstack-cache-group", {"autoMinorVersionUpgrade": False},
      why="cache-minor-upgrades-off"),
    W("cache-hardened", "prodstack-cache-group", {"snapshotRetentionLimit": 0},
      why="cache-snapshots-off"),
    W("cache-hardened", "prodstack-cache-group", {"transitEncryptionMode": "preferred"},
      why="cache-plaintext-clients"),
    W("cache-hardened", "prodstack-cache-group", {"automaticFailoverEnabled": False},
      why="cache-no-failover"),
    W("cache-hardened", "prodstack-cache-group", {"logDeliveryConfigurations": []},
      why="cache-slow-log-off"),
    W("cache-hardened", "prodstack-cache-params",
      {"parameters.name=maxmemory-policy.value": "noeviction"}, why="cache-no-eviction"),
    W("encryption-everywhere", "prodstack-cache-group", {"transitEncryptionEnabled": False},
      why="cache-plaintext"),
    W("encryption-everywhere", "prodstack-cache-group", {"authToken": DELETE},
      why="cache-no-auth"),
    # ---- alarms
    W("alarms-for-the-targets", "prodstack-prod-obs-rds-connections", op=DROP,
      reported_on="", why="db-connections-alarm-removed"),
    W("alarms-for-the-targets", "prodstack-prod-obs-p99-latency", {"threshold": 2},
      why="p99-alarm-at-2s"),
    W("alarms-for-the-targets", "prodstack-prod-obs-high-error-rate",
      {"metricQueries.id=elb5xx": DELETE}, reported_on="", why="error-rate-without-elb-5xx"),
    W("alarms-for-the-targets", "prodstack-prod-obs-ecs-memory", {"alarmActions": []},
      why="memory-alarm-notifies-nobody"),
    W("alarms-for-the-targets", "prodstack-prod-obs-cache-memory-1", op=DROP,
      reported_on="prodstack-cache-group", why="replica-memory-alarm-removed"),
    W("alarms-for-the-targets", "prodstack-prod-obs-rds-free-storage",
      {"comparisonOperator": "GreaterThanThreshold"}, why="free-storage-alarm-inverted"),
    W("alarms-for-the-targets", "prodstack-prod-obs-unhealthy-hosts", {"threshold": 1},
      why="one-unhealthy-target-tolerated"),
    W("alarms-for-the-targets", "prodstack-prod-obs-rds-cpu", {"actionsEnabled": False},
      why="rds-cpu-alarm-muted"),
    # ---- disaster recovery
    W("backup-vault-encrypted-and-locked", "prodstack-backup-vault", {"kmsKeyArn": DELETE},
      why="vault-on-the-default-key"),
    W("backup-vault-encrypted-and-locked", "prodstack-backup-vault-lock", op=DROP,
      reported_on="prodstack-backup-vault", why="prod-vault-unlocked"),
    W("backup-vault-encrypted-and-locked", "prodstack-backup-vault-lock",
      {"minRetentionDays": 1}, why="lock-lets-points-go-after-a-day"),
    W("backup-tiers-cover-the-database", "prodstack-backup-selection", op=DROP,
      reported_on="prodstack-db-instance", why="database-in-no-backup-selection"),
    W("backup-tiers-cover-the-database", "prodstack-backup-plan",
      {"rules.ruleName=monthly.lifecycle.deleteAfter": 90},
      reported_on="prodstack-db-instance", why="monthly-tier-kept-3-months"),
    W("backup-tiers-cover-the-database", "prodstack-backup-plan",
      {"rules.ruleName=weekly": DELETE}, reported_on="prodstack-db-instance",
      why="weekly-tier-removed"),
    W("restore-drill-alarmed", "prodstack-backup-drill-rds", op=DROP,
      reported_on="prodstack-db-instance", why="no-restore-drill"),
    W("restore-drill-alarmed", "prodstack-backup-drill-missing",
      {"treatMissingData": "notBreaching"}, why="missing-drill-stays-quiet"),
    W("restore-drill-alarmed", "prodstack-backup-drill-failed", {"alarmActions": []},
      why="failed-drill-notifies-nobody"),
    W("data-tier-events-alarmed", "prodstack-prod-obs-rds-events",
      {"eventCategories": ["availability", "maintenance"]},
      reported_on="prodstack-db-instance", why="rds-failover-and-failure-unnotified"),
    W("data-tier-events-alarmed", "prodstack-prod-obs-rds-events", {"enabled": False},
      reported_on="prodstack-db-instance", why="rds-event-subscription-disabled"),
    W("data-tier-events-alarmed", "prodstack-prod-obs-cache-events-target", op=DROP,
      reported_on="", why="cache-events-go-nowhere"),
    W("data-tier-events-alarmed", "prodstack-backup-job-failures-target", op=DROP,
      reported_on="", why="failed-backup-jobs-go-nowhere"),
    W("data-tier-events-alarmed", "prodstack-metrics-rules",
      {"data": "groups: []\n"}, why="no-alert-when-the-api-loses-postgres"),
    W("metrics-alerts-can-fire", "prodstack-metrics-rules",
      {"data": "groups:\n- name: prodstack-api\n  rules:\n  - alert: ApiReplicaDown\n"
               "    expr: up{job=\"api\"} == 0\n  - alert: ApiNoTaskReporting\n"
               "    expr: absent_over_time(up{job=\"api\"}[2m])\n"},
      why="workspace-waits-for-an-up-zero-that-never-comes"),
    W("metrics-alerts-can-fire", "prodstack-metrics-rules",
      {"data": "groups:\n- name: prodstack-api\n  rules:\n  - alert: HighErrorRate\n"
               "    expr: rate(http_requests_total{job=\"api\"}[5m]) > 1\n"},
      why="silent-tasks-alert-nobody"),
    W("iam-trust-confused-deputy", "prodstack-backup-role",
      {"assumeRolePolicy$.Statement.0.Condition": DELETE}, why="backup-role-any-account"),
    W("sns-service-grant-confused-deputy", "prodstack-prod-obs-alarms-policy",
      {"policy$.Statement.Sid=EventBridgeRules.Condition": DELETE},
      why="any-account-rule-publishes-to-the-topic"),
    # ---- load balancer
    W("alb-hardened", "prodstack-lb-alb", {"dropInvalidHeaderFields": False},
      why="invalid-headers-forwarded"),
    W("alb-hardened", "prodstack-lb-alb", {"accessLogs.enabled": False},
      why="alb-access-logs-off"),
    W("alb-hardened", "prodstack-lb-alb", {"desyncMitigationMode": "monitor"},
      why="desync-monitor-only"),
    W("target-group-liveness-check", "prodstack-lb-tg", {"healthCheck.path": "/health/ready"},
      why="health-check-on-readiness"),
    W("target-group-liveness-check", "prodstack-lb-tg", {"healthCheck.enabled": False},
      why="health-check-off"),
    W("prod-deletion-protection-and-backups", "prodstack-lb-alb",
      {"enableDeletionProtection": False}, why="alb-deletable"),
    W("alb-listener-tls", "prodstack-lb-https",
      {"sslPolicy": "ELBSecurityPolicy-TLS13-1-0-2021-06"}, why="tls13-policy-with-tls10"),
    W("alb-listener-tls", "prodstack-lb-https",
      {"sslPolicy": "ELBSecurityPolicy-TLS13-1-1-2021-06"}, why="tls13-policy-with-tls11"),
    W("alb-listener-tls", "prodstack-lb-http", {"defaultActions.0.type": "forward"},
      why="http-served-plain"),
    W("alb-forwards-only-cdn-requests", "prodstack-lb-https",
      {"defaultActions": [{"type": "forward", "targetGroupArn": "tg"}]},
      why="alb-forwards-without-origin-header"),
    W("alb-forwards-only-cdn-requests", "prodstack-lb-production",
      {"conditions": [{"pathPattern": {"values": ["/*"]}}]}, why="cdn-rule-matches-any-path"),
    W("alb-forwards-only-cdn-requests", "prodstack-lb-test",
      {"conditions.0": DELETE}, why="green-test-route-bypasses-cdn"),
    W("alb-internal-paths-blocked", "prodstack-lb-internal-paths",
      {"conditions.0.pathPattern.values": ["/metrics*", "/health"]},
      reported_on="prodstack-lb-https", why="openapi-reachable"),
    W("alb-internal-paths-blocked", "prodstack-lb-encoded-paths", op=DROP,
      reported_on="prodstack-lb-https", why="encoded-paths-reach-the-app"),
    W("alb-internal-paths-blocked", "prodstack-lb-internal-paths", {"priority": 20},
      why="block-after-the-forward"),
    # ---- ECS
    W("ecs-task-hardened", "prodstack-api-task", {f"{API}.readonlyRootFilesystem": False},
      why="writable-root"),
    W("ecs-task-hardened", "prodstack-api-task", {f"{API}.user": "0"}, why="runs-as-root"),
    W("db-client-verifies-server", "prodstack-api-task",
      {f"{API}.environment.name=DB_SSLMODE.value": "require"},
      why="api-accepts-any-db-certificate"),
    W("db-client-verifies-server", "prodstack-api-task",
      {f"{MIGRATE}.environment.name=DB_SSLROOTCERT": DELETE}, why="migrate-trusts-no-bundle"),
    W("ecs-task-hardened", "prodstack-api-task", {f"{API}.privileged": True},
      why="privileged-container"),
    W("ecs-task-hardened", "prodstack-api-task",
      {f"{MIGRATE}.linuxParameters.capabilities.drop": []}, why="capabilities-kept"),
    W("ecs-task-hardened", "prodstack-api-task",
      {f"{API}.image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/prodstack:latest"},
      why="image-by-mutable-tag"),
    W("ecs-task-hardened", "prodstack-api-task", {f"{API}.healthCheck": DELETE},
      why="serving-container-unchecked"),
    W("ecs-task-hardened", "prodstack-api-task",
      {f"{API}.dependsOn.0.condition": "START"}, why="api-serves-before-migration-succeeds"),
    W("ecs-task-hardened", "prodstack-api-task",
      {f"{COLLECTOR}.image": "public.ecr.aws/aws-observability/aws-otel-collector:latest"},
      why="collector-image-by-mutable-tag"),
    W("ecs-task-hardened", "prodstack-api-task", {f"{COLLECTOR}.user": "0"},
      why="collector-runs-as-root"),
    W("ecs-sidecars-non-essential", "prodstack-api-task", {f"{COLLECTOR}.essential": True},
      why="collector-crash-stops-the-api"),
    W("ecs-sidecars-non-essential", "prodstack-api-task",
      {f"{API}.dependsOn.+": {"containerName": "metrics-collector", "condition": "START"}},
      why="api-waits-for-the-collector"),
    W("ecs-sidecars-non-essential", "prodstack-api-task",
      {f"{COLLECTOR}.portMappings": [{"containerPort": 8888, "protocol": "tcp"}]},
      why="collector-publishes-a-port"),
    W("sns-service-grant-confused-deputy", "prodstack-prod-obs-alarms-policy",
      {"policy$.Statement.1.Condition": DELETE}, why="any-workspace-publishes-alerts"),
    W("iam-least-privilege", "prodstack-api-task-role-metrics",
      {"policy$.Statement.0.Resource": "*"}, why="remote-write-to-every-workspace"),
    W("iam-least-privilege", "prodstack-api-execution-role-collector-config",
      {"policy$.Statement.0.Resource": "*"}, why="every-parameter-readable"),
    W("ecs-task-hardened", "prodstack-api-migrate-task",
      {f"{MIGRATE}.logConfiguration": DELETE}, why="migrate-logs-lost"),
    W("no-secrets-in-task-environment", "prodstack-api-task",
      {f"{API}.environment.+": {"name": "DB_PASSWORD", "value": "hunter2"}},
      why="password-in-plain-environment"),
    W("ecs-safe-deploys", "prodstack-api-service", {"alarms.rollback": False},
      why="blue-green-no-alarm-rollback"),
    W("ecs-safe-deploys", "prodstack-api-service",
      {"deploymentConfiguration.strategy": "ROLLING", "deploymentCircuitBreaker.rollback": False},
      why="rolling-no-circuit-breaker-rollback"),
    W("blue-green-rolls-back", "prodstack-api-service",
      {"alarms.alarmNames": ["prodstack-prod-high-error-rate"]},
      why="blue-green-ignores-healthy-hosts"),
    W("blue-green-rolls-back", "prodstack-api-service",
      {"alarms.alarmNames.+": "prodstack-prod-no-such-alarm"}, why="rollback-on-missing-alarm"),
    W("blue-green-rolls-back", "prodstack-api-service",
      {"deploymentConfiguration.bakeTimeInMinutes": "0"}, why="no-bake-time"),
    W("blue-green-rolls-back", "prodstack-api-service",
      {"loadBalancers.0.advancedConfiguration.testListenerRule": DELETE},
      why="no-test-listener-rule"),
    W("alarms-for-the-targets", "prodstack-prod-obs-healthy-hosts",
      {"treatMissingData": "notBreaching"}, why="no-targets-reads-as-ok"),
    W("deployment-alarms-quiet-on-missing-data", "prodstack-prod-obs-deploy-healthy-hosts",
      {"treatMissingData": "breaching"}, why="outage-rolls-back-its-fix"),
    W("deployment-alarms-quiet-on-missing-data", "prodstack-api-service",
      {"alarms.alarmNames.1": "prodstack-prod-healthy-hosts"},
      reported_on="prodstack-prod-obs-healthy-hosts",
      why="deployment-watches-the-breaching-alarm"),
    W("deployment-alarms-quiet-on-missing-data", "prodstack-prod-obs-deploy-healthy-hosts",
      {"metricQueries.id=total.expression": "FILL(tg0, 0) + FILL(tg1, 0)"},
      why="deployment-alarm-fills-gaps-with-zero"),
    # ---- request scaling under blue/green
    W("request-scaling-watches-every-target-group", "prodstack-api-scale-requests",
      {f"{TRACKING}.customizedMetricSpecification": DELETE,
       f"{TRACKING}.predefinedMetricSpecification": {
           "predefinedMetricType": "ALBRequestCountPerTarget",
           "resourceLabel": "app/prodstack-lb-alb/50dc6c495c0c9188/targetgroup/"
                            "prodstack-lb-tg/73e2d6bc24d8a067"}},
      why="request-scaling-on-the-first-group-only"),
    W("request-scaling-watches-every-target-group", "prodstack-api-scale-requests",
      {f"{REQUEST_MATH}.id=tg1": DELETE,
       f"{REQUEST_MATH}.id=requests_per_target.expression": "FILL(tg0, 0)"},
      why="request-math-reads-one-group"),
    W("request-scaling-watches-every-target-group", "prodstack-api-scale-requests",
      {f"{REQUEST_MATH}.id=requests_per_target.expression": "FILL(tg1, 0)"},
      why="request-math-returns-the-alternate-group-only"),
    W("request-scaling-watches-every-target-group", "prodstack-api-scale-requests", op=DROP,
      reported_on="prodstack-api-service", why="no-request-scaling-under-blue-green"),
    W("alarms-for-the-targets", "prodstack-prod-obs-running-tasks", op=DROP, reported_on="",
      why="running-tasks-alarm-removed"),
    W("ecs-safe-deploys", "prodstack-api-service", {"enableExecuteCommand": True},
      why="ecs-exec-on"),
    W("ecs-safe-deploys", "prodstack-api-service",
      {"enableExecuteCommand": True, "tags.prodstack:ecs-exec": "yes"},
      why="ecs-exec-on-in-prod-with-a-misspelt-allowance"),
    W("iam-least-privilege", "prodstack-api-task-role-ecs-exec", op=ADD, add={
        "type": "aws:iam/rolePolicy:RolePolicy",
        "inputs": {"role": "prodstack-api-task-role", "policy": json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*",
            "Action": ["ssmmessages:CreateControlChannel", "ssm:SendCommand"]}]})},
        "property_dependencies": {"role": ["aws:iam/role:Role::prodstack-api-task-role"]}},
      why="ecs-exec-grant-widened-to-ssm-send-command"),
    W("ecs-safe-deploys", "prodstack-api-service",
      {"deploymentConfiguration.strategy": "ROLLING", "deploymentMinimumHealthyPercent": 50},
      why="rolling-deploy-halves-capacity"),
    W("ecs-safe-deploys", "prodstack-api-cluster", {"settings.0.value": "disabled"},
      why="container-insights-off"),
    W("no-public-database-or-tasks", "prodstack-api-service",
      {"networkConfiguration.assignPublicIp": True}, why="tasks-public-ip"),
    # ---- ECR, KMS, SNS, secrets, logs
    W("ecr-repository-hardened", "prodstack-registry-repo", {"imageTagMutability": "MUTABLE"},
      why="mutable-tags"),
    W("ecr-repository-hardened", "prodstack-registry-repo",
      {"imageScanningConfiguration.scanOnPush": False}, why="no-scan-on-push"),
    W("ecr-repository-hardened", "prodstack-registry-repo", {"forceDelete": True},
      why="prod-repo-force-delete"),
    W("ecr-lifecycle-policy", "prodstack-registry-lifecycle", op=DROP,
      reported_on="prodstack-registry-repo", why="images-kept-forever"),
    W("encryption-everywhere", "prodstack-registry-repo", {"encryptionConfigurations": DELETE},
      why="ecr-unencrypted"),
    W("kms-keys-rotate", "prodstack-prod-obs-key", {"enableKeyRotation": False},
      why="key-never-rotates"),
    W("kms-keys-rotate", "prodstack-prod-obs-key",
      {"policy$.Statement.Sid=CloudWatchAlarms.Principal": "*"}, why="key-usable-by-anyone"),
    W("encryption-everywhere", "prodstack-prod-obs-alarms", {"kmsMasterKeyId": DELETE},
      why="topic-unencrypted"),
    # ---- customer-managed keys (kms_keys)
    W("customer-keys-in-prod", "prodstack-api-logs", {"kmsKeyId": DELETE},
      why="api-logs-on-the-logs-service-key"),
    W("customer-keys-in-prod", "prodstack-waf-logs", {"kmsKeyId": DELETE},
      why="waf-logs-on-the-logs-service-key"),
    W("customer-keys-in-prod", "prodstack-db-log-postgresql", {"kmsKeyId": DELETE},
      why="postgres-logs-on-the-logs-service-key"),
    W("customer-keys-in-prod", "prodstack-api-token", {"kmsKeyId": DELETE},
      why="api-token-readable-with-get-secret-value-alone"),
    W("customer-keys-in-prod", "prodstack-cache-auth-secret", {"kmsKeyId": DELETE},
      why="cache-token-on-aws-secretsmanager-key"),
    W("customer-keys-in-prod", "prodstack-cache-group", {"kmsKeyId": DELETE},
      why="cache-on-the-service-key"),
    W("customer-keys-in-prod", "prodstack-db-instance", {"performanceInsightsKmsKeyId": DELETE},
      why="performance-insights-on-aws-rds-key"),
    W("kms-key-users-via-service", "prodstack-keys-secrets",
      {"policy$.Statement.Sid=SecretReaders.Condition": DELETE},
      why="execution-role-decrypts-outside-secrets-manager"),
    W("kms-service-grant-confused-deputy", "prodstack-keys-logs",
      {"policy$.Statement.Sid=CloudWatchLogs.Condition.ArnLike.kms:EncryptionContext:aws:logs:arn":
       ["arn:aws:logs:eu-west-1:*:log-group:*"]},
      why="logs-key-serves-any-accounts-log-groups"),
    W("kms-service-grant-confused-deputy", "prodstack-keys-edge-logs",
      {"policy$.Statement.Sid=CloudWatchLogs.Condition": DELETE},
      why="edge-logs-key-grant-unconditioned"),
    W("kms-keys-rotate", "prodstack-keys-secrets", {"enableKeyRotation": False},
      why="secrets-key-never-rotates"),
    W("secrets-recoverable-in-prod", "prodstack-api-token", {"recoveryWindowInDays": 0},
      why="secret-deleted-at-once"),
    W("log-retention-set", "prodstack-api-logs", {"retentionInDays": DELETE},
      why="logs-kept-forever"),
    W("security-logs-kept", "prodstack-waf-logs", {"retentionInDays": 30},
      why="waf-logs-kept-a-month"),
    W("security-logs-kept", "prodstack-net-flow-logs-group",
      {"retentionInDays": 90, "tags.prodstack:log-class": DELETE},
      why="untagged-flow-logs-kept-three-months"),
    W("security-logs-kept", "prodstack-db-log-iam-db-auth-error",
      {"retentionInDays": 30, "tags.prodstack:log-class": DELETE},
      why="untagged-iam-auth-failures-kept-a-month"),
    W("alb-header-routes-need-secrets", "prodstack-lb-test",
      {"conditions.1.httpHeader.values": ["green"]}, why="test-route-header-a-constant"),
    W("alb-header-routes-need-secrets", "prodstack-lb-production",
      {"conditions.0.httpHeader.values": ["*"]}, why="origin-check-matches-anything"),
    # ---- CloudFront
    W("cloudfront-api-never-cached", "prodstack-cdn-distribution",
      {"orderedCacheBehaviors.pathPattern=/api/*.cachePolicyId": CACHING_OPTIMIZED},
      why="api-responses-cached"),
    W("cloudfront-api-never-cached", "prodstack-cdn-distribution",
      {"orderedCacheBehaviors.pathPattern=/health/*": DELETE}, why="health-cached"),
    W("cloudfront-host-not-forwarded", "prodstack-cdn-distribution",
      {"defaultCacheBehavior.cachePolicyId": "83da9c7e-98b4-4e11-a168-04f0df8e2c65"},
      why="default-behaviour-keys-on-viewer-host"),
    W("cloudfront-host-not-forwarded", "prodstack-cdn-origin-cache-control",
      {"parametersInCacheKeyAndForwardedToOrigin.headersConfig": {
          "headerBehavior": "whitelist", "headers": {"items": ["Host"]}}},
      why="own-cache-policy-keys-on-host"),
    W("cloudfront-security-headers-and-logging", "prodstack-cdn-security-headers",
      {"securityHeadersConfig.strictTransportSecurity.accessControlMaxAgeSec": 300},
      reported_on="prodstack-cdn-distribution", why="hsts-five-minutes"),
    W("cloudfront-security-headers-and-logging", "prodstack-cdn-distribution",
      {"orderedCacheBehaviors.pathPattern=/api/*.responseHeadersPolicyId": DELETE},
      why="api-without-security-headers"),
    W("cloudfront-security-headers-and-logging", "prodstack-cdn-log-delivery", op=DROP,
      reported_on="prodstack-cdn-distribution", why="cloudfront-logs-not-delivered"),
    W("cloudfront-tls", "prodstack-cdn-distribution",
      {"origins.0.customOriginConfig.originSslProtocols": ["TLSv1", "TLSv1.2"]},
      why="origin-offers-tls10"),
    W("cloudfront-tls", "prodstack-cdn-distribution",
      {"viewerCertificate.minimumProtocolVersion": "TLSv1.1_2016"}, why="viewer-tls11"),
    W("cloudfront-tls", "prodstack-cdn-distribution",
      {"defaultCacheBehavior.viewerProtocolPolicy": "allow-all"}, why="viewer-plain-http"),
    # ---- RDS Proxy (rds_proxy: true)
    P("rds-proxy-hardened", "prodstack-db-proxy-proxy", {"requireTls": False},
      why="proxy-plaintext-clients"),
    P("rds-proxy-hardened", "prodstack-db-proxy-proxy",
      {"defaultAuthScheme": "NONE", "auths": [{
          "authScheme": "SECRETS", "iamAuth": "REQUIRED",
          "secretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"}]},
      why="proxy-logs-in-with-a-secret"),
    P("rds-proxy-hardened", "prodstack-db-proxy-proxy", {"debugLogging": True},
      why="proxy-logs-sql-text"),
    P("rds-proxy-hardened", "prodstack-db-proxy-proxy",
      {"vpcSecurityGroupIds": ["prodstack-net-database-sg-id"],
       "property_dependencies.vpcSecurityGroupIds": [f"{SG}database-sg"]},
      why="proxy-in-the-database-group"),
    P("rds-proxy-hardened", "prodstack-db-proxy-proxy",
      {"vpcSubnetIds.0": "prodstack-net-private-0-id",
       "property_dependencies.vpcSubnetIds.0": "aws:ec2/subnet:Subnet::prodstack-net-private-0"},
      why="proxy-in-an-app-subnet"),
    P("rds-proxy-hardened", "prodstack-db-proxy-targets",
      {"connectionPoolConfig.maxConnectionsPercent": 100}, why="proxy-takes-every-slot"),
    P("no-world-open-security-groups", "prodstack-net-service-to-proxy-in",
      {"referencedSecurityGroupId": DELETE, "cidrIpv4": "0.0.0.0/0"},
      why="proxy-open-to-the-world"),
    P("security-group-ingress-named-sources", "prodstack-net-service-to-proxy-in",
      {"referencedSecurityGroupId": DELETE, "cidrIpv4": "10.0.0.0/8"},
      why="proxy-open-to-the-vpc-range"),
    P("security-group-ingress-named-sources", "prodstack-net-service-to-proxy-in",
      {"referencedSecurityGroupId": "prodstack-net-alb-sg-id",
       "property_dependencies.referencedSecurityGroupId": [f"{SG}alb-sg"]},
      why="proxy-open-to-the-alb"),
    P("security-group-ingress-named-sources", "prodstack-net-proxy-to-database-in",
      {"fromPort": 0, "toPort": 65535}, why="database-admits-the-proxy-on-every-port"),
    P("security-group-ingress-named-sources", "prodstack-net-proxy-to-cache-in", op=ADD,
      add={"type": "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
           "inputs": {"securityGroupId": "prodstack-net-cache-sg-id", "ipProtocol": "tcp",
                      "fromPort": 6379, "toPort": 6379,
                      "referencedSecurityGroupId": "prodstack-net-proxy-sg-id"},
           "property_dependencies": {"securityGroupId": [f"{SG}cache-sg"],
                                     "referencedSecurityGroupId": [f"{SG}proxy-sg"]}},
      why="cache-open-to-the-proxy"),
    P("security-group-egress-restricted", "prodstack-net-proxy-https-out", op=ADD,
      add=_sg_rule("prodstack-net-proxy-https-out", "prodstack-net-proxy-sg",
                   ipProtocol="tcp", fromPort=443, toPort=443, cidrIpv4="0.0.0.0/0"),
      why="proxy-egress-to-the-internet"),
    P("security-group-egress-restricted", "prodstack-net-proxy-to-database-out",
      {"referencedSecurityGroupId": "prodstack-net-cache-sg-id",
       "property_dependencies.referencedSecurityGroupId": [f"{SG}cache-sg"]},
      why="proxy-egress-to-the-cache"),
    P("iam-least-privilege", "prodstack-db-proxy-role-connect",
      {"policy$.Statement.0.Resource": "*"}, why="proxy-connects-as-anyone-anywhere"),
    P("db-client-verifies-server", "prodstack-api-task",
      {f"{API}.environment.name=DB_SSLMODE.value": "require"},
      why="proxy-certificate-unverified"),
    P("iam-trust-as-documented", "prodstack-db-proxy-role",
      {"assumeRolePolicy$.Statement.0.Condition": {
          "StringEquals": {"aws:SourceAccount": "123456789012"}}},
      why="proxy-role-trust-conditioned-on-undocumented-keys"),
]


# ---- applying a weakening ---------------------------------------------------------------

def _index(container: Any, key: str, *, new: bool = False) -> Any:
    """The list index or dict key ``key`` names; ``new`` allows a dict key not there yet."""
    key = key.removeprefix("[").removesuffix("]")
    if isinstance(container, list):
        if "=" in key:
            field_name, _, wanted = key.partition("=")
            matches = [i for i, item in enumerate(container)
                       if isinstance(item, dict) and str(item.get(field_name)) == wanted]
            assert len(matches) == 1, f"{key}: {len(matches)} matches"
            return matches[0]
        return int(key)
    assert new or key in container, f"{key}: not in {sorted(container)}"
    return key


def _apply(container: Any, segments: list[str], value: Any) -> None:
    head, rest = segments[0], segments[1:]
    encoded = head.endswith("$")
    leaf_set = not rest and value is not DELETE
    key = "+" if head == "+" else _index(container, head.rstrip("$"), new=leaf_set)
    if not rest:
        if key == "+":
            container.append(value)
        elif value is DELETE:
            del container[key]
        else:
            container[key] = value
        return
    if encoded:
        decoded = json.loads(container[key])
        _apply(decoded, rest, value)
        container[key] = json.dumps(decoded)
    else:
        _apply(container[key], rest, value)


def weaken(resources: list[dict[str, Any]], w: Weakening) -> list[dict[str, Any]]:
    """A deep copy of ``resources`` with ``w`` applied."""
    items = copy.deepcopy(resources)
    if w.op == ADD:
        assert w.add is not None
        items.append({"name": w.resource, "urn": f"{w.add['type']}::{w.resource}",
                      "property_dependencies": {}, **copy.deepcopy(w.add)})
        return items
    found = [r for r in items if r["name"] == w.resource]
    assert len(found) == 1, f"{w.resource}: {len(found)} resources"
    if w.op == DROP:
        return [r for r in items if r["name"] != w.resource]
    target = found[0]
    for path, value in w.changes.items():
        segments = re.findall(r"\[[^\]]*\]\$?|[^.]+", path)
        if segments[0] not in ("inputs", "property_dependencies"):
            segments = ["inputs", *segments]
        _apply(target, segments, value)
        if value is DELETE and segments[0] == "inputs" and len(segments) == 2:
            target["property_dependencies"].pop(segments[1].rstrip("$"), None)
    return items


# ---- the tests ------------------------------------------------------------------------

POLICIES = {p.name: p for p in all_policies()}


def test_unweakened_prod_and_dev_pass_every_rule(prod: Manifest, dev: Manifest) -> None:
    assert run_all(prod) == []
    assert run_all(dev) == []
    # prod with rds_proxy: true passes too: test_cloud_db_proxy.py


def test_every_rule_has_a_weakening_and_every_weakening_a_rule() -> None:
    named = {w.rule for w in WEAKENINGS}
    assert named - set(POLICIES) == set(), "weakenings naming no rule"
    assert set(POLICIES) - named == set(), "rules no weakening turns red"
    whys = [w.why for w in WEAKENINGS]
    assert len(whys) == len(set(whys))


@pytest.mark.parametrize("w", WEAKENINGS, ids=[w.why for w in WEAKENINGS])
def test_weakening_turns_its_named_rule_red(request: pytest.FixtureRequest,
                                            w: Weakening) -> None:
    manifest: Manifest = request.getfixturevalue(w.manifest)
    policy = POLICIES[w.rule]
    assert run_policy(policy, manifest.resources) == [], f"{w.rule} red before the weakening"
    violations = run_policy(policy, weaken(manifest.resources, w))
    assert violations, f"{w.why}: {w.rule} stayed green"
    where = w.resource if w.reported_on is None else w.reported_on
    if where:
        assert any(where in v for v in violations), (where, violations)


def _as_plan(manifest: Manifest, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan of ``manifest`` with ``resources`` in place of its own (an added one is a
    top-level custom resource with no options)."""
    from prodstack.cloud_plan import to_plan

    data = {**manifest.data, "resources": resources,
            "resource_options": dict(manifest.data["resource_options"])}
    for r in resources:
        r.setdefault("parent", "")
        r.setdefault("custom", True)
        data["resource_options"].setdefault(r["urn"], {"dependencies": []})
    return to_plan(data)


@pytest.mark.parametrize("w", WEAKENINGS, ids=[w.why for w in WEAKENINGS])
def test_weakening_turns_its_named_rule_red_in_the_plan_too(request: pytest.FixtureRequest,
                                                            w: Weakening) -> None:
    """The same weakening, as `prodstack plan` shows it: ARNs, IDs and digests known only
    after apply, secrets hidden. The rules see the engine's unknowns there and still judge
    every weakened setting, and no rule is stopped by an unknown value."""
    manifest: Manifest = request.getfixturevalue(w.manifest)
    advisories: list[str] = []
    violations = run_policy(POLICIES[w.rule], _as_plan(manifest, weaken(manifest.resources, w))[
        "resources"], advisories)
    assert violations, f"{w.why}: {w.rule} stayed green in the plan"
    assert advisories == []
    where = w.resource if w.reported_on is None else w.reported_on
    if where:
        assert any(where in v for v in violations), (where, violations)
