"""Monthly cost of a plan: what its resources are, priced from `data/prices.toml`.

Fixed costs come from the plan alone (a NAT gateway costs its hours whether or not
traffic flows). Usage costs multiply a usage profile (`data/usage/<size>.toml`, or a
user's `--usage FILE` over it) by a unit price. A usage-priced item with no usage figure
is listed under `unpriced`, never shown as $0. Resource types with no charge of their
own (VPC, subnets, IAM, listeners ...) are known by name; any other type is listed under
`unpriced` too, so a new resource is never silently free.

Money is computed in `Decimal` and rounded half-up to cents per line; totals are the
sums of the rounded lines, so the table always adds up.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from prodstack import planfile, recovery, sizes
from prodstack.errors import UsageError

DATA = Path(__file__).resolve().parent / "data"
PRICES_FILE = DATA / "prices.toml"
USAGE_DIR = DATA / "usage"
SIZES = sizes.NAMES
CENT = Decimal("0.01")
# The collector configuration's global scrape interval (components/templates/
# metrics-collector.yaml), in whole seconds.
SCRAPE_INTERVAL_RE = re.compile(r"^\s+scrape_interval: (\d+)s$", re.M)

# Usage keys: what each counts. The checked-in profiles set every key; docs/cost.md
# explains how each profile's figures were chosen.
USAGE_KEYS: dict[str, str] = {
    "requests_per_month": "HTTP requests a month at the edge (CloudFront, else the ALB)",
    "data_out_gb": "GB a month of responses to clients",
    "nat_gb": "GB a month processed by the NAT gateways",
    "alb_lcu_average": "ALB load balancer capacity units held on average",
    "app_log_gb": "GB a month of API, database and cache logs into CloudWatch",
    "flow_log_gb": "GB a month of VPC flow logs into CloudWatch",
    "waf_log_gb": "GB a month of WAF logs into CloudWatch",
    "alb_access_log_gb": "GB of ALB access logs kept in S3",
    "ecr_storage_gb": "GB of images kept in ECR",
    "metrics_series_per_task": "Prometheus series one API task exposes on /metrics (AMP)",
    "backup_storage_gb": "GB of VPS backups kept off-site in S3",
    "backup_change_gb_per_day": "GB of the database that changes a day (AWS Backup increments)",
    "vps_provider": "provider whose plans price a VPS host",
}
VPS_PROVIDERS = ("digitalocean", "hetzner")

# The reference monthly figures, shown beside every estimate (docs/targets.md, "Sizes and
# reference costs").
REFERENCE_CLOUD = "AWS $50-200 a month (EC2 t3.medium $30, RDS $25, ElastiCache $15, ALB $20, CloudFront $10, S3 $5)"  # noqa: E501
REFERENCE_VPS = {
    "small": "$35 startup (4 GB / 2 CPU VPS $20 + managed PostgreSQL 2 GB $15)",
    "medium": "$85 production (8 GB / 4 CPU VPS $40 + managed PostgreSQL $25 + Redis $15 + SMS $5 + Cloudflare Pro $20)",  # noqa: E501
    "large": "$200 enterprise (several VPS $80 + HA PostgreSQL $60 + Redis cluster $30 + SMS/email $20 + monitoring $10)",  # noqa: E501
}

# Types that carry no charge of their own; their cost, if any, shows on another line
# (a log group's on the log ingestion lines, a bucket's on its storage line).
FREE_TYPES = frozenset({
    "aws:acm/certificate:Certificate", "aws:acm/certificateValidation:CertificateValidation",
    "aws:appautoscaling/policy:Policy", "aws:appautoscaling/target:Target",
    "aws:cloudwatch/logGroup:LogGroup", "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
    "aws:ec2/flowLog:FlowLog", "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/route:Route", "aws:ec2/routeTable:RouteTable",
    "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "aws:ec2/securityGroup:SecurityGroup", "aws:ec2/subnet:Subnet", "aws:ec2/vpc:Vpc",
    "aws:ecr/lifecyclePolicy:LifecyclePolicy", "aws:ecs/cluster:Cluster",
    "aws:ecs/taskDefinition:TaskDefinition", "aws:elasticache/parameterGroup:ParameterGroup",
    "aws:elasticache/subnetGroup:SubnetGroup", "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:lb/listener:Listener", "aws:lb/listenerRule:ListenerRule",
    # CloudFront's response headers policy is free; its standard logging (v2) objects
    # cost nothing themselves, the delivered logs are CloudWatch vended-log ingestion.
    "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy",
    # Cache policies cost nothing themselves (CloudFront bills requests and transfer).
    "aws:cloudfront/cachePolicy:CachePolicy",
    "aws:cloudwatch/logDeliverySource:LogDeliverySource",
    "aws:cloudwatch/logDeliveryDestination:LogDeliveryDestination",
    "aws:cloudwatch/logDelivery:LogDelivery",
    "aws:lb/targetGroup:TargetGroup", "aws:rds/parameterGroup:ParameterGroup",
    # RDS Proxy's target group and target: billed on the proxy's line.
    "aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup",
    "aws:rds/proxyTarget:ProxyTarget",
    "aws:rds/subnetGroup:SubnetGroup", "aws:route53/record:Record",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "aws:s3/bucketPolicy:BucketPolicy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    # Versioning itself is free; the noncurrent versions it keeps are S3 storage (the
    # access-log line prices current objects only: an under-estimate by up to the
    # lifecycle's noncurrent days).
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:secretsmanager/secretVersion:SecretVersion",
    # Email notifications: the first 1,000 a month are free (SNS pricing page).
    "aws:sns/topic:Topic", "aws:sns/topicSubscription:TopicSubscription",
    "aws:sns/topicPolicy:TopicPolicy",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:wafv2/webAclAssociation:WebAclAssociation",
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration",
    "docker:index/image:Image", "random:index/randomId:RandomId",
    "random:index/randomPassword:RandomPassword",
    # The collector's configuration: a standard-tier parameter (no charge; SSM pricing
    # page, "Standard parameters"). AMP rule groups are billed as the samples their
    # queries read, a few cents a month here (docs/cost.md, "Metrics").
    "aws:ssm/parameter:Parameter", "aws:amp/ruleGroupNamespace:RuleGroupNamespace",
    "aws:amp/alertManagerDefinition:AlertManagerDefinition",
    "aws:amp/workspaceConfiguration:WorkspaceConfiguration",
    # AWS Backup bills the recovery points' storage and the restores, priced on the backup
    # lines; vaults, locks, plans, selections and restore testing definitions are free.
    # AWS services' events on the default event bus and RDS event subscriptions are free
    # (the SNS deliveries are within the free notifications above).
    "aws:backup/vault:Vault", "aws:backup/vaultLockConfiguration:VaultLockConfiguration",
    "aws:backup/plan:Plan", "aws:backup/selection:Selection",
    "aws:backup/restoreTestingPlan:RestoreTestingPlan",
    "aws:backup/restoreTestingSelection:RestoreTestingSelection",
    "aws:cloudwatch/eventRule:EventRule", "aws:cloudwatch/eventTarget:EventTarget",
    "aws:rds/eventSubscription:EventSubscription",
})
PRICED_TYPES = frozenset({
    "aws:cloudfront/distribution:Distribution", "aws:cloudwatch/dashboard:Dashboard",
    "aws:cloudwatch/metricAlarm:MetricAlarm", "aws:ec2/eip:Eip",
    "aws:ec2/natGateway:NatGateway", "aws:ec2/vpcEndpoint:VpcEndpoint",
    "aws:ecr/repository:Repository", "aws:ecs/service:Service",
    "aws:elasticache/replicationGroup:ReplicationGroup", "aws:kms/key:Key",
    "aws:lb/loadBalancer:LoadBalancer", "aws:rds/instance:Instance", "aws:rds/proxy:Proxy",
    "aws:s3/bucket:Bucket",
    "aws:secretsmanager/secret:Secret", "aws:wafv2/webAcl:WebAcl",
    "aws:amp/workspace:Workspace",
})


# --- Inputs ---------------------------------------------------------------------------


def load_prices(path: Path = PRICES_FILE) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def load_usage(path: Path | None, size: str) -> dict[str, Any]:
    """The checked-in usage profile for `size`, with the keys of `path` (TOML) over it."""
    if size not in SIZES:
        raise UsageError(f"size: {size!r} has no usage profile; expected {' | '.join(SIZES)}")
    usage = _read_usage(USAGE_DIR / f"{size}.toml")
    if path is not None:
        usage.update(_read_usage(Path(path)))
    return usage


def check_usage_file(path: Path | None) -> None:
    """Refuse a bad usage file (naming it and the key) before anything is planned."""
    if path is not None:
        _read_usage(Path(path))


def _read_usage(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(planfile.read_text(path, "usage file"))
    except planfile.PlanFileError as error:
        raise UsageError(str(error)) from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from None
    usage: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in USAGE_KEYS:
            raise UsageError(
                f"{path}: unknown usage key `{key}`; expected one of {', '.join(USAGE_KEYS)}"
            )
        if key == "vps_provider":
            if value not in VPS_PROVIDERS:
                raise UsageError(
                    f"{path}: `vps_provider` = {value!r} is invalid; "
                    f"expected {' | '.join(VPS_PROVIDERS)}"
                )
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise UsageError(
                f"{path}: `{key}` = {value!r} is invalid; "
                f"expected a number >= 0 ({USAGE_KEYS[key]})"
            )
        usage[key] = value
    return usage


# --- The estimate -----------------------------------------------------------------------


def _money(value: Decimal) -> float:
    return float(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


class _Estimate:
    """Collects lines, callouts and unpriced items for one plan."""

    def __init__(self, prices: Mapping[str, Any], usage: Mapping[str, Any]) -> None:
        self.prices = prices
        self.usage = usage
        self.hours = int(prices["meta"]["hours_per_month"])
        self.lines: list[dict[str, Any]] = []
        self.callouts: list[str] = []
        self.unpriced: list[str] = []
        self.unconfirmed: set[str] = set()

    def source(self, entry: Mapping[str, Any]) -> str:
        source = self.prices["sources"][entry["source"]]
        if not source.get("confirmed", False):
            self.unconfirmed.add(entry["source"])
        flag = "" if source.get("confirmed", False) else "; unconfirmed"
        return f"{source['page']}, taken {source['taken']}{flag}"

    def add(self, component: str, item: str, quantity: Any, unit: str,
            entry: Mapping[str, Any], key: str = "usd", *, kind: str = "fixed",
            note: str = "") -> Decimal:
        unit_price = _dec(entry[key])
        monthly = (_dec(quantity) * unit_price).quantize(CENT, rounding=ROUND_HALF_UP)
        self.lines.append({
            "component": component, "item": item, "quantity": float(_dec(quantity)),
            "unit": unit, "unit_price": float(unit_price), "monthly": float(monthly),
            "kind": kind, "source": self.source(entry), "note": note,
        })
        return monthly

    def usage_of(self, key: str, what: str) -> Decimal | None:
        """A usage figure, or None after recording that `what` could not be priced."""
        if key not in self.usage:
            self.unpriced.append(f"{what}: no usage figure (`{key}` in the usage profile)")
            return None
        return _dec(self.usage[key])

    def result(self, plan: Mapping[str, Any], region: str) -> dict[str, Any]:
        if self.unconfirmed:
            self.callouts.append(
                "Some unit prices could not be checked against a source when prices.toml "
                "was written (marked `unconfirmed` per line): "
                + ", ".join(sorted(self.unconfirmed)) + "."
            )
        fixed = sum((_dec(li["monthly"]) for li in self.lines if li["kind"] == "fixed"),
                    Decimal(0))
        usage = sum((_dec(li["monthly"]) for li in self.lines if li["kind"] == "usage"),
                    Decimal(0))
        lines = sorted(self.lines, key=lambda li: (li["kind"], li["component"], li["item"]))
        return {
            "currency": plan_currency(self.prices),
            "profile": plan.get("profile"),
            "stack": plan.get("stack"),
            "size": plan_size(plan),
            "region": region,
            "lines": lines,
            "fixed_monthly": _money(fixed),
            "usage_monthly": _money(usage),
            "total_monthly": _money(fixed + usage),
            "callouts": self.callouts,
            "unpriced": sorted(set(self.unpriced)),
        }


def plan_currency(prices: Mapping[str, Any]) -> str:
    return str(prices["meta"]["currency"])


def plan_size(plan: Mapping[str, Any]) -> str:
    """The plan's size; a plan without one gets its profile's default (Pulumi.yaml: small,
    group_data/all.py: medium)."""
    settings = plan.get("settings") or {}
    size = settings.get("prodstack:size") or settings.get("size")
    return str(size or ("medium" if plan.get("profile") == "vps" else "small"))


def estimate(plan: Mapping[str, Any], usage: Mapping[str, Any],
             prices: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The itemised monthly estimate of `plan` (cloud or VPS) under `usage`."""
    prices = prices if prices is not None else load_prices()
    if not plan.get("resources") and not plan.get("settings"):
        # A stack that doesn't exist yet (one side of a diff): nothing to pay for.
        return _Estimate(prices, usage).result(plan, region="")
    if plan.get("profile") == "vps":
        return _estimate_vps(plan, usage, prices)
    if plan.get("profile") != "cloud":
        raise UsageError(f"plan: profile {plan.get('profile')!r} cannot be priced; "
                         "expected cloud | vps")
    return _estimate_cloud(plan, usage, prices)


# --- Cloud ------------------------------------------------------------------------------


def _of(plan: Mapping[str, Any], type_: str) -> list[dict[str, Any]]:
    found = [r for r in plan.get("resources", []) if r.get("type") == type_]
    return sorted(found, key=lambda r: str(r.get("name")))


def _num(value: Any) -> Decimal | None:
    try:
        return _dec(int(str(value)))
    except ValueError:
        return None


def _region_prices(prices: Mapping[str, Any], region: str) -> Mapping[str, Any]:
    regions = prices["regions"]
    if region not in regions:
        raise UsageError(
            f"aws:region: {region!r} has no prices in {PRICES_FILE.name}; priced Regions: "
            f"{', '.join(sorted(regions))} (add a [regions.\"{region}\"] table to price it)"
        )
    return regions[region]


def _estimate_cloud(plan: Mapping[str, Any], usage: Mapping[str, Any],
                    prices: Mapping[str, Any]) -> dict[str, Any]:
    settings = plan.get("settings") or {}
    region = settings.get("aws:region")
    if not region:
        raise UsageError("plan: settings has no `aws:region`; make the plan again with "
                         "`prodstack plan --stack STACK`")
    p = _region_prices(prices, region)
    g = prices["global"]
    e = _Estimate(prices, usage)
    h = e.hours

    _price_service(plan, e, p, h)
    _price_network(plan, e, p, g, h)
    _price_load_balancer(plan, e, p, g, h)
    _price_database(plan, e, p, h)
    _price_database_proxy(plan, e, prices, p, h)
    _price_backup(plan, e, prices, p)
    _price_cache(plan, e, p, h)
    _price_edge(plan, e, p, g)
    _price_observability(plan, e, prices, p, g)
    _price_metrics(plan, e, p, h)
    _price_registry_and_secrets(plan, e, p, g)

    seen = sorted({str(r.get("type")) for r in plan.get("resources", [])})
    for type_ in seen:
        if type_ in FREE_TYPES or type_ in PRICED_TYPES:
            continue
        if type_.startswith(("prodstack:", "pulumi:")):
            continue  # components and providers group resources; they cost nothing
        count = len(_of(plan, type_))
        e.unpriced.append(f"{type_} ({count}): no price in {PRICES_FILE.name}")
    return e.result(plan, region)


def _task_definition(plan: Mapping[str, Any], service: Mapping[str, Any]
                     ) -> dict[str, Any] | None:
    tasks = _of(plan, "aws:ecs/taskDefinition:TaskDefinition")
    by_id = {t.get("id"): t for t in tasks if t.get("id")}
    for dep in service.get("dependencies", []):
        if dep in by_id:
            return by_id[dep]
    reference = str(service.get("inputs", {}).get("taskDefinition", ""))
    named = [t for t in tasks if reference.endswith(f":{t['name']}") or reference == t["name"]]
    return named[0] if len(named) == 1 else None


def _price_service(plan, e: _Estimate, p, h: int) -> None:
    targets = _of(plan, "aws:appautoscaling/target:Target")
    for service in _of(plan, "aws:ecs/service:Service"):
        inputs = service.get("inputs", {})
        task = _task_definition(plan, service)
        count = _num(inputs.get("desiredCount", 1))
        if task is None or count is None:
            e.unpriced.append(f"ECS service {service['name']}: task size or desiredCount "
                              "unknown in the plan")
            continue
        t = task.get("inputs", {})
        vcpu = _dec(int(t["cpu"])) / 1024
        gb = _dec(int(t["memory"])) / 1024
        arch = (t.get("runtimePlatform") or {}).get("cpuArchitecture", "X86_64")
        suffix = "arm" if arch == "ARM64" else "x86"
        label = "ARM64" if suffix == "arm" else "x86_64"
        tasks_label = f"{count} task{'s' if count != 1 else ''}"
        vcpu_line = e.add("service", f"Fargate vCPU ({tasks_label} x {vcpu} vCPU, {label})",
                          count * vcpu * h, "vCPU-hour", p[f"fargate_vcpu_hour_{suffix}"],
                          note=f"desiredCount {count} x {h} h")
        gb_line = e.add("service", f"Fargate memory ({tasks_label} x {gb} GB, {label})",
                        count * gb * h, "GB-hour", p[f"fargate_gb_hour_{suffix}"],
                        note="20 GB ephemeral storage a task is included")
        for target in targets:
            ceiling = _num(target.get("inputs", {}).get("maxCapacity"))
            if ceiling is not None and ceiling > count:
                extra = ((vcpu_line + gb_line) / count * (ceiling - count)).quantize(CENT)
                e.callouts.append(
                    f"Autoscaling: {service['name']} may run up to {ceiling} tasks; at full "
                    f"scale-out that adds ${extra}/month to the ${vcpu_line + gb_line} here."
                )
        if suffix == "x86":
            arm = (count * h * (vcpu * _dec(p["fargate_vcpu_hour_arm"]["usd"])
                                + gb * _dec(p["fargate_gb_hour_arm"]["usd"]))).quantize(CENT)
            e.callouts.append(
                f"Fargate on ARM64 (`image_platform: linux/arm64`) would cost ${arm}/month "
                f"instead of ${vcpu_line + gb_line} for the same tasks."
            )


def _price_network(plan, e: _Estimate, p, g, h: int) -> None:
    nats = _of(plan, "aws:ec2/natGateway:NatGateway")
    if nats:
        n = len(nats)
        hours = e.add("network", f"NAT gateway ({n}, one per AZ)" if n > 1 else "NAT gateway (1)",
                      n * h, "NAT gateway-hour", p["nat_hour"], note=f"{n} x {h} h")
        gb = e.usage_of("nat_gb", "NAT gateway data processed")
        if gb is not None:
            e.add("network", "NAT gateway data processed", gb, "GB", p["nat_gb"],
                  kind="usage", note="every GB through NAT, in or out, on top of transfer")
        if n > 1:
            one = (_dec(p["nat_hour"]["usd"]) * h).quantize(CENT)
            e.callouts.append(
                f"NAT per AZ: {n} NAT gateways cost ${hours}/month before any traffic, "
                f"${one} each; `nat: single` costs ${one} but an outage of its AZ cuts "
                "egress (image pulls, AWS APIs) for the tasks in the others."
            )
    eips = _of(plan, "aws:ec2/eip:Eip")
    if eips:
        e.add("network", f"public IPv4 addresses (Elastic IPs, {len(eips)})",
              len(eips) * h, "address-hour", g["public_ipv4_hour"],
              note="in-use public IPv4 is billed since 2024-02-01")
    for endpoint in _of(plan, "aws:ec2/vpcEndpoint:VpcEndpoint"):
        if endpoint.get("inputs", {}).get("vpcEndpointType", "Gateway") != "Gateway":
            e.unpriced.append(f"VPC endpoint {endpoint['name']}: interface endpoints "
                              f"have no price in {PRICES_FILE.name}")


def _price_load_balancer(plan, e: _Estimate, p, g, h: int) -> None:
    for alb in _of(plan, "aws:lb/loadBalancer:LoadBalancer"):
        inputs = alb.get("inputs", {})
        if inputs.get("loadBalancerType", "application") != "application":
            e.unpriced.append(f"load balancer {alb['name']}: only ALBs are priced")
            continue
        e.add("load balancer", "Application Load Balancer", h, "ALB-hour", p["alb_hour"])
        lcu = e.usage_of("alb_lcu_average", "ALB capacity units")
        if lcu is not None:
            e.add("load balancer", "ALB capacity units (LCU)", lcu * h, "LCU-hour",
                  p["alb_lcu_hour"], kind="usage", note=f"{lcu} LCU on average x {h} h")
        if not inputs.get("internal", False):
            azs = len(inputs.get("subnets") or []) or 1
            e.add("load balancer", f"ALB public IPv4 addresses ({azs}, one per AZ)",
                  azs * h, "address-hour", g["public_ipv4_hour"],
                  note="at least one per AZ; the ALB adds nodes (and addresses) under load")
        if (inputs.get("accessLogs") or {}).get("enabled"):
            gb = e.usage_of("alb_access_log_gb", "ALB access logs in S3")
            if gb is not None:
                e.add("load balancer", "ALB access logs (S3 Standard)", gb, "GB-month",
                      p["s3_gb_month"], kind="usage")


def _price_database(plan, e: _Estimate, p, h: int) -> None:
    for db in _of(plan, "aws:rds/instance:Instance"):
        inputs = db.get("inputs", {})
        klass = inputs.get("instanceClass")
        multi = bool(inputs.get("multiAz", False))
        rates = p["rds_instance_hour"].get(klass)
        if rates is None:
            e.unpriced.append(f"RDS instance {db['name']}: class {klass!r} has no price in "
                              f"{PRICES_FILE.name} for this Region")
            continue
        deployment = "Multi-AZ" if multi else "Single-AZ"
        instance = e.add("database", f"RDS PostgreSQL {klass} ({deployment})", h,
                         "instance-hour", rates, "multi_az" if multi else "single_az",
                         note="Multi-AZ: primary + standby" if multi else "")
        storage_type = inputs.get("storageType", "gp3")
        gb = _num(inputs.get("allocatedStorage", 20))
        if storage_type != "gp3" or gb is None:
            e.unpriced.append(f"RDS storage of {db['name']}: only gp3 with a known size "
                              "is priced")
            continue
        copies = 2 if multi else 1
        storage = e.add("database", f"RDS gp3 storage ({gb} GB x {copies})", gb * copies,
                        "GB-month", {"usd": p["rds_gp3_gb_month"]["usd"],
                                     "source": p["rds_gp3_gb_month"]["source"]},
                        note=("billed for primary and standby; " if multi else "")
                        + "backup storage up to the DB size is free; 3,000 IOPS included")
        if inputs.get("manageMasterUserPassword"):
            e.add("secrets", f"RDS-managed master password ({db['name']})", 1,
                  "secret-month", p["secret_month"],
                  note="RDS keeps it in Secrets Manager; not a resource in the plan")
        if multi:
            e.callouts.append(
                f"Multi-AZ doubles the database: {klass} costs ${instance}/month instead of "
                f"${(instance / 2).quantize(CENT)}, and storage ${storage} instead of "
                f"${(storage / 2).quantize(CENT)} (the standby is billed in full)."
            )
        ceiling = _num(inputs.get("maxAllocatedStorage"))
        if ceiling is not None and ceiling > gb:
            grown = (ceiling * copies * _dec(p["rds_gp3_gb_month"]["usd"])).quantize(CENT)
            e.callouts.append(
                f"Storage autoscaling may grow {db['name']} to {ceiling} GB: ${grown}/month "
                f"of storage instead of ${storage}."
            )


# What one restore drill keeps a restored instance up, in hours: the restore of a small
# database and its deletion (not measured here; the RDS user guide gives no figure).
DRILL_HOURS = 1
DAYS_PER_MONTH = 30


def _price_backup(plan, e: _Estimate, prices, p) -> None:
    """AWS Backup's tiers, each its own line: the first (shortest) tier holds the first
    full copy of the database plus every day's change it keeps; each longer tier holds
    the changes of the days beyond the shorter one's (an upper bound: a change
    overwritten between two weekly or monthly points is not kept twice)."""
    plans = _of(plan, "aws:backup/plan:Plan")
    if not plans:
        return
    db_gb = sum((_num(db.get("inputs", {}).get("allocatedStorage", 0)) or Decimal(0))
                for db in _of(plan, "aws:rds/instance:Instance"))
    change = e.usage_of("backup_change_gb_per_day", "AWS Backup recovery point storage")
    if change is None:
        return
    copy_vaults = _of(plan, "aws:backup/vault:Vault")
    copy_region = next((v.get("inputs", {}).get("region") for v in copy_vaults
                        if v.get("inputs", {}).get("region")), None)
    rules = sorted((r for bp in plans for r in bp.get("inputs", {}).get("rules") or []),
                   key=lambda r: _num((r.get("lifecycle") or {}).get("deleteAfter", 0))
                   or Decimal(0))
    kept_before = Decimal(0)
    for i, rule in enumerate(rules):
        days = _num((rule.get("lifecycle") or {}).get("deleteAfter", 0)) or Decimal(0)
        gb = (db_gb if i == 0 else Decimal(0)) + change * max(days - kept_before, Decimal(0))
        full = f"the first full copy ({db_gb} GB) + " if i == 0 else ""
        note = (f"{full}{change} GB/day changed x {days - kept_before} days "
                f"beyond the shorter tier")
        e.add("backup", f"AWS Backup {rule.get('ruleName')} tier (kept {days} days)", gb,
              "GB-month", p["backup_rds_gb_month"], kind="usage", note=note)
        if rule.get("copyActions"):
            rates = prices["regions"].get(copy_region) if copy_region else None
            if rates is None or "backup_rds_gb_month" not in rates:
                e.unpriced.append(f"AWS Backup copy of the {rule.get('ruleName')} tier: "
                                  f"Region {copy_region!r} has no backup price")
            else:
                e.add("backup", f"AWS Backup {rule.get('ruleName')} tier, copy in "
                      f"{copy_region}", gb, "GB-month", rates["backup_rds_gb_month"],
                      kind="usage", note="the same points, kept as long, in the second Region")
        kept_before = days
    if copy_region and rules:
        moved = db_gb + change * DAYS_PER_MONTH
        e.add("backup", f"AWS Backup cross-Region copy transfer (to {copy_region})", moved,
              "GB", p["backup_copy_gb"], kind="usage",
              note="the first month: the full copy, then each day's change")
    drills = _of(plan, "aws:backup/restoreTestingSelection:RestoreTestingSelection")
    for db in _of(plan, "aws:rds/instance:Instance") if drills else []:
        klass = db.get("inputs", {}).get("instanceClass")
        rates = p["rds_instance_hour"].get(klass)
        if rates is None:
            e.unpriced.append(f"restore drill of {db['name']}: class {klass!r} has no price")
            continue
        e.add("backup", f"Restore drill: a restored {klass} (Single-AZ), daily",
              DRILL_HOURS * DAYS_PER_MONTH, "instance-hour", rates, "single_az",
              note=f"about {DRILL_HOURS} h a day of the restored instance (not measured); "
                   "restore testing's own per-job charge is not priced")
    first = rules[0] if rules else {}
    figures = recovery.summary("cloud")
    e.callouts.append(f"RPO {figures['rpo']}; RTO {figures['rto']} (docs/cloud.md).")
    e.callouts.append(
        f"AWS Backup keeps {len(rules)} tiers of the database "
        f"({', '.join(str((r.get('lifecycle') or {}).get('deleteAfter')) for r in rules)} "
        f"days); the {first.get('ruleName')} tier holds the full copy. RDS's own automated "
        "backups (point-in-time restore) stay free up to the database's size."
    )


def _price_database_proxy(plan, e: _Estimate, prices, p, h: int) -> None:
    instances = _of(plan, "aws:rds/instance:Instance")
    for proxy in _of(plan, "aws:rds/proxy:Proxy"):
        klass = instances[0].get("inputs", {}).get("instanceClass") if instances else None
        vcpus = prices.get("rds_vcpus", {}).get(klass)
        if vcpus is None or "rds_proxy_vcpu_hour" not in p:
            e.unpriced.append(f"RDS Proxy {proxy['name']}: no vCPU count or price for "
                              f"{klass!r} in {PRICES_FILE.name}")
            continue
        billed = max(2, int(vcpus))
        e.add("database", f"RDS Proxy ({billed} vCPUs of {klass})", billed * h, "vCPU-hour",
              p["rds_proxy_vcpu_hour"], note="billed per vCPU of the instance, at least 2")


def _price_cache(plan, e: _Estimate, p, h: int) -> None:
    for group in _of(plan, "aws:elasticache/replicationGroup:ReplicationGroup"):
        inputs = group.get("inputs", {})
        node_type = inputs.get("nodeType")
        engine = "valkey" if inputs.get("engine", "redis") == "valkey" else "redis"
        shards = _num(inputs.get("numNodeGroups"))
        if shards is not None:
            replicas = _num(inputs.get("replicasPerNodeGroup", 0)) or Decimal(0)
            nodes = shards * (1 + replicas)
        else:
            nodes = _num(inputs.get("numCacheClusters", 1)) or Decimal(1)
        rates = p["cache_node_hour"].get(node_type)
        if rates is None:
            e.unpriced.append(f"cache {group['name']}: node type {node_type!r} has no price "
                              f"in {PRICES_FILE.name} for this Region")
            continue
        label = "Valkey" if engine == "valkey" else "Redis OSS"
        cost = e.add("cache", f"ElastiCache {label} {node_type} ({nodes} node"
                     f"{'s' if nodes != 1 else ''})", nodes * h, "node-hour", rates, engine,
                     note=f"{nodes} x {h} h")
        if nodes > 1:
            e.callouts.append(
                f"The cache replica doubles the cache: {nodes} nodes cost ${cost}/month; "
                "it buys failover, not capacity."
            )


def _price_edge(plan, e: _Estimate, p, g) -> None:
    cdn = _of(plan, "aws:cloudfront/distribution:Distribution")
    gb = None
    if cdn:
        gb = e.usage_of("data_out_gb", "CloudFront data transfer out")
        if gb is not None:
            e.add("cdn", "CloudFront data transfer out", gb, "GB", g["cloudfront_gb_out"],
                  kind="usage", note="US/Europe edge rate; ALB to CloudFront is free; "
                  "free tier (1 TB, 10 M requests) not deducted")
        requests = e.usage_of("requests_per_month", "CloudFront requests")
        if requests is not None:
            e.add("cdn", "CloudFront HTTPS requests", requests / 10_000, "10k requests",
                  g["cloudfront_https_per_10k"], kind="usage")
    elif _of(plan, "aws:lb/loadBalancer:LoadBalancer"):
        gb = e.usage_of("data_out_gb", "data transfer out from the ALB")
        if gb is not None:
            e.add("load balancer", "data transfer out to the internet", gb, "GB",
                  p["internet_gb_out"], kind="usage",
                  note="first 10 TB rate; the 100 GB a month free allowance is not deducted")
    for acl in _of(plan, "aws:wafv2/webAcl:WebAcl"):
        rules = len(acl.get("inputs", {}).get("rules") or [])
        e.add("waf", "WAF web ACL", 1, "web ACL-month", g["waf_web_acl_month"])
        if rules:
            e.add("waf", f"WAF rules and rule groups ({rules})", rules, "rule-month",
                  g["waf_rule_month"], note="an AWS managed rule group counts as one rule")
        requests = e.usage_of("requests_per_month", "WAF requests inspected")
        if requests is not None:
            cost = e.add("waf", "WAF requests inspected", requests / 1_000_000,
                         "million requests", g["waf_million_requests"], kind="usage")
            flood = (_dec(g["waf_million_requests"]["usd"]) * 100).quantize(CENT)
            e.callouts.append(
                f"WAF bills per request, blocked ones too: ${cost}/month at "
                f"{int(requests):,} requests; a flood of 100 million requests adds ${flood}."
            )


def _price_observability(plan, e: _Estimate, prices, p, g) -> None:
    alarms = _of(plan, "aws:cloudwatch/metricAlarm:MetricAlarm")
    if alarms:
        metrics = 0
        for alarm in alarms:
            queries = alarm.get("inputs", {}).get("metricQueries") or []
            metrics += sum(1 for q in queries if q.get("metric")) or 1
        e.add("observability", f"CloudWatch alarms ({len(alarms)}, {metrics} metrics)",
              metrics, "alarm metric-month", p["alarm_month"],
              note="a metric-math alarm bills each metric it reads; free tier not deducted")
    dashboards = _of(plan, "aws:cloudwatch/dashboard:Dashboard")
    if dashboards:
        e.add("observability", f"CloudWatch dashboards ({len(dashboards)})", len(dashboards),
              "dashboard-month", p["dashboard_month"])
    groups = _of(plan, "aws:cloudwatch/logGroup:LogGroup")
    if not groups:
        return
    # (usage key, line, rates, security log?) The security logs (WAF, VPC flow) are kept
    # `security_log_retention_days`, apart from the application's; the components tag them.
    from components._common import SECURITY_LOG_CLASS, SECURITY_LOG_TAG

    streams = [("app_log_gb", "API, database, cache", p, False)]
    if any(f.get("inputs", {}).get("logDestinationType") == "cloud-watch-logs"
           for f in _of(plan, "aws:ec2/flowLog:FlowLog")):
        streams.append(("flow_log_gb", "VPC flow logs", p, True))
    waf_logging = _of(plan, "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration")
    if waf_logging:
        # A CloudFront-scoped ACL logs into us-east-1, whatever the stack's Region.
        where = waf_logging[0].get("inputs", {}).get("region")
        rates = prices["regions"].get(where, p) if where else p
        streams.append(("waf_log_gb", "WAF", rates, True))
    ingested = {False: Decimal(0), True: Decimal(0)}
    names: dict[bool, list[str]] = {False: [], True: []}
    for key, what, rates, security in streams:
        item = f"CloudWatch Logs ingested ({what})"
        gb = e.usage_of(key, item)
        if gb is not None:
            ingested[security] += gb
            names[security].append(what)
            e.add("observability", item, gb, "GB", rates["logs_ingest_gb"], kind="usage")
    for security in (False, True):
        if not ingested[security]:
            continue
        what = ", ".join(names[security])
        kept = [gr for gr in groups if ((gr.get("inputs", {}).get("tags") or {}).get(
            SECURITY_LOG_TAG) == SECURITY_LOG_CLASS) == security] or groups
        retention = max((_num(gr.get("inputs", {}).get("retentionInDays", 30)) or Decimal(30))
                        for gr in kept)
        stored = (ingested[security] * retention / 30).quantize(CENT)
        e.add("observability", f"CloudWatch Logs stored ({what}; {retention} days kept)",
              stored, "GB-month", p["logs_storage_gb_month"], kind="usage",
              note="ingested GB x retention / 30, uncompressed: an upper bound")


def _scrape_interval_seconds(plan) -> Decimal | None:
    """The collector's scrape interval, read from the configuration the plan renders.

    Read as text: the plan writes values known only after apply into the YAML as
    "(known after apply: ...)", which no longer parses.
    """
    for parameter in _of(plan, "aws:ssm/parameter:Parameter"):
        text = parameter.get("inputs", {}).get("insecureValue")
        found = SCRAPE_INTERVAL_RE.search(text) if isinstance(text, str) else None
        if found:
            return _dec(int(found.group(1)))
    return None


def _price_metrics(plan, e: _Estimate, p, h: int) -> None:
    """AMP ingestion: series per task x tasks x seconds a month / scrape interval."""
    for workspace in _of(plan, "aws:amp/workspace:Workspace"):
        interval = _scrape_interval_seconds(plan)
        tasks = sum((_num(s.get("inputs", {}).get("desiredCount", 1)) or Decimal(1))
                    for s in _of(plan, "aws:ecs/service:Service"))
        series = e.usage_of("metrics_series_per_task", "Managed Prometheus samples ingested")
        if interval is None or not tasks:
            e.unpriced.append(f"AMP workspace {workspace['name']}: scrape interval or task "
                              "count unknown in the plan")
            continue
        if series is None:
            continue
        samples = series * tasks * h * 3600 / interval
        e.add("metrics", f"Managed Prometheus samples ingested ({series} series x {tasks} "
              f"task{'s' if tasks != 1 else ''}, every {interval} s)",
              (samples / 10_000_000).quantize(CENT), "10 M samples", p["amp_10m_samples"],
              kind="usage",
              note="first tier (up to 2 billion samples a month); storage "
                   "($0.03/GB-month) and rule queries are cents at this volume, not priced")


def _price_registry_and_secrets(plan, e: _Estimate, p, g) -> None:
    for _repo in _of(plan, "aws:ecr/repository:Repository"):
        gb = e.usage_of("ecr_storage_gb", "ECR image storage")
        if gb is not None:
            e.add("registry", "ECR image storage", gb, "GB-month", p["ecr_gb_month"],
                  kind="usage")
    secrets = _of(plan, "aws:secretsmanager/secret:Secret")
    if secrets:
        e.add("secrets", f"Secrets Manager secrets ({len(secrets)})", len(secrets),
              "secret-month", p["secret_month"], note="API calls ($0.05 per 10k) not priced")
    keys = _of(plan, "aws:kms/key:Key")
    if keys:
        e.add("observability", f"KMS customer managed keys ({len(keys)})", len(keys),
              "key-month", g["kms_key_month"],
              note="each yearly rotation adds $1/month for the first two")
    for bucket in _of(plan, "aws:s3/bucket:Bucket"):
        role = (bucket.get("inputs", {}).get("tags") or {}).get("prodstack:role")
        if role != "access-logs":
            e.unpriced.append(f"S3 bucket {bucket['name']}: no usage figure for its storage")


# --- VPS ------------------------------------------------------------------------------


def _estimate_vps(plan: Mapping[str, Any], usage: Mapping[str, Any],
                  prices: Mapping[str, Any]) -> dict[str, Any]:
    settings = plan.get("settings") or {}
    size = settings.get("size", "medium")
    if size not in SIZES:
        raise UsageError(f"size: {size!r} is invalid; expected {' | '.join(SIZES)}")
    e = _Estimate(prices, usage)
    provider = str(usage.get("vps_provider", VPS_PROVIDERS[0]))
    hosts = settings.get("hosts", 1)
    hosts = len(hosts) if isinstance(hosts, list) else int(hosts)

    def host_line(name: str) -> tuple[dict[str, Any], Decimal]:
        plans = prices["vps"][name]
        chosen = _vps_plan(plans, size, settings)
        if "usd_month" in chosen:
            return chosen, _dec(chosen["usd_month"])
        eur = _dec(prices["global"]["eur_usd"]["usd"])
        return chosen, (_dec(chosen["eur_month"]) * eur).quantize(CENT, ROUND_HALF_UP)

    chosen, monthly = host_line(provider)
    entry = {"usd": monthly, "source": chosen["source"]}
    e.add("host", f"{prices['vps'][provider]['name']} {chosen['plan']} "
          f"({chosen['vcpus']} vCPU, {chosen['memory_gb']} GB)", hosts, "host-month", entry,
          note=f"runs nginx, {settings.get('replicas', 'the size’s')} API replicas, "
          "PostgreSQL and Redis on the host")
    if "eur_month" in chosen:
        e.lines[-1]["note"] += f"; EUR {chosen['eur_month']} at {prices['global']['eur_usd']['usd']} USD/EUR"  # noqa: E501
        e.source(prices["global"]["eur_usd"])
    reference = sizes.VPS[size]
    given = {key: settings.get(key) for key in ("host_cpus", "host_memory_mb")}
    if given == {"host_cpus": reference.host_cpus, "host_memory_mb": reference.host_memory_mb}:
        e.callouts.append(
            f"Priced on `{size}`'s reference host ({reference.host_cpus} vCPU, "
            f"{reference.host_memory_mb // 1024} GB): `size` sets the containers, and "
            "prodstack never resizes the server. For the host you run, give `--data "
            "host_cpus=N --data host_memory_mb=N`."
        )
    for other in VPS_PROVIDERS:
        if other != provider:
            alt, alt_monthly = host_line(other)
            e.callouts.append(
                f"On {prices['vps'][other]['name']} the host is {alt['plan']} at "
                f"${(alt_monthly * hosts).quantize(CENT)}/month "
                f"(`vps_provider = \"{other}\"` in a usage file)."
            )
    bucket = settings.get("backup_s3_bucket")
    region = str(settings.get("backup_s3_region") or "us-east-1")
    if bucket:
        gb = e.usage_of("backup_storage_gb", "off-site backup storage")
        rates = prices["regions"].get(region) or prices["regions"]["us-east-1"]
        if gb is not None:
            endpoint = settings.get("backup_s3_endpoint_url")
            e.add("backups", "off-site backups (S3 Standard)", gb, "GB-month",
                  rates["s3_gb_month"], kind="usage",
                  note=("priced at AWS S3 rates; your endpoint "
                        f"{endpoint} has its own" if endpoint else f"AWS S3 in {region}"))
    else:
        e.callouts.append(
            "No `backup_s3_bucket`: the backups stay on the host's own disk, so losing the "
            "host loses them too (docs/vps.md, section 8)."
        )
    figures = recovery.summary("vps")
    e.callouts.append(
        ("A single host has no failover: a lost database is recovered from backups. "
         if hosts == 1 else f"{hosts} hosts: the database still runs on one of them. ")
        + f"RPO {figures['rpo']}; RTO {figures['rto']} (docs/vps.md)."
    )
    e.callouts.append(
        "The reference VPS figures include a managed PostgreSQL (and Redis, CDN, SMS); this "
        "profile runs PostgreSQL and Redis on the host, so the host is the whole bill."
    )
    return e.result(plan, provider)


def _vps_plan(plans: Mapping[str, Any], size: str, settings: Mapping[str, Any]
              ) -> Mapping[str, Any]:
    """The size's plan, or the smallest that holds the host facts the plan records."""
    memory_mb = settings.get("host_memory_mb")
    cpus = settings.get("host_cpus") or settings.get("host_vcpus")
    if memory_mb is None and cpus is None:
        return plans[size]
    for name in SIZES:
        candidate = plans[name]
        if (memory_mb is None or candidate["memory_gb"] * 1024 >= int(memory_mb)) and \
                (cpus is None or candidate["vcpus"] >= int(cpus)):
            return candidate
    return plans["large"]


# --- Markdown ---------------------------------------------------------------------------


def usd(value: float) -> str:
    """`$1,234.50`, `-$3.00`: dollars as every prodstack report shows them."""
    return f"{'-' if value < 0 else ''}${abs(value):,.2f}"


def _qty(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def reference_line(estimate_: Mapping[str, Any]) -> str:
    if estimate_.get("profile") == "vps":
        return REFERENCE_VPS.get(str(estimate_.get("size") or "medium"), REFERENCE_VPS["medium"])
    return REFERENCE_CLOUD


def render_markdown(estimate_: Mapping[str, Any]) -> str:
    """An itemised table, fixed then usage, the callouts and the reference figures."""
    where = estimate_["region"]
    title = (f"cloud stack `{estimate_['stack']}` in {where}" if estimate_["profile"] == "cloud"
             else f"VPS profile, size `{estimate_.get('size')}`, on {where}")
    out = [f"### Monthly cost: {title}", ""]
    out.append(f"**{usd(estimate_['total_monthly'])} a month** "
               f"({usd(estimate_['fixed_monthly'])} fixed + "
               f"{usd(estimate_['usage_monthly'])} usage), {estimate_['currency']}, "
               "on-demand list prices, before tax.")
    out.append("")
    for kind, heading in (("fixed", "Fixed"), ("usage", "Usage (from the usage profile)")):
        rows = [li for li in estimate_["lines"] if li["kind"] == kind]
        if not rows:
            continue
        out += [f"#### {heading}", "",
                "| component | item | quantity | unit price | monthly |",
                "|---|---|---:|---:|---:|"]
        for li in rows:
            out.append(f"| {li['component']} | {li['item']} | {_qty(li['quantity'])} "
                       f"{li['unit']} | ${li['unit_price']:g} | {usd(li['monthly'])} |")
        subtotal = estimate_[f"{kind}_monthly"]
        out += [f"| | **{kind} subtotal** | | | **{usd(subtotal)}** |", ""]
    if estimate_["callouts"]:
        out += ["#### Watch out", ""] + [f"- {c}" for c in estimate_["callouts"]] + [""]
    if estimate_["unpriced"]:
        out += ["#### Not priced", ""] + [f"- {u}" for u in estimate_["unpriced"]] + [""]
    out += ["#### Beside the reference figures", "",
            f"- This estimate: {usd(estimate_['total_monthly'])} a month.",
            f"- The reference (docs/targets.md): {reference_line(estimate_)}.",
            "- Why they differ: docs/cost.md (\"Results beside the reference figures\").", ""]
    sources = sorted({li["source"] for li in estimate_["lines"]})
    out += ["<details><summary>Price sources</summary>", ""]
    out += [f"- {s}" for s in sources] + ["", "</details>", ""]
    return "\n".join(out)


def dumps(estimate_: Mapping[str, Any]) -> str:
    """The JSON form (`--format json`): sorted keys, one trailing newline."""
    return json.dumps(estimate_, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
