"""prodstack's CrossGuard rules, importable on their own (no PolicyPack, no server).

Each rule is a ``ResourceValidationPolicy`` or ``StackValidationPolicy`` with
enforcement MANDATORY. ``policies/__main__.py`` wraps :data:`ALL_POLICIES` in the pack;
tests call each policy's ``validate`` directly. Properties arrive as the engine sees
them (camelCase input names). The environment comes from the ``prodstack:environment``
tag the components put on every taggable resource.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from components._common import (
    ENVIRONMENT_TAG,
    LOG_RETENTION_DAYS,
    SECRET_NAME_RE,
    TEARDOWN_TAG,
)

PLAIN_HTTP_TAG = "prodstack:plain-http"
MANDATORY = EnforcementLevel.MANDATORY

# ALB TLS 1.3 policy family (docs.aws.amazon.com/elasticloadbalancing/latest/application/
# describe-ssl-policies.html): every name containing "TLS13".
TLS13_POLICY_RE = re.compile(r"^ELBSecurityPolicy-TLS13-")
# CloudFront viewer floors at or above TLSv1.2_2021 (botocore MinimumProtocolVersion).
CLOUDFRONT_MIN_TLS = ("TLSv1.2_2021", "TLSv1.2_2025", "TLSv1.3_2025")
SECRET_VALUE_RES = (
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # credentials inside a URL
    re.compile(r"\bA(KI|SI)A[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)
WORLD = ("0.0.0.0/0", "::/0")
MIN_PROD_BACKUP_DAYS = 7


def _tags(props: Mapping[str, Any]) -> Mapping[str, Any]:
    tags = props.get("tags")
    return tags if isinstance(tags, Mapping) else {}


def _map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else ``{}`` (unknown or secret at preview time)."""
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    """``value`` if it is a list, else ``[]`` (unknown or secret at preview time)."""
    return list(value) if isinstance(value, (list, tuple)) else []


def is_prod(props: Mapping[str, Any]) -> bool:
    """Whether a resource is tagged as part of a prod environment."""
    return _tags(props).get(ENVIRONMENT_TAG) == "prod"


def _resource_policy(
    name: str, description: str, resource_type: str | tuple[str, ...],
    check: Callable[[str, Mapping[str, Any]], Iterable[str]],
) -> ResourceValidationPolicy:
    """A mandatory resource policy running ``check(type, props)`` on one or more types."""
    types = (resource_type,) if isinstance(resource_type, str) else resource_type

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type not in types:
            return
        for message in check(args.resource_type, args.props):
            report(message, None)

    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=MANDATORY
    )


# ---- encryption everywhere --------------------------------------------------------------

def _encryption(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if resource_type == "aws:rds/instance:Instance":
        if props.get("storageEncrypted") is not True:
            yield "RDS storage must be encrypted (storageEncrypted: true)."
    elif resource_type == "aws:elasticache/replicationGroup:ReplicationGroup":
        if props.get("atRestEncryptionEnabled") is not True:
            yield "ElastiCache must encrypt at rest (atRestEncryptionEnabled: true)."
        if props.get("transitEncryptionEnabled") is not True:
            yield "ElastiCache must encrypt in transit (transitEncryptionEnabled: true)."
        if not props.get("authToken"):
            yield "ElastiCache must require an AUTH token."
    elif resource_type == "aws:ecr/repository:Repository" and not props.get(
        "encryptionConfigurations"
    ):
        yield "ECR repositories must set an encryption configuration."
    elif resource_type == "aws:sns/topic:Topic" and not props.get("kmsMasterKeyId"):
        yield "SNS topics must be encrypted with a KMS key (kmsMasterKeyId)."


def _bucket_encryption(args: StackValidationArgs, report: ReportViolation) -> None:
    buckets = [r for r in args.resources if r.resource_type == "aws:s3/bucket:Bucket"]
    configs = [
        r for r in args.resources
        if r.resource_type.startswith(
            "aws:s3/bucketServerSideEncryptionConfiguration:")
    ]
    encrypted = set()
    for config in configs:
        for dep in (config.property_dependencies or {}).get("bucket", []):
            encrypted.add(dep.urn)
        for rule in map(_map, _list(config.props.get("rules"))):
            algorithm = _map(rule.get("applyServerSideEncryptionByDefault")).get("sseAlgorithm")
            if algorithm not in ("AES256", "aws:kms", "aws:kms:dsse"):
                report(f"S3 encryption must use AES256 or KMS, not {algorithm!r}.", config.urn)
    for bucket in buckets:
        if bucket.urn not in encrypted:
            report("S3 bucket has no server-side encryption configuration.", bucket.urn)


encryption_at_rest = _resource_policy(
    "encryption-everywhere",
    "RDS, ElastiCache (at rest, in transit, AUTH), ECR and SNS are encrypted.",
    ("aws:rds/instance:Instance", "aws:elasticache/replicationGroup:ReplicationGroup",
     "aws:ecr/repository:Repository", "aws:sns/topic:Topic"),
    _encryption,
)
s3_buckets_encrypted = StackValidationPolicy(
    name="s3-buckets-encrypted",
    description="Every S3 bucket has a server-side encryption configuration (AES256/KMS).",
    validate=_bucket_encryption,
    enforcement_level=MANDATORY,
)


# ---- no public database or cache -------------------------------------------------------

def _not_public(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("publiclyAccessible") is True:
        yield "Databases must not be publicly accessible (publiclyAccessible: false)."
    if _map(props.get("networkConfiguration")).get("assignPublicIp") is True:
        yield "ECS tasks must not get public IPs (assignPublicIp: false)."


no_public_data_stores = _resource_policy(
    "no-public-database-or-tasks",
    "RDS instances are not publicly accessible; ECS tasks get no public IP.",
    ("aws:rds/instance:Instance", "aws:ecs/service:Service"),
    _not_public,
)


# ---- TLS policies -----------------------------------------------------------------------

def _listener_tls(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    protocol = props.get("protocol")
    if protocol == "HTTPS":
        policy = props.get("sslPolicy") or ""
        if not TLS13_POLICY_RE.match(policy):
            yield f"HTTPS listeners must use a TLS 1.3 policy, not {policy or 'the default'!r}."
        return
    if protocol != "HTTP":
        return
    actions = [_map(a) for a in _list(props.get("defaultActions"))]
    redirects = bool(actions) and all(
        a.get("type") == "redirect" and _map(a.get("redirect")).get("protocol") == "HTTPS"
        for a in actions
    )
    if redirects:
        return
    if _tags(props).get(PLAIN_HTTP_TAG) and not is_prod(props):
        return  # the named, dev-only exception for a stack without a domain
    yield "HTTP listeners must redirect to HTTPS (plain HTTP only outside prod, tagged)."


def _cloudfront_tls(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    cert = _map(props.get("viewerCertificate"))
    if cert.get("cloudfrontDefaultCertificate"):
        if is_prod(props):
            yield "Prod CloudFront needs its own certificate (default cert allows TLSv1)."
    elif cert.get("minimumProtocolVersion") not in CLOUDFRONT_MIN_TLS:
        yield (f"CloudFront minimum TLS must be one of {CLOUDFRONT_MIN_TLS}, "
               f"not {cert.get('minimumProtocolVersion')!r}.")
    behaviours = [
        _map(props.get("defaultCacheBehavior")), *map(_map, _list(props.get(
            "orderedCacheBehaviors")))
    ]
    for behaviour in behaviours:
        if behaviour.get("viewerProtocolPolicy") not in ("redirect-to-https", "https-only"):
            yield "CloudFront behaviours must redirect viewers to HTTPS."
    for origin in map(_map, _list(props.get("origins"))):
        policy = _map(origin.get("customOriginConfig")).get("originProtocolPolicy")
        if policy and policy != "https-only" and is_prod(props):
            yield "Prod CloudFront must reach its origin over HTTPS only."


def _rds_force_ssl(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if not str(props.get("family", "")).startswith("postgres"):
        return
    values = {
        p.get("name"): str(p.get("value")) for p in map(_map, _list(props.get("parameters")))
    }
    if values.get("rds.force_ssl") != "1":
        yield "PostgreSQL parameter groups must set rds.force_ssl=1."


alb_tls = _resource_policy(
    "alb-listener-tls", "HTTPS listeners use TLS 1.3 policies; HTTP only redirects.",
    "aws:lb/listener:Listener", _listener_tls,
)
cloudfront_tls = _resource_policy(
    "cloudfront-tls", "CloudFront: TLSv1.2_2021 floor, HTTPS viewers, HTTPS origin (prod).",
    "aws:cloudfront/distribution:Distribution", _cloudfront_tls,
)
rds_force_ssl = _resource_policy(
    "rds-force-ssl", "PostgreSQL parameter groups force TLS (rds.force_ssl=1).",
    "aws:rds/parameterGroup:ParameterGroup", _rds_force_ssl,
)


# ---- deletion protection and backups in prod -------------------------------------------

def _prod_protection(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    # `teardown: true` is the one named way to lift deletion protection in prod; it
    # tags every resource, so the lifted protection is visible and deliberate.
    teardown = _tags(props).get(TEARDOWN_TAG) == "requested"
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


prod_protection = _resource_policy(
    "prod-deletion-protection-and-backups",
    "In prod: deletion protection, final snapshot, backups >= 7 days.",
    ("aws:rds/instance:Instance", "aws:lb/loadBalancer:LoadBalancer"),
    _prod_protection,
)


# ---- log retention ---------------------------------------------------------------------

def _log_retention(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    days = props.get("retentionInDays")
    if days not in LOG_RETENTION_DAYS:
        yield f"Log groups must set a retention (CloudWatch value), not {days!r}."


log_retention = _resource_policy(
    "log-retention-set", "Every CloudWatch log group has a retention period.",
    "aws:cloudwatch/logGroup:LogGroup", _log_retention,
)


# ---- no secrets in task environment ----------------------------------------------------

def _task_environment(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    raw = props.get("containerDefinitions")
    try:
        containers = json.loads(raw) if isinstance(raw, str) else _list(raw)
    except ValueError:
        return  # unknown until apply; checked again at update time
    for container in map(_map, containers):
        for item in map(_map, _list(container.get("environment"))):
            name, value = str(item.get("name", "")), str(item.get("value", ""))
            if SECRET_NAME_RE.search(name):
                yield (f"Container {container.get('name')!r}: {name} looks secret; "
                       "inject it through `secrets` (Secrets Manager).")
            elif any(r.search(value) for r in SECRET_VALUE_RES):
                yield (f"Container {container.get('name')!r}: the value of {name} looks "
                       "like a credential; inject it through `secrets`.")


no_secrets_in_environment = _resource_policy(
    "no-secrets-in-task-environment",
    "ECS task definitions carry no secret-looking names or values in `environment`.",
    "aws:ecs/taskDefinition:TaskDefinition", _task_environment,
)


# ---- no security group open to the world (except the ALB's 80/443 without CDN) ---------

def _world_open_rules(args: StackValidationArgs, report: ReportViolation) -> None:
    has_cdn = any(
        r.resource_type == "aws:cloudfront/distribution:Distribution" for r in args.resources
    )
    for r in args.resources:
        if r.resource_type == "aws:ec2/securityGroup:SecurityGroup":
            for rule in map(_map, _list(r.props.get("ingress"))):
                if set(rule.get("cidrBlocks") or []) & {WORLD[0]} or set(
                        rule.get("ipv6CidrBlocks") or []) & {WORLD[1]}:
                    report("Inline security-group ingress open to the world.", r.urn)
            continue
        if r.resource_type != "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
            continue
        if r.props.get("cidrIpv4") not in WORLD and r.props.get("cidrIpv6") not in WORLD:
            continue
        groups = (r.property_dependencies or {}).get("securityGroupId") or []
        is_alb = any(_tags(g.props).get("prodstack:role") == "alb-sg" for g in groups)
        ports = {r.props.get("fromPort"), r.props.get("toPort")}
        if has_cdn:
            report("Open to the world while a CDN fronts the ALB: use CloudFront's "
                   "origin-facing prefix list.", r.urn)
        elif not is_alb or not ports <= {80, 443}:
            report("Only the ALB's 80/443 may be open to the world.", r.urn)


no_world_open_security_groups = StackValidationPolicy(
    name="no-world-open-security-groups",
    description="No ingress from 0.0.0.0/0 or ::/0 except the ALB's 80/443 with no CDN.",
    validate=_world_open_rules,
    enforcement_level=MANDATORY,
)


ALL_POLICIES = [
    encryption_at_rest,
    s3_buckets_encrypted,
    no_public_data_stores,
    alb_tls,
    cloudfront_tls,
    rds_force_ssl,
    prod_protection,
    log_retention,
    no_secrets_in_environment,
    no_world_open_security_groups,
]
