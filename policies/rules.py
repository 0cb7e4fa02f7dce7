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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml
from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from components._common import (
    DEPLOYMENT_ALARM_TAG,
    DEPLOYMENT_ALARM_USE,
    ECS_EXEC_TAG,
    ENVIRONMENT_TAG,
    LOG_RETENTION_DAYS,
    PROD_SECURITY_LOG_DAYS,
    RESTORE_SOURCE_TAG,
    SECRET_NAME_RE,
    SECURITY_LOG_CLASS,
    SECURITY_LOG_TAG,
    TEARDOWN_TAG,
)

# The allow-list of ALB policies with TLS 1.3 and nothing below TLS 1.2 (its source is cited
# there); a name test in tests/cloud guards the list itself.
from components.load_balancer import TLS13_POLICIES

PLAIN_HTTP_TAG = "prodstack:plain-http"
MANDATORY = EnforcementLevel.MANDATORY

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
    """``value`` as a list if it is a sequence, else ``[]`` (unknown or secret at preview).

    The engine hands rules its own read-only proxies (``pulumi_policy.proxy``): a list
    arrives as a ``Sequence`` that is not a ``list``, a dict as a ``Mapping``.
    """
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return []


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
        if policy not in TLS13_POLICIES:
            yield (f"HTTPS listeners must use a TLS 1.3 policy with no protocol below TLS 1.2 "
                   f"(components.load_balancer.TLS13_POLICIES), not {policy or 'the default'!r}.")
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
        config = _map(origin.get("customOriginConfig"))
        policy = config.get("originProtocolPolicy")
        if policy and policy != "https-only" and is_prod(props):
            yield "Prod CloudFront must reach its origin over HTTPS only."
        weak = set(_strings(config.get("originSslProtocols"))) - {"TLSv1.2"}
        if weak:
            yield f"CloudFront must not offer {sorted(weak)} to its origin (TLSv1.2 only)."


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


def _db_client_tls(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    # rds.force_ssl makes the server insist on TLS; only the client can insist that the
    # server is the real one: `require` and `verify-ca` accept any (or any RDS) host.
    for container in _containers(props) or []:
        env = {str(e.get("name")): e.get("value")
               for e in map(_map, _list(container.get("environment")))}  # fmt: skip
        if "DB_HOST" not in env:
            continue
        name = container.get("name")
        if env.get("DB_SSLMODE") != "verify-full":
            yield (f"Container {name!r} must connect to PostgreSQL with "
                   f"DB_SSLMODE=verify-full, not {env.get('DB_SSLMODE')!r}.")
        if not env.get("DB_SSLROOTCERT"):
            yield f"Container {name!r} must name the CA bundle it verifies with (DB_SSLROOTCERT)."


db_client_verifies_server = _resource_policy(
    "db-client-verifies-server",
    "Every container that connects to PostgreSQL verifies the server's certificate and "
    "name (DB_SSLMODE=verify-full with a DB_SSLROOTCERT bundle).",
    "aws:ecs/taskDefinition:TaskDefinition", _db_client_tls,
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


# Where the security logs go, besides the tag the components put on their groups: WAF logs
# only to groups named aws-waf-logs-* (WAF developer guide, logging-cw-logs.html), RDS's
# IAM authentication failures to /aws/rds/instance/<id>/iam-db-auth-error, CloudFront's
# standard logs (v2) to the vended-logs prefix components/cdn.py uses, and VPC flow logs to
# whatever group a FlowLog names.
SECURITY_LOG_NAMES = (re.compile(r"^aws-waf-logs-"), re.compile(r"/iam-db-auth-error$"),
                      re.compile(r"^/aws/vendedlogs/cloudfront/"))


def _security_log_groups(args: StackValidationArgs) -> list[Any]:
    flow_destinations = {urn for flow in _of_type(args, "ec2/flowLog:FlowLog")
                         for urn in _linked(flow, "logDestination")}
    found = []
    for group in _of_type(args, "cloudwatch/logGroup:LogGroup"):
        name = str(group.props.get("name") or group.props.get("namePrefix") or "")
        if (_tags(group.props).get(SECURITY_LOG_TAG) == SECURITY_LOG_CLASS
                or group.urn in flow_destinations
                or any(pattern.search(name) for pattern in SECURITY_LOG_NAMES)):
            found.append(group)
    return found


def _security_logs(args: StackValidationArgs, report: ReportViolation) -> None:
    for group in _security_log_groups(args):
        days = group.props.get("retentionInDays")
        if is_prod(group.props) and not (
                isinstance(days, (int, float)) and days >= PROD_SECURITY_LOG_DAYS):
            report(f"Prod security logs (WAF, VPC flow, IAM authentication failures, "
                   f"CloudFront) must be kept at least {PROD_SECURITY_LOG_DAYS} days, not "
                   f"{days!r}: an intrusion is often found months later.", group.urn)


security_logs_kept = StackValidationPolicy(
    name="security-logs-kept",
    description=f"In prod the security logs (WAF, VPC flow, iam-db-auth-error, CloudFront) "
                f"are kept at least {PROD_SECURITY_LOG_DAYS} days.",
    validate=_security_logs,
    enforcement_level=MANDATORY,
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



# ---- shared helpers for the stack rules -------------------------------------------------

def _linked(resource: Any, key: str) -> set[str]:
    """URNs ``resource`` takes input ``key`` from (its property dependencies)."""
    return {dep.urn for dep in (resource.property_dependencies or {}).get(key, [])}


def _of_type(args: StackValidationArgs, suffix: str) -> list[Any]:
    return [r for r in args.resources if r.resource_type.endswith(suffix)]


def _json(value: Any) -> Any:
    """A policy document: parsed if it is JSON text, as is if already parsed, else None."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, Mapping) else None


# How a prodstack plan (prodstack.planfile) writes a value known only after apply. The
# engine hides such values from rules at preview; a rule skips them in plans the same way.
PLAN_UNKNOWN_PREFIX = "(known after apply: "


def _unknown(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PLAN_UNKNOWN_PREFIX)


def _strings(value: Any) -> list[str]:
    """An IAM field that may be one string or a list of them, as a list."""
    if isinstance(value, str):
        return [value]
    return [v for v in _list(value) if isinstance(v, str)]


# ---- WAF: managed groups enforce, the rate rule blocks, the ACL is attached and logs ---

# The AWS managed groups every web ACL enforces (components.waf.MANAGED_RULE_GROUPS, whose
# WCU budget is documented there). Source: docs.aws.amazon.com/waf/latest/developerguide/
# aws-managed-rule-groups-baseline.html and aws-managed-rule-groups-ip-rep.html.
REQUIRED_MANAGED_GROUPS = (
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
)


def _blocks_large_bodies(rules: list[Mapping[str, Any]]) -> bool:
    """Whether a rule of the ACL blocks request bodies above a size (any oversize too)."""
    for rule in rules:
        size = _map(_map(rule.get("statement")).get("sizeConstraintStatement"))
        body = _map(_map(size.get("fieldToMatch")).get("body"))
        if (set(_map(rule.get("action"))) == {"block"} and size.get("comparisonOperator") == "GT"
                and body.get("oversizeHandling") == "MATCH"):
            return True
    return False


def _waf_rules(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    rules = [_map(r) for r in _list(props.get("rules"))]
    enforced = set()
    for rule in rules:
        statement = _map(_map(rule.get("statement")).get("managedRuleGroupStatement"))
        if not statement:
            continue
        group = statement.get("name")
        # Managed groups take override_action: `none` keeps the group's own actions
        # (block), `count` only counts. Source: botocore wafv2 OverrideAction.
        override = _map(rule.get("overrideAction"))
        if set(override) != {"none"}:
            yield (f"WAF rule {rule.get('name')!r} ({group}) must enforce the group "
                   f"(overrideAction none), not {sorted(override) or 'unset'}.")
            continue
        # A rule inside a group may only count when it is the common set's fixed 8 KB
        # body rule and a rule of the ACL blocks bodies over the app's limit instead
        # (components.waf, max_body_bytes).
        for item in map(_map, _list(statement.get("ruleActionOverrides"))):
            if "block" in _map(item.get("actionToUse")):
                continue
            if not (item.get("name") == "SizeRestrictions_BODY" and _blocks_large_bodies(rules)):
                yield (f"WAF rule {rule.get('name')!r} ({group}) must not switch "
                       f"{item.get('name')!r} to {sorted(_map(item.get('actionToUse')))}.")
        if statement.get("vendorName") == "AWS":
            enforced.add(group)
    for group in REQUIRED_MANAGED_GROUPS:
        if group not in enforced:
            yield f"WAF must enforce the AWS managed rule group {group}."
    rate = [r for r in rules
            if _map(r.get("statement")).get("rateBasedStatement") is not None]  # fmt: skip
    if not rate:
        yield "WAF must have a per-IP rate-based rule."
    for rule in rate:
        if set(_map(rule.get("action"))) != {"block"}:
            yield f"WAF rate rule {rule.get('name')!r} must block, not count."
        key = _map(_map(rule.get("statement")).get("rateBasedStatement")).get("aggregateKeyType")
        if key not in ("IP", "FORWARDED_IP"):
            yield f"WAF rate rule {rule.get('name')!r} must count per client IP, not {key!r}."
    if set(_map(props.get("defaultAction"))) - {"allow", "block"}:
        yield "WAF default action must be allow or block."
    for rule in [props, *rules]:
        visibility = _map(rule.get("visibilityConfig"))
        if visibility.get("cloudwatchMetricsEnabled") is not True:
            yield f"WAF {rule.get('name', 'ACL')!r} must publish CloudWatch metrics."


waf_enforces = _resource_policy(
    "waf-managed-rules-enforced",
    "Web ACLs enforce the AWS common, known-bad-inputs and IP-reputation groups "
    "(override none) and a blocking per-IP rate rule; metrics on every rule.",
    "aws:wafv2/webAcl:WebAcl", _waf_rules,
)


def _waf_attached_and_logged(args: StackValidationArgs, report: ReportViolation) -> None:
    attached: set[str] = set()
    for r in _of_type(args, "wafv2/webAclAssociation:WebAclAssociation"):
        attached |= _linked(r, "webAclArn")
    for r in _of_type(args, "cloudfront/distribution:Distribution"):
        attached |= _linked(r, "webAclId")
    redacted: set[str] = set()
    for r in _of_type(args, "wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration"):
        headers = {
            str(_map(_map(f).get("singleHeader")).get("name", "")).lower()
            for f in _list(r.props.get("redactedFields"))
        }
        if "authorization" in headers:
            redacted |= _linked(r, "resourceArn")
        else:
            report("WAF logs must redact the authorization header (the API token).", r.urn)
    for acl in _of_type(args, "wafv2/webAcl:WebAcl"):
        if acl.urn not in attached:
            report("Web ACL is attached to nothing (no association, no distribution).", acl.urn)
        if acl.urn not in redacted:
            report("Web ACL has no logging configuration redacting authorization.", acl.urn)


waf_attached = StackValidationPolicy(
    name="waf-attached-and-logged",
    description="Every web ACL protects something and logs with the authorization header "
                "redacted.",
    validate=_waf_attached_and_logged,
    enforcement_level=MANDATORY,
)


# ---- IAM: no admin, no wildcards, no `Resource: "*"` on writes --------------------------

# AWS managed policies that grant account-wide power. Source: AWS IAM user guide,
# "AWS managed policies for job functions" (access_policies_job-functions.html).
ADMIN_MANAGED_POLICIES = ("AdministratorAccess", "PowerUserAccess", "IAMFullAccess")
# Verbs of read-only actions (Describe*, List*, Get*...) that may take `Resource: "*"` when
# the API has no resource-level permissions. Source: AWS Service Authorization Reference,
# the "Access level" column (List / Read).
READ_VERBS = ("Describe", "List", "Get", "BatchGet", "BatchCheck", "Head")
# Reads that hand out secrets or data: never on every resource.
SENSITIVE_READS = ("secretsmanager:getsecretvalue", "ssm:getparameter", "ssm:getparameters",
                   "ssm:getparametersbypath", "s3:getobject")  # fmt: skip
# Write actions of a service with no resource types, so only `Resource: "*"` can name
# them: ECS Exec's Session Manager channels (ecs_exec: true). Source: AWS Service
# Authorization Reference, Amazon Session Manager Message Gateway Service (no resource
# types); ECS developer guide, ecs-exec.html.
NO_RESOURCE_TYPES = ("ssmmessages:createcontrolchannel", "ssmmessages:createdatachannel",
                     "ssmmessages:opencontrolchannel", "ssmmessages:opendatachannel")
IAM_POLICY_TYPES = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
}
IAM_ATTACHMENT_TYPES = ("aws:iam/rolePolicyAttachment:RolePolicyAttachment",
                        "aws:iam/policyAttachment:PolicyAttachment",
                        "aws:iam/userPolicyAttachment:UserPolicyAttachment",
                        "aws:iam/groupPolicyAttachment:GroupPolicyAttachment")  # fmt: skip


def _is_read(action: str) -> bool:
    service, _, verb = action.partition(":")
    if action.lower() in SENSITIVE_READS or not verb:
        return False
    if "*" in verb:  # Get* also matches GetSecretValue
        return verb.rstrip("*") in ("Describe", "List")
    return verb.startswith(READ_VERBS)


def _statement_problems(document: Any) -> Iterable[str]:
    for statement in map(_map, _list(_map(document).get("Statement")) or [
            _map(document).get("Statement")]):
        if statement.get("Effect") != "Allow":
            continue
        actions = _strings(statement.get("Action"))
        if statement.get("NotAction") is not None:
            yield "Allow with NotAction grants everything else; list the actions."
        if statement.get("NotResource") is not None:
            yield "Allow with NotResource grants every other resource; list the resources."
        for action in actions:
            if action in ("*", "*:*") or action.endswith(":*"):
                yield f"Action {action!r} grants a whole service or everything."
        if "*" in _strings(statement.get("Resource")):
            writes = [a for a in actions
                      if not _is_read(a) and a.lower() not in NO_RESOURCE_TYPES]
            if writes:
                yield f"Resource \"*\" on write or secret-reading actions {sorted(writes)}."


def _admin_arn(arn: Any) -> bool:
    return isinstance(arn, str) and arn.rsplit("/", 1)[-1] in ADMIN_MANAGED_POLICIES


def _iam(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if resource_type == "aws:iam/role:Role":
        for arn in _list(props.get("managedPolicyArns")):
            if _admin_arn(arn):
                yield f"Role carries the admin managed policy {arn}."
        for inline in map(_map, _list(props.get("inlinePolicies"))):
            yield from _statement_problems(_json(inline.get("policy")))
        trust = _json(props.get("assumeRolePolicy"))
        for statement in map(_map, _list(_map(trust).get("Statement"))):
            principal = statement.get("Principal")
            principals = [principal] if isinstance(principal, str) else [
                p for v in _map(principal).values() for p in _strings(v)]
            if "*" in principals:
                yield "Trust policy lets any principal (\"*\") assume the role."
    elif resource_type in IAM_ATTACHMENT_TYPES:
        if _admin_arn(props.get("policyArn")):
            yield f"Admin managed policy {props.get('policyArn')} attached."
    elif resource_type in IAM_POLICY_TYPES:
        document = _json(props.get(IAM_POLICY_TYPES[resource_type]))
        if document is not None:
            yield from _statement_problems(document)


iam_least_privilege = _resource_policy(
    "iam-least-privilege",
    "No admin managed policy, no `*`/`svc:*` actions, no NotAction/NotResource, no "
    "`Resource: \"*\"` on write or secret-reading actions, no `*` trust.",
    ("aws:iam/role:Role", *IAM_POLICY_TYPES, *IAM_ATTACHMENT_TYPES),
    _iam,
)


# ---- security groups: restricted egress, named ingress sources, empty default SG ------

HTTPS_PORT = 443
POSTGRES_PORT = 5432
ALL_PROTOCOLS = ("-1", "all")
DATA_GROUP_ROLES = ("database-sg", "cache-sg")
# An RDS Proxy's own group (components/network.py, database_proxy): a hop between the
# service and the database, admitted by the database on 5432 and reaching nothing else.
PROXY_GROUP_ROLE = "proxy-sg"


def _group_roles(resource: Any, key: str) -> set[str]:
    return {str(_tags(dep.props).get("prodstack:role")) for dep in
            (resource.property_dependencies or {}).get(key, [])}


def _postgres_only(rule: Mapping[str, Any]) -> bool:
    return (str(rule.get("ipProtocol")) == "tcp"
            and rule.get("fromPort") == rule.get("toPort") == POSTGRES_PORT)


def _proxy_groups(args: StackValidationArgs) -> set[str]:
    """URNs of the security groups an RDS Proxy in the stack sits in."""
    return {urn for r in _of_type(args, "rds/proxy:Proxy")
            for urn in _linked(r, "vpcSecurityGroupIds")}


def _egress_problem(rule: Mapping[str, Any], cidrs: list[str]) -> str | None:
    protocol = str(rule.get("ipProtocol", rule.get("protocol", "")))
    if protocol in ALL_PROTOCOLS:
        return "egress must name a protocol (not -1, all protocols)."
    if rule.get("fromPort") != rule.get("toPort"):
        return f"egress must open one port, not {rule.get('fromPort')}-{rule.get('toPort')}."
    if cidrs and not (protocol == "tcp" and rule.get("fromPort") == HTTPS_PORT):
        return "egress to an address range is only for HTTPS (tcp 443) to AWS APIs."
    return None


def _security_group_egress(args: StackValidationArgs, report: ReportViolation) -> None:
    for r in _of_type(args, "vpc/securityGroupEgressRule:SecurityGroupEgressRule"):
        cidrs = [c for c in (r.props.get("cidrIpv4"), r.props.get("cidrIpv6")) if c]
        problem = _egress_problem(r.props, cidrs)
        if problem:
            report(f"Security-group {problem}", r.urn)
        if _group_roles(r, "securityGroupId") & set(DATA_GROUP_ROLES):
            report("Database and cache security groups start no connections (no egress).",
                   r.urn)
        if PROXY_GROUP_ROLE in _group_roles(r, "securityGroupId") and (
                cidrs or not _postgres_only(r.props)
                or _group_roles(r, "referencedSecurityGroupId") != {"database-sg"}):
            report("The RDS Proxy's group reaches only the database's group, on tcp 5432.",
                   r.urn)
    for r in _of_type(args, "ec2/securityGroup:SecurityGroup"):
        for rule in map(_map, _list(r.props.get("egress"))):
            cidrs = [*_strings(rule.get("cidrBlocks")), *_strings(rule.get("ipv6CidrBlocks"))]
            problem = _egress_problem(rule, cidrs)
            if problem:
                report(f"Inline security-group {problem}", r.urn)


security_group_egress = StackValidationPolicy(
    name="security-group-egress-restricted",
    description="Egress names a protocol and one port; address ranges only for HTTPS; "
                "the database and cache groups have no egress; an RDS Proxy's group "
                "reaches only the database's group on 5432.",
    validate=_security_group_egress,
    enforcement_level=MANDATORY,
)


def _security_group_ingress(args: StackValidationArgs, report: ReportViolation) -> None:
    proxy_groups = _proxy_groups(args)
    for r in _of_type(args, "vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        if str(r.props.get("ipProtocol")) in ALL_PROTOCOLS:
            report("Security-group ingress must name a protocol (not -1).", r.urn)
        into = _group_roles(r, "securityGroupId")
        source = _group_roles(r, "referencedSecurityGroupId")
        # The one other client of PostgreSQL: the group an RDS Proxy of this stack sits
        # in, on 5432 (the proxy's own shape is judged below).
        from_proxy = (into == {"database-sg"} and source == {PROXY_GROUP_ROLE}
                      and _postgres_only(r.props)
                      and bool(_linked(r, "referencedSecurityGroupId") & proxy_groups))
        if into & set(DATA_GROUP_ROLES) and source != {"service-sg"} and not from_proxy:
            report("The database and cache admit only the service's security group (and "
                   "the database an RDS Proxy's group on 5432).", r.urn)
        if PROXY_GROUP_ROLE in into and (source != {"service-sg"}
                                         or not _postgres_only(r.props)):
            report("The RDS Proxy's group admits only the service's group, on tcp 5432.",
                   r.urn)
        if r.props.get("referencedSecurityGroupId") or r.props.get("prefixListId"):
            continue
        # An address range is only ever the world on the ALB's web ports (judged by
        # no-world-open-security-groups); anything else must name its source group.
        if "alb-sg" not in _group_roles(r, "securityGroupId") or {
                r.props.get("fromPort"), r.props.get("toPort")} - {80, 443}:
            report("Security-group ingress must name its source security group or prefix "
                   "list (only the ALB's 80/443 take an address range).", r.urn)
    vpcs = {r.urn for r in _of_type(args, "ec2/vpc:Vpc")}
    adopted: set[str] = set()
    for r in _of_type(args, "ec2/defaultSecurityGroup:DefaultSecurityGroup"):
        adopted |= _linked(r, "vpcId")
        if _list(r.props.get("ingress")) or _list(r.props.get("egress")) or not (
                "ingress" in r.props and "egress" in r.props):
            report("The VPC's default security group must be adopted with no rules "
                   "(ingress: [], egress: []; FSBP EC2.2).", r.urn)
    for vpc in sorted(vpcs - adopted):
        report("VPC's default security group is not adopted and emptied.", vpc)


security_group_ingress = StackValidationPolicy(
    name="security-group-ingress-named-sources",
    description="Ingress names a protocol and its source group or prefix list (the ALB's "
                "web ports excepted), the data stores admit only the service's group (the "
                "database also an RDS Proxy's group on 5432), an RDS Proxy's group admits "
                "only the service's on 5432, and every VPC's default security group has no "
                "rules.",
    validate=_security_group_ingress,
    enforcement_level=MANDATORY,
)


def _subnet_public_ip(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("mapPublicIpOnLaunch") is True:
        yield "Subnets must not give instances public IPs (mapPublicIpOnLaunch; FSBP EC2.15)."


subnets_private = _resource_policy(
    "subnets-no-auto-public-ip", "No subnet assigns public IPs on launch.",
    "aws:ec2/subnet:Subnet", _subnet_public_ip,
)


def _flow_logs(args: StackValidationArgs, report: ReportViolation) -> None:
    logged = set()
    for r in _of_type(args, "ec2/flowLog:FlowLog"):
        if r.props.get("trafficType") == "ALL":
            logged |= _linked(r, "vpcId")
    for vpc in _of_type(args, "ec2/vpc:Vpc"):
        if is_prod(vpc.props) and vpc.urn not in logged:
            report("Prod VPCs log all traffic (a flow log with trafficType ALL; FSBP EC2.6).",
                   vpc.urn)


def _data_subnets(args: StackValidationArgs, report: ReportViolation) -> None:
    isolated = {r.urn for r in _of_type(args, "ec2/subnet:Subnet")
                if _tags(r.props).get("prodstack:tier") == "isolated"}  # fmt: skip
    for group in [*_of_type(args, "rds/subnetGroup:SubnetGroup"),
                  *_of_type(args, "elasticache/subnetGroup:SubnetGroup")]:
        outside = _linked(group, "subnetIds") - isolated
        if outside:
            report(f"Data stores live in isolated subnets only, not {sorted(outside)}.",
                   group.urn)
    isolated_tables = set()
    for r in _of_type(args, "ec2/routeTableAssociation:RouteTableAssociation"):
        if _linked(r, "subnetId") & isolated:
            isolated_tables |= _linked(r, "routeTableId")
    for r in _of_type(args, "ec2/route:Route"):
        if _linked(r, "routeTableId") & isolated_tables:
            report("Isolated (data) subnets have no route out of the VPC.", r.urn)


data_subnets_isolated = StackValidationPolicy(
    name="data-subnets-isolated",
    description="RDS and ElastiCache subnet groups use only isolated subnets, whose route "
                "tables have no route out of the VPC.",
    validate=_data_subnets,
    enforcement_level=MANDATORY,
)


vpc_flow_logs = StackValidationPolicy(
    name="vpc-flow-logs-in-prod",
    description="Every prod VPC has a flow log of ALL traffic.",
    validate=_flow_logs,
    enforcement_level=MANDATORY,
)


# ---- S3: every bucket is a log bucket: owner-enforced, private, encrypted, expiring, TLS -

def _tls_only(policy: Any) -> bool:
    for statement in map(_map, _list(_map(_json(policy)).get("Statement"))):
        condition = _map(_map(statement.get("Condition")).get("Bool"))
        if (statement.get("Effect") == "Deny" and statement.get("Principal") in ("*", {"AWS": "*"})
                and "s3:*" in _strings(statement.get("Action"))
                and str(condition.get("aws:SecureTransport")).lower() == "false"
                and len(_strings(statement.get("Resource"))) >= 2):
            return True
    return False


def _log_buckets(args: StackValidationArgs, report: ReportViolation) -> None:
    ownership, private, expiring, tls_only = set(), set(), set(), set()
    for r in _of_type(args, "s3/bucketOwnershipControls:BucketOwnershipControls"):
        if _map(r.props.get("rule")).get("objectOwnership") == "BucketOwnerEnforced":
            ownership |= _linked(r, "bucket")
    for r in _of_type(args, "s3/bucketPublicAccessBlock:BucketPublicAccessBlock"):
        if all(r.props.get(k) is True for k in ("blockPublicAcls", "blockPublicPolicy",
                                                 "ignorePublicAcls", "restrictPublicBuckets")):
            private |= _linked(r, "bucket")
    for r in _of_type(args, "s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"):
        if any(_map(rule).get("status") == "Enabled"
               and (_map(_map(rule).get("expiration")).get("days") or 0) > 0
               for rule in _list(r.props.get("rules"))):
            expiring |= _linked(r, "bucket")
    for r in _of_type(args, "s3/bucketPolicy:BucketPolicy"):
        if _tls_only(r.props.get("policy")):
            tls_only |= _linked(r, "bucket")
    for r in _of_type(args, "s3/bucketAcl:BucketAcl"):
        report("Buckets use no ACLs (BucketOwnerEnforced); remove the BucketAcl.", r.urn)
    for bucket in _of_type(args, "s3/bucket:Bucket"):
        if bucket.props.get("acl") or bucket.props.get("grants"):
            report("Log bucket must not set ACLs or grants.", bucket.urn)
        for missing, have in (
            ("object ownership BucketOwnerEnforced (ACLs off; FSBP S3.12)", ownership),
            ("a public-access block with all four settings on (FSBP S3.8)", private),
            ("a lifecycle rule that expires objects (FSBP S3.13)", expiring),
            ("a policy denying requests without TLS (aws:SecureTransport; FSBP S3.5)", tls_only),
        ):
            if bucket.urn not in have:
                report(f"Log bucket lacks {missing}.", bucket.urn)


log_buckets = StackValidationPolicy(
    name="log-buckets-hardened",
    description="Every bucket (all hold logs): BucketOwnerEnforced, public access blocked, "
                "objects expire, TLS-only policy, no ACLs (encryption: s3-buckets-encrypted).",
    validate=_log_buckets,
    enforcement_level=MANDATORY,
)


def _buckets_versioned(args: StackValidationArgs, report: ReportViolation) -> None:
    versioned, trimmed = set(), set()
    for r in _of_type(args, "s3/bucketVersioning:BucketVersioning"):
        if _map(r.props.get("versioningConfiguration")).get("status") == "Enabled":
            versioned |= _linked(r, "bucket")
    for r in _of_type(args, "s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"):
        if any(_map(rule).get("status") == "Enabled"
               and (_map(_map(rule).get("noncurrentVersionExpiration")).get(
                   "noncurrentDays") or 0) > 0
               for rule in _list(r.props.get("rules"))):
            trimmed |= _linked(r, "bucket")
    for bucket in _of_type(args, "s3/bucket:Bucket"):
        if bucket.urn not in versioned:
            report("Log bucket must be versioned (status Enabled): without versions, anyone "
                   "in the account with delete rights can erase the logs.", bucket.urn)
        if bucket.urn not in trimmed:
            report("A versioned log bucket needs a lifecycle rule expiring noncurrent "
                   "versions (noncurrentVersionExpiration), or deleted logs are kept and "
                   "billed forever.", bucket.urn)


log_buckets_versioned = StackValidationPolicy(
    name="log-buckets-versioned",
    description="Every bucket (all hold logs) is versioned, so a delete leaves the previous "
                "version behind, with a lifecycle rule expiring noncurrent versions.",
    validate=_buckets_versioned,
    enforcement_level=MANDATORY,
)


# ---- RDS and ElastiCache: upgrades, snapshots, CA, logs, failover ---------------------

# RDS certificate authorities in service (2061-2121 expiry); rds-ca-2019 expired in 2024.
# Source: RDS user guide, UsingWithRDS.SSL.html ("Certificate authorities" table).
RDS_CA_IDENTIFIERS = ("rds-ca-rsa2048-g1", "rds-ca-rsa4096-g1", "rds-ca-ecc384-g1")
RDS_LOG_EXPORTS = ("postgresql", "upgrade")


def _rds(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
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
    missing = set(RDS_LOG_EXPORTS) - set(_strings(props.get("enabledCloudwatchLogsExports")))
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


rds_hardened = _resource_policy(
    "rds-instance-hardened",
    "RDS: minor upgrades on with the major version alone pinned, tags copied to snapshots, "
    "CA pinned, RDS-managed password, log exports, Performance Insights, storage "
    "autoscaling, Multi-AZ in prod.",
    "aws:rds/instance:Instance", _rds,
)


def _cache(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if resource_type == "aws:elasticache/parameterGroup:ParameterGroup":
        values = {p.get("name"): p.get("value") for p in map(_map, _list(props.get("parameters")))}
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
    if not any(_map(c).get("logType") == "slow-log"
               for c in _list(props.get("logDeliveryConfigurations"))):
        yield "ElastiCache must ship its slow log."


cache_hardened = _resource_policy(
    "cache-hardened",
    "ElastiCache: minor upgrades on, snapshots kept, TLS required, failover with replicas "
    "(a replica in prod), slow log shipped, eviction on.",
    ("aws:elasticache/replicationGroup:ReplicationGroup",
     "aws:elasticache/parameterGroup:ParameterGroup"),
    _cache,
)


# ---- alarms for the targets (docs/targets.md) -----------------------------------------

# docs/targets.md's service levels: target and ceiling. Each alarm may sit at most at the
# ceiling: p99 < 1000 ms, error rate < 1 %, DB connections < 150, Redis memory
# < 90 %; CPU < 70 % is the scaling signal, and the stack lets cpu_target_percent
# (10-90) move the CPU alarms with it, so 90 is their ceiling; ECS memory < 80 %.
GREATER = ("GreaterThanThreshold", "GreaterThanOrEqualToThreshold")
LESS = ("LessThanThreshold", "LessThanOrEqualToThreshold")


def _metrics(alarm: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(namespace, metric name) pairs an alarm reads, directly or through metric math."""
    found = set()
    if alarm.get("metricName"):
        found.add((str(alarm.get("namespace")), str(alarm.get("metricName"))))
    for query in map(_map, _list(alarm.get("metricQueries"))):
        metric = _map(query.get("metric"))
        if metric.get("metricName"):
            found.add((str(metric.get("namespace")), str(metric.get("metricName"))))
    return found


ELB, ECS, RDS, CACHE = "AWS/ApplicationELB", "AWS/ECS", "AWS/RDS", "AWS/ElastiCache"
# (target, metrics the alarm must read together, comparison, ceiling, resource it needs)
TARGET_ALARMS = (
    ("5xx error rate (ELB and target 5xx over requests)",
     {(ELB, "HTTPCode_ELB_5XX_Count"), (ELB, "HTTPCode_Target_5XX_Count"),
      (ELB, "RequestCount")}, GREATER, 1.0, "lb/loadBalancer:LoadBalancer"),
    ("p99 response time", {(ELB, "TargetResponseTime")}, GREATER, 1.0,
     "lb/loadBalancer:LoadBalancer"),
    ("unhealthy targets", {(ELB, "UnHealthyHostCount")}, GREATER, 0,
     "lb/targetGroup:TargetGroup"),
    ("ECS CPU", {(ECS, "CPUUtilization")}, GREATER, 90, "ecs/service:Service"),
    ("ECS memory", {(ECS, "MemoryUtilization")}, GREATER, 80, "ecs/service:Service"),
    ("RDS CPU", {(RDS, "CPUUtilization")}, GREATER, 90, "rds/instance:Instance"),
    ("RDS connections", {(RDS, "DatabaseConnections")}, GREATER, 150, "rds/instance:Instance"),
    ("RDS free storage", {(RDS, "FreeStorageSpace")}, LESS, None, "rds/instance:Instance"),
    # No request reaches a service with no healthy target: missing data must breach.
    ("no healthy target", {(ELB, "HealthyHostCount")}, LESS, None,
     "lb/targetGroup:TargetGroup"),
    ("ECS running tasks", {("ECS/ContainerInsights", "RunningTaskCount")}, LESS, None,
     "ecs/service:Service"),
)
# Alarms whose silence means "nothing is running": missing data is a breach.
BREACH_WHEN_MISSING = {"no healthy target", "ECS running tasks"}
# Per cache member: (target, metric, ceiling).
TARGET_CACHE_ALARMS = (
    ("Redis memory", (CACHE, "DatabaseMemoryUsagePercentage"), 90),
    ("Redis evictions", (CACHE, "Evictions"), 0),
)


def _alarm_problem(alarm: Any, comparison: tuple[str, ...], ceiling: float | None) -> str:
    props = alarm.props
    if props.get("comparisonOperator") not in comparison:
        return f"compares {props.get('comparisonOperator')!r}, not {' or '.join(comparison)}"
    threshold = props.get("threshold")
    if ceiling is not None and isinstance(threshold, (int, float)) and threshold > ceiling:
        return f"threshold {threshold} is above the target's ceiling {ceiling}"
    if not _list(props.get("alarmActions")):
        return "notifies nobody (no alarmActions)"
    if props.get("actionsEnabled") is False:
        return "has its actions switched off"
    return ""


def _deployment_only(alarm: Any) -> bool:
    """An alarm only ECS deployments watch (tagged so; it notifies nobody)."""
    return _tags(alarm.props).get(DEPLOYMENT_ALARM_TAG) == DEPLOYMENT_ALARM_USE


def _target_alarms(args: StackValidationArgs, report: ReportViolation) -> None:
    alarms = [a for a in _of_type(args, "cloudwatch/metricAlarm:MetricAlarm")
              if not _deployment_only(a)]
    present = {suffix for *_, suffix in TARGET_ALARMS if _of_type(args, suffix)}
    for what, metrics, comparison, ceiling, needs in TARGET_ALARMS:
        if needs not in present:
            continue
        matching = [a for a in alarms if metrics <= _metrics(a.props)]
        if not matching:
            report(f"No alarm for the target: {what} (docs/targets.md).", None)
        for alarm in matching:
            problem = _alarm_problem(alarm, comparison, ceiling)
            if not problem and what in BREACH_WHEN_MISSING and alarm.props.get(
                    "treatMissingData") != "breaching":
                problem = "must treat missing data as breaching (no data: nothing runs)"
            if problem:
                report(f"Alarm for {what} {problem}.", alarm.urn)
    for group in _of_type(args, "elasticache/replicationGroup:ReplicationGroup"):
        members = group.props.get("numCacheClusters") or 1
        for what, metric, ceiling in TARGET_CACHE_ALARMS:
            matching = [a for a in alarms if metric in _metrics(a.props)]
            if len(matching) < members:
                report(f"{what}: {len(matching)} alarm(s) for {members} cache member(s).",
                       group.urn)
            for alarm in matching:
                problem = _alarm_problem(alarm, GREATER, ceiling)
                if problem:
                    report(f"Alarm for {what} {problem}.", alarm.urn)


alarms_for_the_targets = StackValidationPolicy(
    name="alarms-for-the-targets",
    description="Each service-level target (docs/targets.md) has an alarm (5xx rate, p99, "
                "unhealthy and no "
                "healthy targets, running tasks, CPU, memory, DB connections and storage, "
                "Redis memory and evictions) at or under the target's ceiling, notifying "
                "someone.",
    validate=_target_alarms,
    enforcement_level=MANDATORY,
)


# ---- load balancer: header hygiene, logs in prod, only CloudFront behind a CDN ---------

def _alb(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("dropInvalidHeaderFields") is not True:
        yield "ALB must drop invalid header fields (dropInvalidHeaderFields; FSBP ELB.4)."
    if props.get("desyncMitigationMode") in ("monitor",):
        yield "ALB desync mitigation must stay defensive or strictest (FSBP ELB.12)."
    if is_prod(props) and _map(props.get("accessLogs")).get("enabled") is not True:
        yield "Prod ALB must write access logs (FSBP ELB.5)."


# The app's liveness endpoint (app/api/routes/health.py); readiness (/health/ready)
# fails with PostgreSQL or Redis, which would take every target out at once.
LIVENESS_PATH = "/health/live"


def _target_group(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    check = _map(props.get("healthCheck"))
    if check.get("enabled") is False:
        yield "Target groups must health-check their targets."
    if check.get("path") != LIVENESS_PATH:
        yield (f"Target health checks use liveness ({LIVENESS_PATH}), not "
               f"{check.get('path')!r}: a database or Redis blip must not fail every target.")


target_group_liveness = _resource_policy(
    "target-group-liveness-check",
    f"Target groups health-check {LIVENESS_PATH} (liveness, not readiness).",
    "aws:lb/targetGroup:TargetGroup", _target_group,
)


alb_hardened = _resource_policy(
    "alb-hardened",
    "ALBs drop invalid headers, keep desync mitigation, and log access in prod.",
    "aws:lb/loadBalancer:LoadBalancer", _alb,
)


def _alb_gate(args: StackValidationArgs, report: ReportViolation) -> None:
    if not _of_type(args, "cloudfront/distribution:Distribution"):
        return
    for listener in _of_type(args, "lb/listener:Listener"):
        for action in map(_map, _list(listener.props.get("defaultActions"))):
            if action.get("type") == "forward":
                report("Behind a CDN, listeners forward only requests carrying the origin "
                       "header (default action must not forward).", listener.urn)
    for rule in _of_type(args, "lb/listenerRule:ListenerRule"):
        if not any(_map(a).get("type") == "forward" for a in _list(rule.props.get("actions"))):
            continue
        headers = [_map(_map(c).get("httpHeader")) for c in _list(rule.props.get("conditions"))]
        if not any(h.get("httpHeaderName") == "X-Origin-Verify" and _list(h.get("values"))
                   for h in headers):
            report("Behind a CDN, a forwarding listener rule must match the X-Origin-Verify "
                   "header.", rule.urn)


# How a prodstack plan writes a secret input (prodstack.planfile: "[secret]" or
# "[secret:KEY@VERSION]"); the engine hands rules the value itself.
PLAN_SECRET_PREFIX = "[secret"
# A header a forwarding rule trusts is a generated secret: the origin secret and blue/green's
# test route are 40 random characters (stacks/program.py).
MIN_HEADER_SECRET_LENGTH = 32


def _guessable(value: Any) -> bool:
    if not isinstance(value, str) or _unknown(value) or value.startswith(PLAN_SECRET_PREFIX):
        return False  # a secret or a value known only after apply
    return len(value) < MIN_HEADER_SECRET_LENGTH or bool(set(value) & set("*?"))


def _header_secrets(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if not any(_map(a).get("type") == "forward" for a in _list(props.get("actions"))):
        return
    for condition in map(_map, _list(props.get("conditions"))):
        header = _map(condition.get("httpHeader"))
        guessable = [v for v in _list(header.get("values")) if _guessable(v)]
        if guessable:
            yield (f"A forwarding rule matching {header.get('httpHeaderName')} must require a "
                   f"generated secret (>= {MIN_HEADER_SECRET_LENGTH} characters, no "
                   f"wildcards), not {guessable}: anyone can send a constant header.")


alb_header_routes_secret = _resource_policy(
    "alb-header-routes-need-secrets",
    "A listener rule that forwards on a header (CloudFront's origin check, blue/green's "
    "test route) matches a generated secret, never a guessable constant.",
    "aws:lb/listenerRule:ListenerRule", _header_secrets,
)


alb_gated_behind_cdn = StackValidationPolicy(
    name="alb-forwards-only-cdn-requests",
    description="With CloudFront in front, the ALB forwards only requests carrying "
                "CloudFront's secret X-Origin-Verify header.",
    validate=_alb_gate,
    enforcement_level=MANDATORY,
)


# ---- ECS: hardened tasks, safe deploys, Container Insights ---------------------------

def _containers(props: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    raw = props.get("containerDefinitions")
    try:
        return [_map(c) for c in (json.loads(raw) if isinstance(raw, str) else _list(raw))]
    except ValueError:
        return None


def _task(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("networkMode") != "awsvpc":
        yield "Tasks use awsvpc networking (their own security group; FSBP ECS.17)."
    for c in _containers(props) or []:
        name = c.get("name")
        if c.get("readonlyRootFilesystem") is not True:
            yield f"Container {name!r} must have a read-only root filesystem (FSBP ECS.5)."
        user = str(c.get("user") or "").split(":")[0]
        if not user.isdigit() or user == "0":
            yield f"Container {name!r} must run as a numeric non-root user, not {user!r}."
        if c.get("privileged") is True:
            yield f"Container {name!r} must not be privileged (FSBP ECS.4)."
        capabilities = _map(_map(c.get("linuxParameters")).get("capabilities"))
        if "ALL" not in _strings(capabilities.get("drop")) or _list(capabilities.get("add")):
            yield f"Container {name!r} must drop ALL capabilities and add none."
        if _map(c.get("logConfiguration")).get("logDriver") != "awslogs":
            yield f"Container {name!r} must log to CloudWatch (awslogs; FSBP ECS.9)."
        if not _unknown(c.get("image")) and "@sha256:" not in str(c.get("image", "")):
            yield f"Container {name!r} must run an image pinned by digest."
        if c.get("essential") is True and c.get("portMappings") and not c.get("healthCheck"):
            yield f"Serving container {name!r} needs a health check."
    containers = _containers(props) or []
    # Gates are the one-shot steps of the serving container's own image (migrate); a
    # non-essential container of another image is a sidecar (ecs-sidecars-non-essential).
    serving_images = {c.get("image") for c in containers
                      if c.get("essential") is True and c.get("portMappings")}
    gates = {c.get("name") for c in containers
             if c.get("essential") is False and c.get("image") in serving_images}
    for c in containers:
        if c.get("essential") is True and c.get("portMappings") and gates:
            waits = {d.get("containerName") for d in map(_map, _list(c.get("dependsOn")))
                     if d.get("condition") == "SUCCESS"}  # fmt: skip
            if gates - waits:
                yield (f"Serving container {c.get('name')!r} must start only after "
                       f"{sorted(gates - waits)} succeed (dependsOn SUCCESS).")


ecs_task_hardened = _resource_policy(
    "ecs-task-hardened",
    "Task definitions: awsvpc; containers read-only, non-root, unprivileged, ALL "
    "capabilities dropped, awslogs, image by digest; the serving container is "
    "health-checked and starts only after the migration succeeded.",
    "aws:ecs/taskDefinition:TaskDefinition", _task,
)


def _sidecars(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    containers = _containers(props) or []
    serving = [c for c in containers if c.get("essential") is True and c.get("portMappings")]
    images = {c.get("image") for c in serving}
    for c in containers:
        if not serving or c.get("image") in images:
            continue
        name = c.get("name")
        if c.get("essential") is not False:
            yield (f"Sidecar {name!r} must be essential: false, so its crash never stops "
                   "the serving container's task.")
        if c.get("portMappings"):
            yield f"Sidecar {name!r} must publish no port (it reads the API on localhost)."
        for s in serving:
            waits = {d.get("containerName") for d in map(_map, _list(s.get("dependsOn")))}
            if name in waits:
                yield (f"Serving container {s.get('name')!r} must not wait for sidecar "
                       f"{name!r}.")


ecs_sidecars_non_essential = _resource_policy(
    "ecs-sidecars-non-essential",
    "A container running another image than the serving container's (the metrics "
    "collector) is non-essential, publishes no port, and the serving container does not "
    "wait for it.",
    "aws:ecs/taskDefinition:TaskDefinition", _sidecars,
)


def _ecs_service(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if resource_type == "aws:ecs/cluster:Cluster":
        settings = {s.get("name"): s.get("value") for s in map(_map, _list(props.get("settings")))}
        if settings.get("containerInsights") not in ("enabled", "enhanced"):
            yield "ECS clusters must keep Container Insights on (FSBP ECS.12)."
        return
    if (props.get("enableExecuteCommand") is True and is_prod(props)
            and _tags(props).get(ECS_EXEC_TAG) != "allowed-in-prod"):
        yield ("ECS Exec must stay off in prod (a shell into production tasks), unless "
               "allowed by name (ecs_exec_in_prod: the prodstack:ecs-exec tag).")
    strategy = _map(props.get("deploymentConfiguration")).get("strategy", "ROLLING")
    if strategy == "BLUE_GREEN":
        alarms = _map(props.get("alarms"))
        if not (alarms.get("enable") is True and alarms.get("rollback") is True
                and _list(alarms.get("alarmNames"))):
            yield "Blue/green deploys must roll back on their deployment alarms."
    else:
        breaker = _map(props.get("deploymentCircuitBreaker"))
        if not (breaker.get("enable") is True and breaker.get("rollback") is True):
            yield "Rolling deploys must roll back on the circuit breaker (enable + rollback)."
        if (props.get("deploymentMinimumHealthyPercent") or 0) < 100:
            yield "Rolling deploys must keep every serving task (minimum healthy 100%)."


def _blue_green(args: StackValidationArgs, report: ReportViolation) -> None:
    alarms = {a.props.get("name"): a for a in _of_type(args, "cloudwatch/metricAlarm:MetricAlarm")}
    for service in _of_type(args, "ecs/service:Service"):
        if _map(service.props.get("deploymentConfiguration")).get("strategy") != "BLUE_GREEN":
            continue
        named = [alarms.get(n) for n in _strings(_map(service.props.get("alarms")).get(
            "alarmNames"))]
        if None in named:
            report("Blue/green rollback names an alarm the stack does not create.", service.urn)
        watched = set().union(*(_metrics(a.props) for a in named if a is not None))
        for metric, what in (((ELB, "HealthyHostCount"), "healthy targets"),
                             ((ELB, "HTTPCode_Target_5XX_Count"), "the 5xx error rate")):
            if metric not in watched:
                report(f"Blue/green must roll back on {what}.", service.urn)
        bake = _map(service.props.get("deploymentConfiguration")).get("bakeTimeInMinutes")
        if not str(bake or "0").isdigit() or int(str(bake or "0")) < 1:
            report("Blue/green needs a bake time before the old set goes away.", service.urn)
        for lb in map(_map, _list(service.props.get("loadBalancers"))):
            advanced = _map(lb.get("advancedConfiguration"))
            if not (advanced.get("alternateTargetGroupArn") and advanced.get(
                    "productionListenerRule") and advanced.get("testListenerRule")):
                report("Blue/green needs an alternate target group and production and test "
                       "listener rules.", service.urn)
            elif advanced.get("alternateTargetGroupArn") == lb.get("targetGroupArn"):
                report("Blue/green's alternate target group must differ from the live one.",
                       service.urn)


TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
REQUESTS_PER_TARGET = (ELB, "RequestCountPerTarget")
_QUERY_ID = re.compile(r"\b[a-z][A-Za-z0-9_]*\b")


def _request_target_groups(config: Mapping[str, Any]) -> set[str] | None:
    """The TargetGroup dimensions whose RequestCountPerTarget feeds a target tracking
    configuration's metric (through its metric math), or None when it does not scale on
    requests. The predefined ALBRequestCountPerTarget reads one group, its resource label."""
    predefined = _map(config.get("predefinedMetricSpecification"))
    if predefined.get("predefinedMetricType") == "ALBRequestCountPerTarget":
        return {str(predefined.get("resourceLabel"))}
    custom = _map(config.get("customizedMetricSpecification"))
    if not custom:
        return None
    if (str(custom.get("namespace")), str(custom.get("metricName"))) == REQUESTS_PER_TARGET:
        return {str(d.get("value")) for d in map(_map, _list(custom.get("dimensions")))
                if d.get("name") == "TargetGroup"}
    queries = {str(q.get("id")): q for q in map(_map, _list(custom.get("metrics")))}
    returned = [i for i, q in queries.items() if q.get("returnData") is not False]
    seen: set[str] = set()
    groups: set[str] = set()
    reads = False
    while returned:
        qid = returned.pop()
        if qid in seen or qid not in queries:
            continue
        seen.add(qid)
        query = queries[qid]
        returned += _QUERY_ID.findall(str(query.get("expression") or ""))
        metric = _map(_map(query.get("metricStat")).get("metric"))
        if (str(metric.get("namespace")), str(metric.get("metricName"))) == REQUESTS_PER_TARGET:
            reads = True
            groups |= {str(d.get("value")) for d in map(_map, _list(metric.get("dimensions")))
                       if d.get("name") == "TargetGroup"}
    return groups if reads else None


def _scaling_policies_of(args: StackValidationArgs, service: Any) -> list[Any]:
    """The scaling policies of ``service``: their resourceId comes from a scaling target
    whose resourceId comes from the service."""
    targets = {t.urn for t in _of_type(args, "appautoscaling/target:Target")
               if service.urn in _linked(t, "resourceId")}
    return [p for p in _of_type(args, "appautoscaling/policy:Policy")
            if _linked(p, "resourceId") & targets]


def _request_scaling(args: StackValidationArgs, report: ReportViolation) -> None:
    for service in _of_type(args, "ecs/service:Service"):
        if _map(service.props.get("deploymentConfiguration")).get("strategy") != "BLUE_GREEN":
            continue
        groups = {dep.urn for dep in (service.property_dependencies or {}).get(
            "loadBalancers", []) if dep.resource_type == TARGET_GROUP}
        wanted = max(len(groups), 2)  # blue and green
        scaling = [(p, _request_target_groups(_map(p.props.get(
            "targetTrackingScalingPolicyConfiguration"))))
            for p in _scaling_policies_of(args, service)]
        scaling = [(p, read) for p, read in scaling if read is not None]
        if not scaling:
            report("A blue/green service must scale on requests per task over both of its "
                   "target groups.", service.urn)
        for policy, read in scaling:
            linked = {dep.urn for dep in (policy.property_dependencies or {}).get(
                "targetTrackingScalingPolicyConfiguration", [])
                if dep.resource_type == TARGET_GROUP}
            if len(read) < wanted or (linked and groups - linked):
                report("Request-count scaling watches one target group, but blue/green "
                       "moves production traffic to the other one on every deployment: "
                       "scale on RequestCountPerTarget of every group the service "
                       "registers in (metric math over both).", policy.urn)


request_scaling_every_group = StackValidationPolicy(
    name="request-scaling-watches-every-target-group",
    description="A blue/green service scales on requests per task read from both of its "
                "target groups, so request-based scale-out keeps working after production "
                "moves to the other group.",
    validate=_request_scaling,
    enforcement_level=MANDATORY,
)


def _deployment_alarms(args: StackValidationArgs, report: ReportViolation) -> None:
    alarms = {a.props.get("name"): a for a in _of_type(args, "cloudwatch/metricAlarm:MetricAlarm")}
    for service in _of_type(args, "ecs/service:Service"):
        for name in _strings(_map(service.props.get("alarms")).get("alarmNames")):
            alarm = alarms.get(name)
            if alarm is None:
                continue  # blue-green-rolls-back reports an alarm the stack lacks
            treat = alarm.props.get("treatMissingData")
            if treat != "notBreaching":
                report(f"Deployments roll back on {name}, which treats missing data as "
                       f"{treat!r}: during an outage it is already in ALARM and rolls back the "
                       "fix. A deployment alarm treats missing data as notBreaching.",
                       alarm.urn)
            # A below-threshold alarm whose gaps are filled (FILL(m, 0) on a count) sees
            # missing data as a low value: a breach, whatever treatMissingData says.
            fills = [q for q in map(_map, _list(alarm.props.get("metricQueries")))
                     if "FILL(" in str(q.get("expression", "")).upper()]
            if fills and alarm.props.get("comparisonOperator") in LESS:
                report(f"Deployment alarm {name} fills gaps (FILL) and alarms below its "
                       "threshold: a filled gap is a low value, so missing data breaches "
                       "whatever treatMissingData says.", alarm.urn)


deployment_alarms_quiet = StackValidationPolicy(
    name="deployment-alarms-quiet-on-missing-data",
    description="The alarms an ECS deployment rolls back on treat missing data as not "
                "breaching (and a below-threshold one fills no gaps), so an outage does not "
                "roll back its fix.",
    validate=_deployment_alarms,
    enforcement_level=MANDATORY,
)


blue_green_guarded = StackValidationPolicy(
    name="blue-green-rolls-back",
    description="A BLUE_GREEN service rolls back on existing alarms for healthy targets and "
                "the 5xx rate, bakes before retiring blue, and has an alternate target group "
                "with production and test listener rules.",
    validate=_blue_green,
    enforcement_level=MANDATORY,
)


ecs_service_safe = _resource_policy(
    "ecs-safe-deploys",
    "ECS services roll back failed deploys (circuit breaker, or alarms for blue/green), "
    "keep capacity while rolling, no ECS Exec in prod unless allowed by name; clusters keep "
    "Container Insights.",
    ("aws:ecs/service:Service", "aws:ecs/cluster:Cluster"), _ecs_service,
)


# ---- ECR, KMS, Secrets Manager, CloudFront caching -----------------------------------

def _ecr(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("imageTagMutability") != "IMMUTABLE":
        yield "ECR tags must be immutable (FSBP ECR.2)."
    if _map(props.get("imageScanningConfiguration")).get("scanOnPush") is not True:
        yield "ECR must scan images on push (FSBP ECR.1)."
    if (is_prod(props) and props.get("forceDelete") is True
            and _tags(props).get(TEARDOWN_TAG) != "requested"):
        yield "Prod ECR repositories must not be force-deletable (or the teardown tag)."


def _ecr_lifecycle(args: StackValidationArgs, report: ReportViolation) -> None:
    kept = set()
    for r in _of_type(args, "ecr/lifecyclePolicy:LifecyclePolicy"):
        kept |= _linked(r, "repository")
    for repo in _of_type(args, "ecr/repository:Repository"):
        if repo.urn not in kept:
            report("ECR repository has no lifecycle policy (FSBP ECR.3).", repo.urn)


ecr_hardened = _resource_policy(
    "ecr-repository-hardened",
    "ECR: immutable tags, scan on push, not force-deletable in prod.",
    "aws:ecr/repository:Repository", _ecr,
)
ecr_lifecycle = StackValidationPolicy(
    name="ecr-lifecycle-policy",
    description="Every ECR repository expires old images through a lifecycle policy.",
    validate=_ecr_lifecycle,
    enforcement_level=MANDATORY,
)


def _kms(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("enableKeyRotation") is not True:
        yield "KMS keys must rotate (enableKeyRotation; FSBP KMS.4)."
    for statement in map(_map, _list(_map(_json(props.get("policy"))).get("Statement"))):
        principal = statement.get("Principal")
        if statement.get("Effect") == "Allow" and (
                principal == "*" or "*" in _strings(_map(principal).get("AWS"))):
            yield "KMS key policy must not allow any principal (\"*\")."


kms_rotation = _resource_policy(
    "kms-keys-rotate", "Customer-managed KMS keys rotate and allow no `*` principal.",
    "aws:kms/key:Key", _kms,
)


def _secret(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    window = props.get("recoveryWindowInDays")
    if is_prod(props) and window is not None and window < 7:
        yield f"Prod secrets must stay recoverable for 7-30 days, not {window}."


secrets_recoverable = _resource_policy(
    "secrets-recoverable-in-prod",
    "Prod secrets keep a 7-30 day recovery window (no immediate delete).",
    "aws:secretsmanager/secret:Secret", _secret,
)

# Managed cache policy CachingDisabled. Source: CloudFront developer guide,
# using-managed-cache-policies.html (components.cdn cites the same).
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
NEVER_CACHED = ("/api/*", "/health/*")


def _cloudfront_cache(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    by_path = {_map(b).get("pathPattern"): _map(b)
               for b in _list(props.get("orderedCacheBehaviors"))}  # fmt: skip
    for path in NEVER_CACHED:
        if by_path.get(path, {}).get("cachePolicyId") != CACHING_DISABLED:
            yield f"CloudFront must never cache {path} (CachingDisabled policy)."


# Managed cache policies whose key holds Host, so the viewer's Host reaches the origin:
# UseOriginCacheControlHeaders (ID from third-party sources, as in
# ../shared/notes/aws-valid-values.md; the program no longer uses it) and Amplify (AWS's
# using-managed-cache-policies.html lists Host in its key).
MANAGED_HOST_KEYED = {
    "83da9c7e-98b4-4e11-a168-04f0df8e2c65": "Managed-UseOriginCacheControlHeaders",
    "2e54312d-136d-493c-8eb9-b001f22f67d2": "Managed-Amplify",
}


def _keys_on_host(policy: Mapping[str, Any]) -> bool:
    headers = _map(_map(policy.get("parametersInCacheKeyAndForwardedToOrigin")).get(
        "headersConfig"))
    items = _strings(_map(headers.get("headers")).get("items"))
    return headers.get("headerBehavior") != "none" and "host" in {i.lower() for i in items}


def _cloudfront_host(args: StackValidationArgs, report: ReportViolation) -> None:
    for policy in _of_type(args, "cloudfront/cachePolicy:CachePolicy"):
        if _keys_on_host(policy.props):
            report("A cache policy must not put Host in the cache key: CloudFront sends "
                   "whatever the key holds to the origin, past AllViewerExceptHostHeader.",
                   policy.urn)
    for distribution in _of_type(args, "cloudfront/distribution:Distribution"):
        behaviours = [_map(distribution.props.get("defaultCacheBehavior")),
                      *map(_map, _list(distribution.props.get("orderedCacheBehaviors")))]
        for behaviour in behaviours:
            managed = MANAGED_HOST_KEYED.get(str(behaviour.get("cachePolicyId")))
            if managed:
                report(f"{behaviour.get('pathPattern', 'The default behaviour')} uses "
                       f"{managed}, whose cache key holds Host: the viewer's Host reaches "
                       "the ALB. Use a cache policy without Host.", distribution.urn)


cloudfront_origin_host = StackValidationPolicy(
    name="cloudfront-host-not-forwarded",
    description="No CloudFront behaviour's cache key holds Host (a stack cache policy with "
                "Host, or a managed one known to have it), so the origin sees its own name.",
    validate=_cloudfront_host,
    enforcement_level=MANDATORY,
)


cloudfront_api_uncached = _resource_policy(
    "cloudfront-api-never-cached",
    "CloudFront serves /api/* and /health/* with the CachingDisabled policy.",
    "aws:cloudfront/distribution:Distribution", _cloudfront_cache,
)


# ---- confused deputy: service principals only for this account's resources ------------

def _service_statements(document: Any) -> Iterable[Mapping[str, Any]]:
    for statement in map(_map, _list(_map(_json(document)).get("Statement"))):
        if statement.get("Effect") == "Allow" and _map(statement.get("Principal")).get(
                "Service"):
            yield statement


def _condition_keys(statement: Mapping[str, Any]) -> set[str]:
    return {k for block in _map(statement.get("Condition")).values() for k in _map(block)}


def _deputy_problem(statement: Mapping[str, Any]) -> str:
    keys = _condition_keys(statement)
    missing = {"aws:SourceAccount", "aws:SourceArn"} - keys
    if missing:
        service = _map(statement.get("Principal")).get("Service")
        return f"{service} grant lacks {sorted(missing)} (confused deputy)"
    return ""


# Service principals whose role assumption AWS documents with a trust policy that has no
# condition, and names neither aws:SourceArn nor aws:SourceAccount for: a condition on a key
# the service does not send fails every assumption. Their roles must keep exactly that
# documented policy (`iam-trust-as-documented`) instead of the confused-deputy keys.
# Sources: ECS developer guide, AmazonECSInfrastructureRolePolicyForLoadBalancers.html
# (ecs-infrastructure-trust-policy.json); RDS user guide, rds-proxy-iam-setup.html (the
# "RDS - Add Role to Database" use case).
DOCUMENTED_TRUST = ("ecs.amazonaws.com", "rds.amazonaws.com")


def _documented_principal(statement: Mapping[str, Any]) -> bool:
    services = _strings(_map(statement.get("Principal")).get("Service"))
    return bool(services) and set(services) <= set(DOCUMENTED_TRUST)


def _trust(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    for statement in _service_statements(props.get("assumeRolePolicy")):
        if _documented_principal(statement):
            continue  # iam-trust-as-documented holds these to AWS's own policy
        problem = _deputy_problem(statement)
        if problem:
            yield f"Trust policy: {problem}."


def _documented_trust(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    statements = [_map(s) for s in _list(_map(_json(props.get("assumeRolePolicy"))).get(
        "Statement"))]
    documented = [s for s in statements if _documented_principal(s)]
    if not documented:
        return
    for statement in statements:
        principal = _map(statement.get("Principal"))
        service = _strings(principal.get("Service"))
        if statement.get("Effect") != "Allow":
            continue
        if statement not in documented or set(principal) != {"Service"} or len(service) != 1:
            yield (f"A role {'/'.join(DOCUMENTED_TRUST)} assumes trusts only that one service "
                   f"principal, as AWS documents it, not {dict(principal)}.")
        elif _strings(statement.get("Action")) != ["sts:AssumeRole"]:
            yield (f"{service[0]} may only sts:AssumeRole this role, not "
                   f"{_strings(statement.get('Action'))}.")
        elif statement.get("Condition"):
            yield (f"{service[0]}'s trust must stay as AWS documents it, without conditions: "
                   f"AWS does not document that it sends {sorted(_condition_keys(statement))} "
                   "when it assumes this role, and an assumption without them fails.")


# CloudWatch Logs uses a key for a log group, and says which one in the encryption context
# (kms:EncryptionContext:aws:logs:arn, the log group's ARN); AWS documents the key policy
# for its Regional principal with that condition, not with aws:SourceArn/SourceAccount.
# Pinned to log groups of one account, the grant serves no other account's log group.
# Source: CloudWatch Logs user guide, encrypt-log-data-kms.html.
LOGS_PRINCIPAL = re.compile(r"^logs\.[a-z0-9-]+\.amazonaws\.com$")
LOGS_CONTEXT_KEY = "kms:EncryptionContext:aws:logs:arn"


def _names_log_group(arn: str) -> bool:
    """A log group ARN of one Region and account (a plan may hold the account unknown):
    no wildcard before the group's name, nor as its first character."""
    prefix, found, name = arn.partition(":log-group:")
    return (bool(found) and prefix.startswith("arn:aws:logs:") and "*" not in prefix
            and bool(name) and not name.startswith("*"))


def _logs_grant_problem(statement: Mapping[str, Any]) -> str:
    arns = [arn for block in _map(statement.get("Condition")).values()
            for arn in _strings(_map(block).get(LOGS_CONTEXT_KEY))]
    if not arns or not all(_names_log_group(arn) for arn in arns):
        return (f"the CloudWatch Logs grant must name this account's log groups in "
                f"{LOGS_CONTEXT_KEY}, not {arns or 'nothing'} (confused deputy)")
    return ""


def _resource_grant(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    """A key or topic policy: every grant to a service principal is pinned."""
    what = "Topic policy" if resource_type == "aws:sns/topicPolicy:TopicPolicy" else "Key policy"
    for statement in _service_statements(props.get("policy")):
        services = _strings(_map(statement.get("Principal")).get("Service"))
        if what == "Key policy" and services and all(LOGS_PRINCIPAL.match(s) for s in services):
            problem = _logs_grant_problem(statement)
        else:
            problem = _deputy_problem(statement)
        if problem:
            yield f"{what}: {problem}."


# Source: AWS IAM user guide, "The confused deputy problem" (confused-deputy.html): a
# service principal acts for any account unless aws:SourceAccount / aws:SourceArn pin it.
iam_trust_confused_deputy = _resource_policy(
    "iam-trust-confused-deputy",
    "Roles a service principal assumes name aws:SourceAccount and aws:SourceArn (except "
    "the roles iam-trust-as-documented holds to AWS's documented trust policy).",
    "aws:iam/role:Role", _trust,
)
iam_trust_as_documented = _resource_policy(
    "iam-trust-as-documented",
    "Roles ECS (load balancers) and RDS (RDS Proxy) assume keep AWS's documented trust "
    "policy: that one service principal, sts:AssumeRole, no condition.",
    "aws:iam/role:Role", _documented_trust,
)
sns_confused_deputy = _resource_policy(
    "sns-service-grant-confused-deputy",
    "SNS topic policies let service principals (CloudWatch, AMP) publish only with "
    "aws:SourceAccount and aws:SourceArn.",
    "aws:sns/topicPolicy:TopicPolicy", _resource_grant,
)
kms_confused_deputy = _resource_policy(
    "kms-service-grant-confused-deputy",
    "KMS key grants to service principals name aws:SourceAccount and aws:SourceArn "
    "(CloudWatch Logs: this account's log groups in kms:EncryptionContext:aws:logs:arn).",
    "aws:kms/key:Key", _resource_grant,
)


# ---- customer-managed keys in prod ------------------------------------------------------

# The log groups that hold request and query data (WAF requests, the API's logs, PostgreSQL's
# exports) by the names their services write to (components/waf.py, service.py,
# database.py).
SENSITIVE_LOG_NAMES = (re.compile(r"^aws-waf-logs-"), re.compile(r"^/ecs/"),
                       re.compile(r"^/aws/rds/instance/"))
# The account itself (a plan may hold its number unknown): the key's administrator.
ACCOUNT_ROOT = re.compile(r"^arn:aws:iam::(\d{12}|\(known after apply: .*\)):root$")


def _customer_keys(args: StackValidationArgs, report: ReportViolation) -> None:
    def missing(resource: Any, key: str, what: str) -> None:
        if is_prod(resource.props) and not resource.props.get(key):
            report(f"In prod, {what} must be encrypted with a customer-managed KMS key "
                   f"({key}; config kms_keys: true).", resource.urn)

    for group in _of_type(args, "cloudwatch/logGroup:LogGroup"):
        name = str(group.props.get("name") or group.props.get("namePrefix") or "")
        if any(p.search(name) for p in SENSITIVE_LOG_NAMES):
            missing(group, "kmsKeyId", f"the log group {name}")
    for secret in _of_type(args, "secretsmanager/secret:Secret"):
        missing(secret, "kmsKeyId", "a secret")
    for group in _of_type(args, "elasticache/replicationGroup:ReplicationGroup"):
        missing(group, "kmsKeyId", "the cache at rest")
    for db in _live_databases(args):
        missing(db, "performanceInsightsKmsKeyId", "Performance Insights")


customer_keys_in_prod = StackValidationPolicy(
    name="customer-keys-in-prod",
    description="In prod the WAF, API and PostgreSQL log groups, the secrets, the cache and "
                "Performance Insights use customer-managed KMS keys.",
    validate=_customer_keys,
    enforcement_level=MANDATORY,
)


def _key_users(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    for statement in map(_map, _list(_map(_json(props.get("policy"))).get("Statement"))):
        if statement.get("Effect") != "Allow":
            continue
        users = [p for p in _strings(_map(statement.get("Principal")).get("AWS"))
                 if not ACCOUNT_ROOT.match(p)]
        if users and "kms:ViaService" not in _condition_keys(statement):
            yield (f"Key policy: {users} may use the key only through a named service "
                   "(kms:ViaService), never call KMS directly with it.")


kms_key_users_via_service = _resource_policy(
    "kms-key-users-via-service",
    "A KMS key policy names its users besides the account (e.g. the task execution role "
    "for the secrets) only with kms:ViaService: they decrypt through that service alone.",
    "aws:kms/key:Key", _key_users,
)


# ---- RDS Enhanced Monitoring and IAM authentication ----------------------------------

# Source: botocore rds CreateDBInstanceMessage.MonitoringInterval (0 turns it off).
MONITORING_INTERVALS = (1, 5, 10, 15, 30, 60)


def _rds_monitoring(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("monitoringInterval") not in MONITORING_INTERVALS:
        yield (f"RDS needs Enhanced Monitoring (monitoringInterval one of "
               f"{MONITORING_INTERVALS}, not {props.get('monitoringInterval')!r}; FSBP RDS.6).")
    elif not props.get("monitoringRoleArn"):
        yield "RDS Enhanced Monitoring needs its role (monitoringRoleArn)."


def _rds_iam_auth(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("iamDatabaseAuthenticationEnabled") is not True:
        yield "RDS must accept IAM database authentication (FSBP RDS.10)."
    if "iam-db-auth-error" not in _strings(props.get("enabledCloudwatchLogsExports")):
        yield "RDS must export iam-db-auth-error logs, so failed IAM logins are visible."


rds_enhanced_monitoring = _resource_policy(
    "rds-enhanced-monitoring", "RDS instances have Enhanced Monitoring with its role.",
    "aws:rds/instance:Instance", _rds_monitoring,
)
rds_iam_auth = _resource_policy(
    "rds-iam-auth", "RDS instances accept IAM authentication and export its failures.",
    "aws:rds/instance:Instance", _rds_iam_auth,
)


# ---- RDS Proxy: TLS, IAM end to end, its own group, isolated subnets, room for migrate -

def _rds_proxy(args: StackValidationArgs, report: ReportViolation) -> None:
    isolated = {r.urn for r in _of_type(args, "ec2/subnet:Subnet")
                if _tags(r.props).get("prodstack:tier") == "isolated"}  # fmt: skip
    for proxy in _of_type(args, "rds/proxy:Proxy"):
        p = proxy.props
        if p.get("requireTls") is not True:
            report("RDS Proxy must require TLS from its clients (requireTls).", proxy.urn)
        # IAM_AUTH: IAM from the client to the proxy and from the proxy to the database,
        # no password. Source: pulumi_aws rds.Proxy `default_auth_scheme`.
        if p.get("defaultAuthScheme") != "IAM_AUTH":
            report("RDS Proxy must use end-to-end IAM authentication (defaultAuthScheme "
                   f"IAM_AUTH, not {p.get('defaultAuthScheme')!r}).", proxy.urn)
        if any(_map(a).get("secretArn") for a in _list(p.get("auths"))):
            report("RDS Proxy logs in by IAM: it reads no database secret (auths).",
                   proxy.urn)
        if p.get("debugLogging") is True:
            report("RDS Proxy debug logging writes SQL text and parameters to the logs.",
                   proxy.urn)
        groups = proxy.property_dependencies.get("vpcSecurityGroupIds", []) if (
            proxy.property_dependencies) else []
        roles = {str(_tags(g.props).get("prodstack:role")) for g in groups}
        if roles != {PROXY_GROUP_ROLE} or len(_list(p.get("vpcSecurityGroupIds"))) != 1:
            report("RDS Proxy sits in its own security group only (prodstack:role "
                   f"{PROXY_GROUP_ROLE}), not {sorted(roles)}.", proxy.urn)
        outside = _linked(proxy, "vpcSubnetIds") - isolated
        if outside or not _linked(proxy, "vpcSubnetIds"):
            report(f"RDS Proxy lives in isolated subnets only, not {sorted(outside)}.",
                   proxy.urn)
    for pool in _of_type(args, "rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup"):
        # API default 100 (API_ConnectionPoolConfiguration.html): the proxy could take
        # every slot the migrate task and operators need.
        percent = _map(pool.props.get("connectionPoolConfig")).get("maxConnectionsPercent")
        if not isinstance(percent, (int, float)) or percent >= 100:
            report("RDS Proxy leaves room beside its pool (maxConnectionsPercent below "
                   f"100, not {percent!r}).", pool.urn)


rds_proxy_hardened = StackValidationPolicy(
    name="rds-proxy-hardened",
    description="RDS Proxy requires TLS, uses end-to-end IAM authentication and no secret, "
                "logs no SQL, sits in its own security group in isolated subnets, and "
                "leaves room beside its pool.",
    validate=_rds_proxy,
    enforcement_level=MANDATORY,
)


# ---- ALB: internal paths answer 403 before any forward --------------------------------

# What must never reach the app from outside: its metrics, health details and schema
# (app/api/routes), and percent-encoded paths that could spell them another way.
BLOCKED_PATHS = ("/metrics*", "/health", "/openapi.json", "*%*")


def _internal_paths(args: StackValidationArgs, report: ReportViolation) -> None:
    rules_by_listener: dict[str, list[Any]] = {}
    for rule in _of_type(args, "lb/listenerRule:ListenerRule"):
        for listener in _linked(rule, "listenerArn"):
            rules_by_listener.setdefault(listener, []).append(rule)
    for listener in _of_type(args, "lb/listener:Listener"):
        rules = rules_by_listener.get(listener.urn, [])

        def forwards(actions: Any) -> bool:
            return any(_map(a).get("type") == "forward" for a in _list(actions))

        forwarding = [r for r in rules if forwards(r.props.get("actions"))]
        if not forwarding and not forwards(listener.props.get("defaultActions")):
            continue  # redirects or answers by itself
        first_forward = min((r.props.get("priority") or 50000 for r in forwarding),
                            default=50001)
        blocked = set()
        for rule in rules:
            if forwards(rule.props.get("actions")) or not all(
                    _map(a).get("type") == "fixed-response"
                    and str(_map(a.get("fixedResponse")).get("statusCode")) in ("403", "404")
                    for a in _list(rule.props.get("actions"))):
                continue
            if (rule.props.get("priority") or 50000) >= first_forward:
                report("A blocking rule must come before every forward (lower priority).",
                       rule.urn)
                continue
            for condition in map(_map, _list(rule.props.get("conditions"))):
                blocked |= set(_strings(_map(condition.get("pathPattern")).get("values")))
        missing = [p for p in BLOCKED_PATHS if p not in blocked]
        if missing:
            report(f"Listener forwards {missing} to the app; answer them 403 first.",
                   listener.urn)


alb_internal_paths = StackValidationPolicy(
    name="alb-internal-paths-blocked",
    description="Every forwarding listener answers /metrics*, /health, /openapi.json and "
                "percent-encoded paths 403 before any forward.",
    validate=_internal_paths,
    enforcement_level=MANDATORY,
)


# ---- CloudFront: security headers and standard logging -------------------------------

HSTS_MIN_AGE = 31_536_000  # one year; the VPS nginx sends two


def _headers_ok(policy: Any) -> bool:
    config = _map(policy.props.get("securityHeadersConfig"))
    hsts = _map(config.get("strictTransportSecurity"))
    return (hsts.get("override") is True and (hsts.get("accessControlMaxAgeSec") or 0)
            >= HSTS_MIN_AGE and hsts.get("includeSubdomains") is True
            and _map(config.get("contentTypeOptions")).get("override") is True
            and _map(config.get("frameOptions")).get("frameOption") in ("DENY", "SAMEORIGIN"))


def _cloudfront_headers_and_logs(args: StackValidationArgs, report: ReportViolation) -> None:
    good_headers = {p.urn for p in
                    _of_type(args, "cloudfront/responseHeadersPolicy:ResponseHeadersPolicy")
                    if _headers_ok(p)}  # fmt: skip
    sources = {}
    for source in _of_type(args, "cloudwatch/logDeliverySource:LogDeliverySource"):
        if source.props.get("logType") == "ACCESS_LOGS":
            for distribution in _linked(source, "resourceArn"):
                sources[source.urn] = distribution
    delivered = set()
    for delivery in _of_type(args, "cloudwatch/logDelivery:LogDelivery"):
        if _linked(delivery, "deliveryDestinationArn"):
            delivered |= {sources[s] for s in _linked(delivery, "deliverySourceName")
                          if s in sources}  # fmt: skip
    for d in _of_type(args, "cloudfront/distribution:Distribution"):
        behaviours = [_map(d.props.get("defaultCacheBehavior")),
                      *map(_map, _list(d.props.get("orderedCacheBehaviors")))]
        linked = (_linked(d, "defaultCacheBehavior") | _linked(d, "orderedCacheBehaviors"))
        if not all(b.get("responseHeadersPolicyId") for b in behaviours) or not (
                linked & good_headers):
            report("Every CloudFront behaviour sends the security headers (HSTS >= 1 year "
                   "with subdomains, nosniff, frame DENY).", d.urn)
        if d.urn not in delivered:
            report("CloudFront needs standard logging (a LogDeliverySource ACCESS_LOGS "
                   "delivered to a destination; FSBP CloudFront.5).", d.urn)


cloudfront_headers_and_logging = StackValidationPolicy(
    name="cloudfront-security-headers-and-logging",
    description="Every CloudFront behaviour sends HSTS, nosniff and frame DENY, and every "
                "distribution delivers its access logs (standard logging v2).",
    validate=_cloudfront_headers_and_logs,
    enforcement_level=MANDATORY,
)


# ---- disaster recovery: AWS Backup tiers, locked vaults, restore drills, data-tier events -

# The backup tiers in prod (docs/targets.md, "Recovery"): a rule named after each, keeping
# its points at least this long.
PROD_BACKUP_TIERS = {"daily": 30, "weekly": 90, "monthly": 365}
# RDS event categories that must reach the alarm topic (components.observability cites
# the RDS user guide's list).
REQUIRED_RDS_EVENTS = ("failure", "failover", "low storage", "maintenance")
# The API's readiness gauges the data-tier alert rules read (app/metrics.py).
READINESS_GAUGES = ("db_connected", "redis_connected")
BACKUP = "AWS/Backup"


def _live_databases(args: StackValidationArgs) -> list[Any]:
    """RDS instances the stack serves from: not an original a restore replaced (tagged
    ``prodstack:restore-source``, kept until released)."""
    return [db for db in _of_type(args, "rds/instance:Instance")
            if RESTORE_SOURCE_TAG not in _tags(db.props)]


def _backup_vaults(args: StackValidationArgs, report: ReportViolation) -> None:
    locks = _of_type(args, "backup/vaultLockConfiguration:VaultLockConfiguration")
    for vault in _of_type(args, "backup/vault:Vault"):
        if not vault.props.get("kmsKeyArn"):
            report("A backup vault must be encrypted with a customer-managed KMS key "
                   "(kmsKeyArn).", vault.urn)
        if not is_prod(vault.props):
            continue
        mine = [lock for lock in locks if vault.urn in _linked(lock, "backupVaultName")]
        if not mine:
            report("Prod backup vaults must be locked (a VaultLockConfiguration, governance "
                   "or compliance).", vault.urn)
        for lock in mine:
            floor = lock.props.get("minRetentionDays")
            if not isinstance(floor, (int, float)) or floor < PROD_BACKUP_TIERS["daily"]:
                report(f"A prod vault lock must keep every point at least "
                       f"{PROD_BACKUP_TIERS['daily']} days (minRetentionDays), not "
                       f"{floor!r}.", lock.urn)


backup_vaults_locked = StackValidationPolicy(
    name="backup-vault-encrypted-and-locked",
    description="Backup vaults use a customer-managed KMS key; in prod each is locked, "
                "keeping every recovery point at least the daily tier's 30 days.",
    validate=_backup_vaults,
    enforcement_level=MANDATORY,
)


def _backup_tiers(args: StackValidationArgs, report: ReportViolation) -> None:
    plans = {p.urn: p for p in _of_type(args, "backup/plan:Plan")}
    selections = _of_type(args, "backup/selection:Selection")
    for db in _live_databases(args):
        covering = [s for s in selections if db.urn in _linked(s, "resources")]
        if not covering:
            report("The database is in no AWS Backup selection (no tiered backups beyond "
                   "RDS's own).", db.urn)
            continue
        rules = [_map(r) for s in covering for urn in _linked(s, "planId")
                 if urn in plans for r in _list(plans[urn].props.get("rules"))]
        kept = {r.get("ruleName"): _map(r.get("lifecycle")).get("deleteAfter") for r in rules}
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


backup_tiers = StackValidationPolicy(
    name="backup-tiers-cover-the-database",
    description="Every RDS instance is selected by an AWS Backup plan; in prod the plan has "
                "the backup targets (docs/targets.md): daily kept >= 30 days, weekly >= 90, "
                "monthly >= 365.",
    validate=_backup_tiers,
    enforcement_level=MANDATORY,
)


def _restore_drills(args: StackValidationArgs, report: ReportViolation) -> None:
    tests = _of_type(args, "backup/restoreTestingSelection:RestoreTestingSelection")
    alarms = _of_type(args, "cloudwatch/metricAlarm:MetricAlarm")
    missing = [a for a in alarms if (BACKUP, "NumberOfRestoreJobsCompleted") in _metrics(a.props)]
    failed = [a for a in alarms if (BACKUP, "NumberOfRestoreJobsFailed") in _metrics(a.props)]
    for db in _live_databases(args):
        if not is_prod(db.props):
            continue
        if not any(db.urn in _linked(t, "protectedResourceArns")
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
        problem = _alarm_problem(alarm, LESS, None)
        if not problem and alarm.props.get("treatMissingData") != "breaching":
            problem = "must treat missing data as breaching (no data: no drill completed)"
        if problem:
            report(f"Missing-drill alarm {problem}.", alarm.urn)
    for alarm in failed:
        problem = _alarm_problem(alarm, GREATER, 0)
        if problem:
            report(f"Failed-drill alarm {problem}.", alarm.urn)


restore_drills = StackValidationPolicy(
    name="restore-drill-alarmed",
    description="Every prod RDS instance has an AWS Backup restore testing selection, and "
                "alarms that notify when a drill fails and when none completed (missing "
                "data breaching).",
    validate=_restore_drills,
    enforcement_level=MANDATORY,
)


def _rule_targets(args: StackValidationArgs, source: str) -> list[Any]:
    """EventBridge rules matching ``source`` that have a target."""
    targets = _of_type(args, "cloudwatch/eventTarget:EventTarget")
    return [rule for rule in _of_type(args, "cloudwatch/eventRule:EventRule")
            if source in _strings(_map(_json(rule.props.get("eventPattern"))).get("source"))
            and any(rule.urn in _linked(t, "rule") and t.props.get("arn") for t in targets)]


def _data_tier_events(args: StackValidationArgs, report: ReportViolation) -> None:
    subscriptions = _of_type(args, "rds/eventSubscription:EventSubscription")
    for db in _live_databases(args):
        mine = [s for s in subscriptions if db.urn in _linked(s, "sourceIds")
                and s.props.get("snsTopic") and s.props.get("enabled") is not False]
        categories = {c for s in mine for c in _strings(s.props.get("eventCategories"))}
        lacking = [c for c in REQUIRED_RDS_EVENTS if c not in categories]
        if not mine or lacking:
            report(f"RDS events must reach the alarm topic (an enabled event subscription of "
                   f"the instance with {', '.join(REQUIRED_RDS_EVENTS)}); missing "
                   f"{lacking or 'the subscription'}.", db.urn)
    if _of_type(args, "elasticache/replicationGroup:ReplicationGroup") and not _rule_targets(
            args, "aws.elasticache"):
        report("ElastiCache events must reach the alarm topic (an EventBridge rule on "
               "aws.elasticache with a target).", None)
    if _of_type(args, "backup/plan:Plan") and not _rule_targets(args, "aws.backup"):
        report("Failed AWS Backup jobs must reach the alarm topic (an EventBridge rule on "
               "aws.backup with a target).", None)
    for namespace in _of_type(args, "amp/ruleGroupNamespace:RuleGroupNamespace"):
        data = namespace.props.get("data")
        if not isinstance(data, str) or _unknown(data):
            continue
        for gauge in READINESS_GAUGES:
            if f'{gauge}{{job="api"}}' not in data:
                report(f"The workspace's rules must alert on the API's {gauge} (PostgreSQL "
                       f"or Redis unreachable from the API).", namespace.urn)


# Series a workspace never receives from per-task collectors: a task that is gone sends no
# sample (so `up{job="api"} == 0` is not written for it), and no Prometheus server runs
# whose service discovery could be read. components/metrics.py VPS_ONLY_RULES says why.
ABSENT_FUNCTIONS = ("absent_over_time(", "absent(")
SERVER_ONLY_SERIES = ("prometheus_sd_discovered_targets",)


def _rule_expressions(data: str) -> list[tuple[str, str]]:
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError:
        return []
    return [(str(_map(r).get("alert")), str(_map(r).get("expr", "")))
            for g in _list(_map(document).get("groups")) for r in _list(_map(g).get("rules"))]


def _metrics_alerts(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    data = props.get("data")
    if not isinstance(data, str) or _unknown(data):
        return
    rules = _rule_expressions(data)
    for alert, expr in rules:
        if any(series in expr for series in SERVER_ONLY_SERIES):
            yield (f"{alert} reads a Prometheus server's own series, which a workspace fed "
                   "by per-task collectors never receives: it cannot fire.")
        elif 'up{job="api"}' in expr and not any(f in expr for f in ABSENT_FUNCTIONS):
            yield (f"{alert} waits for up{{job=\"api\"}} to report a task down, but a task "
                   "that is gone sends nothing: it cannot fire (use absent_over_time).")
    if not any('job="api"' in expr and any(f in expr for f in ABSENT_FUNCTIONS)
               for _, expr in rules):
        yield ("The workspace needs an alert on the API's series going absent "
               "(absent_over_time over job=\"api\"): tasks gone silent alert nobody.")


metrics_alerts_can_fire = _resource_policy(
    "metrics-alerts-can-fire",
    "The Prometheus workspace runs only alert rules that can fire on per-task collectors' "
    "data (no `up == 0` or service-discovery rules), and alerts when the API's series go "
    "absent.",
    "aws:amp/ruleGroupNamespace:RuleGroupNamespace", _metrics_alerts,
)


data_tier_events = StackValidationPolicy(
    name="data-tier-events-alarmed",
    description="RDS (failure, failover, low storage, maintenance), ElastiCache and failed "
                "AWS Backup jobs notify the alarm topic; the Prometheus workspace alerts "
                "when the API cannot reach PostgreSQL or Redis.",
    validate=_data_tier_events,
    enforcement_level=MANDATORY,
)

ALL_POLICIES = [
    encryption_at_rest,
    s3_buckets_encrypted,
    no_public_data_stores,
    alb_tls,
    cloudfront_tls,
    rds_force_ssl,
    db_client_verifies_server,
    prod_protection,
    log_retention,
    security_logs_kept,
    no_secrets_in_environment,
    no_world_open_security_groups,
    waf_enforces,
    waf_attached,
    iam_least_privilege,
    security_group_egress,
    security_group_ingress,
    subnets_private,
    vpc_flow_logs,
    log_buckets,
    log_buckets_versioned,
    rds_hardened,
    cache_hardened,
    alarms_for_the_targets,
    alb_hardened,
    alb_gated_behind_cdn,
    alb_header_routes_secret,
    ecs_task_hardened,
    ecs_service_safe,
    ecr_hardened,
    ecr_lifecycle,
    kms_rotation,
    secrets_recoverable,
    cloudfront_api_uncached,
    cloudfront_origin_host,
    data_subnets_isolated,
    target_group_liveness,
    blue_green_guarded,
    deployment_alarms_quiet,
    request_scaling_every_group,
    iam_trust_confused_deputy,
    iam_trust_as_documented,
    kms_confused_deputy,
    customer_keys_in_prod,
    kms_key_users_via_service,
    rds_enhanced_monitoring,
    rds_iam_auth,
    rds_proxy_hardened,
    alb_internal_paths,
    cloudfront_headers_and_logging,
    ecs_sidecars_non_essential,
    sns_confused_deputy,
    backup_vaults_locked,
    backup_tiers,
    restore_drills,
    data_tier_events,
    metrics_alerts_can_fire,
]
