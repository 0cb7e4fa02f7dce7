"""The data tier: prod deletion protection and backups, hardened RDS and ElastiCache, RDS
Enhanced Monitoring and IAM authentication, RDS Proxy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ReportViolation, StackValidationArgs

from components._common import (
    TEARDOWN_TAG,
)
from policies._shared import (
    as_list,
    as_map,
    is_prod,
    linked,
    lookup,
    of_type,
    resource_policy,
    stack_policy,
    strings,
    tags_of,
)
from policies.network import PROXY_GROUP_ROLE

MIN_PROD_BACKUP_DAYS = 7


# ---- deletion protection and backups in prod -------------------------------------------

@resource_policy(
    "prod-deletion-protection-and-backups",
    "In prod: deletion protection, final snapshot, backups >= 7 days.",
    types=("aws:rds/instance:Instance", "aws:lb/loadBalancer:LoadBalancer"),
)
def prod_protection(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    # `teardown: true` is the one named way to lift deletion protection in prod; it
    # tags every resource, so the lifted protection is visible and deliberate.
    teardown = tags_of(props).get(TEARDOWN_TAG) == "requested"
    if resource_type == "aws:lb/loadBalancer:LoadBalancer":
        if (is_prod(props) and not teardown
                and props.get("enableDeletionProtection") is not True):
            yield "Prod load balancers must have deletion protection (or the teardown tag)."
        return
    backups = props.get("backupRetentionPeriod") or 0
    if is_prod(props):
        if not teardown and props.get("deletionProtection") is not True:
            yield "Prod databases must have deletion protection (or the teardown tag)."
        if props.get("skipFinalSnapshot") is True:
            yield "Prod databases must take a final snapshot (skipFinalSnapshot: false)."
        if backups < MIN_PROD_BACKUP_DAYS:
            yield f"Prod databases must keep backups >= {MIN_PROD_BACKUP_DAYS} days."
    elif backups < 1:
        yield "Databases must keep automated backups (backupRetentionPeriod >= 1)."


# ---- RDS and ElastiCache: upgrades, snapshots, CA, logs, failover ---------------------

# RDS certificate authorities in service (2061-2121 expiry); rds-ca-2019 expired in 2024.
# Source: RDS user guide, UsingWithRDS.SSL.html ("Certificate authorities" table).
RDS_CA_IDENTIFIERS = ("rds-ca-rsa2048-g1", "rds-ca-rsa4096-g1", "rds-ca-ecc384-g1")
RDS_LOG_EXPORTS = ("postgresql", "upgrade")


@resource_policy(
    "rds-instance-hardened",
    "RDS: minor upgrades on with the major version alone pinned, tags copied to snapshots, "
    "CA pinned, RDS-managed password, log exports, Performance Insights, storage "
    "autoscaling, Multi-AZ in prod.",
    types="aws:rds/instance:Instance",
)
def rds_hardened(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("autoMinorVersionUpgrade") is not True:
        yield "RDS must take minor upgrades (autoMinorVersionUpgrade; FSBP RDS.13)."
    version = str(props.get("engineVersion", ""))
    if props.get("autoMinorVersionUpgrade") is True and not version.isdigit():
        yield (f"RDS pins the major version only ({version!r}): with minor upgrades on, a "
               "pinned minor makes every later up plan a downgrade RDS refuses.")
    if props.get("copyTagsToSnapshot") is not True:
        yield "RDS snapshots must carry the instance's tags (copyTagsToSnapshot; FSBP RDS.17)."
    if props.get("caCertIdentifier") not in RDS_CA_IDENTIFIERS:
        yield (f"RDS must pin a current CA ({', '.join(RDS_CA_IDENTIFIERS)}), not "
               f"{props.get('caCertIdentifier')!r}.")
    if props.get("manageMasterUserPassword") is not True or props.get("password"):
        yield "RDS master password must be managed by RDS in Secrets Manager."
    missing = set(RDS_LOG_EXPORTS) - set(strings(props.get("enabledCloudwatchLogsExports")))
    if missing:
        yield f"RDS must export its {sorted(missing)} logs to CloudWatch."
    if props.get("performanceInsightsEnabled") is not True:
        yield "RDS must keep Performance Insights on."
    allocated, ceiling = props.get("allocatedStorage"), props.get("maxAllocatedStorage")
    if isinstance(allocated, (int, float)) and not (
            isinstance(ceiling, (int, float)) and ceiling > allocated):
        yield "RDS storage must autoscale (maxAllocatedStorage above allocatedStorage)."
    if is_prod(props) and props.get("multiAz") is not True:
        yield "Prod RDS must be Multi-AZ (FSBP RDS.5)."


@resource_policy(
    "cache-hardened",
    "ElastiCache: minor upgrades on, snapshots kept, TLS required, failover with replicas "
    "(a replica in prod), slow log shipped, eviction on.",
    types=("aws:elasticache/replicationGroup:ReplicationGroup",
     "aws:elasticache/parameterGroup:ParameterGroup"),
)
def cache_hardened(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if resource_type == "aws:elasticache/parameterGroup:ParameterGroup":
        values = {p.get("name"): p.get("value")
                  for p in map(as_map, as_list(props.get("parameters")))}
        if values.get("maxmemory-policy") in (None, "noeviction"):
            yield "Cache parameter groups must evict under memory pressure (maxmemory-policy)."
        return
    if props.get("autoMinorVersionUpgrade") is not True:
        yield "ElastiCache must take minor upgrades (autoMinorVersionUpgrade; FSBP ElastiCache.2)."
    if (props.get("snapshotRetentionLimit") or 0) < 1:
        yield "ElastiCache must keep daily snapshots (snapshotRetentionLimit >= 1; ElastiCache.1)."
    if props.get("transitEncryptionMode", "required") != "required":
        yield "ElastiCache must refuse plaintext clients (transitEncryptionMode required)."
    clusters = props.get("numCacheClusters") or 1
    if clusters > 1 and not (props.get("automaticFailoverEnabled") is True
                             and props.get("multiAzEnabled") is True):
        yield "ElastiCache with replicas must fail over automatically, Multi-AZ (ElastiCache.3)."
    if is_prod(props) and clusters < 2:
        yield "Prod ElastiCache needs a replica (numCacheClusters >= 2)."
    if not any(as_map(c).get("logType") == "slow-log"
               for c in as_list(props.get("logDeliveryConfigurations"))):
        yield "ElastiCache must ship its slow log."


# ---- RDS Enhanced Monitoring and IAM authentication ----------------------------------

# Source: botocore rds CreateDBInstanceMessage.MonitoringInterval (0 turns it off).
MONITORING_INTERVALS = (1, 5, 10, 15, 30, 60)


@resource_policy(
    "rds-enhanced-monitoring",
    "RDS instances have Enhanced Monitoring with its role.",
    types="aws:rds/instance:Instance",
)
def rds_enhanced_monitoring(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("monitoringInterval") not in MONITORING_INTERVALS:
        yield (f"RDS needs Enhanced Monitoring (monitoringInterval one of "
               f"{MONITORING_INTERVALS}, not {props.get('monitoringInterval')!r}; FSBP RDS.6).")
    elif not lookup(props, "monitoringRoleArn"):
        yield "RDS Enhanced Monitoring needs its role (monitoringRoleArn)."


@resource_policy(
    "rds-iam-auth",
    "RDS instances accept IAM authentication and export its failures.",
    types="aws:rds/instance:Instance",
)
def rds_iam_auth(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("iamDatabaseAuthenticationEnabled") is not True:
        yield "RDS must accept IAM database authentication (FSBP RDS.10)."
    if "iam-db-auth-error" not in strings(props.get("enabledCloudwatchLogsExports")):
        yield "RDS must export iam-db-auth-error logs, so failed IAM logins are visible."


# ---- RDS Proxy: TLS, IAM end to end, its own group, isolated subnets, room for migrate -

@stack_policy(
    "rds-proxy-hardened",
    "RDS Proxy requires TLS, uses end-to-end IAM authentication and no secret, "
                "logs no SQL, sits in its own security group in isolated subnets, and "
                "leaves room beside its pool.",
)
def rds_proxy_hardened(args: StackValidationArgs, report: ReportViolation) -> None:
    isolated = {r.urn for r in of_type(args, "ec2/subnet:Subnet")
                if tags_of(r.props).get("prodstack:tier") == "isolated"}  # fmt: skip
    for proxy in of_type(args, "rds/proxy:Proxy"):
        p = proxy.props
        if p.get("requireTls") is not True:
            report("RDS Proxy must require TLS from its clients (requireTls).", proxy.urn)
        # IAM_AUTH: IAM from the client to the proxy and from the proxy to the database,
        # no password. Source: pulumi_aws rds.Proxy `default_auth_scheme`.
        if p.get("defaultAuthScheme") != "IAM_AUTH":
            report("RDS Proxy must use end-to-end IAM authentication (defaultAuthScheme "
                   f"IAM_AUTH, not {p.get('defaultAuthScheme')!r}).", proxy.urn)
        if any(as_map(a).get("secretArn") for a in as_list(p.get("auths"))):
            report("RDS Proxy logs in by IAM: it reads no database secret (auths).",
                   proxy.urn)
        if p.get("debugLogging") is True:
            report("RDS Proxy debug logging writes SQL text and parameters to the logs.",
                   proxy.urn)
        groups = proxy.property_dependencies.get("vpcSecurityGroupIds", []) if (
            proxy.property_dependencies) else []
        roles = {str(tags_of(g.props).get("prodstack:role")) for g in groups}
        if roles != {PROXY_GROUP_ROLE} or len(as_list(p.get("vpcSecurityGroupIds"))) != 1:
            report("RDS Proxy sits in its own security group only (prodstack:role "
                   f"{PROXY_GROUP_ROLE}), not {sorted(roles)}.", proxy.urn)
        outside = linked(proxy, "vpcSubnetIds") - isolated
        if outside or not linked(proxy, "vpcSubnetIds"):
            report(f"RDS Proxy lives in isolated subnets only, not {sorted(outside)}.",
                   proxy.urn)
    for pool in of_type(args, "rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup"):
        # API default 100 (API_ConnectionPoolConfiguration.html): the proxy could take
        # every slot the migrate task and operators need.
        percent = as_map(pool.props.get("connectionPoolConfig")).get("maxConnectionsPercent")
        if not isinstance(percent, (int, float)) or percent >= 100:
            report("RDS Proxy leaves room beside its pool (maxConnectionsPercent below "
                   f"100, not {percent!r}).", pool.urn)

