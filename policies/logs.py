"""Logs: retention on every log group, security logs kept long in prod, hardened and
versioned log buckets."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ReportViolation, StackValidationArgs

from components._common import (
    LOG_RETENTION_DAYS,
    PROD_SECURITY_LOG_DAYS,
    SECURITY_LOG_CLASS,
    SECURITY_LOG_TAG,
)
from policies._shared import (
    as_list,
    as_map,
    is_prod,
    linked,
    of_type,
    parse_json,
    resource_policy,
    stack_policy,
    strings,
    tags_of,
)

# ---- log retention ---------------------------------------------------------------------

@resource_policy(
    "log-retention-set",
    "Every CloudWatch log group has a retention period.",
    types="aws:cloudwatch/logGroup:LogGroup",
)
def log_retention(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    days = props.get("retentionInDays")
    if days not in LOG_RETENTION_DAYS:
        yield f"Log groups must set a retention (CloudWatch value), not {days!r}."


# Where the security logs go, besides the tag the components put on their groups: WAF logs
# only to groups named aws-waf-logs-* (WAF developer guide, logging-cw-logs.html), RDS's
# IAM authentication failures to /aws/rds/instance/<id>/iam-db-auth-error, CloudFront's
# standard logs (v2) to the vended-logs prefix components/cdn.py uses, and VPC flow logs to
# whatever group a FlowLog names.
SECURITY_LOG_NAMES = (re.compile(r"^aws-waf-logs-"), re.compile(r"/iam-db-auth-error$"),
                      re.compile(r"^/aws/vendedlogs/cloudfront/"))


def _security_log_groups(args: StackValidationArgs) -> list[Any]:
    flow_destinations = {urn for flow in of_type(args, "ec2/flowLog:FlowLog")
                         for urn in linked(flow, "logDestination")}
    found = []
    for group in of_type(args, "cloudwatch/logGroup:LogGroup"):
        name = str(group.props.get("name") or group.props.get("namePrefix") or "")
        if (tags_of(group.props).get(SECURITY_LOG_TAG) == SECURITY_LOG_CLASS
                or group.urn in flow_destinations
                or any(pattern.search(name) for pattern in SECURITY_LOG_NAMES)):
            found.append(group)
    return found


@stack_policy(
    "security-logs-kept",
    f"In prod the security logs (WAF, VPC flow, iam-db-auth-error, CloudFront) "
                f"are kept at least {PROD_SECURITY_LOG_DAYS} days.",
)
def security_logs_kept(args: StackValidationArgs, report: ReportViolation) -> None:
    for group in _security_log_groups(args):
        days = group.props.get("retentionInDays")
        if is_prod(group.props) and not (
                isinstance(days, (int, float)) and days >= PROD_SECURITY_LOG_DAYS):
            report(f"Prod security logs (WAF, VPC flow, IAM authentication failures, "
                   f"CloudFront) must be kept at least {PROD_SECURITY_LOG_DAYS} days, not "
                   f"{days!r}: an intrusion is often found months later.", group.urn)


# ---- S3: every bucket is a log bucket: owner-enforced, private, encrypted, expiring, TLS -

def _tls_only(policy: Any) -> bool:
    for statement in map(as_map, as_list(as_map(parse_json(policy)).get("Statement"))):
        condition = as_map(as_map(statement.get("Condition")).get("Bool"))
        if (statement.get("Effect") == "Deny" and statement.get("Principal") in ("*", {"AWS": "*"})
                and "s3:*" in strings(statement.get("Action"))
                and str(condition.get("aws:SecureTransport")).lower() == "false"
                and len(strings(statement.get("Resource"))) >= 2):
            return True
    return False


@stack_policy(
    "log-buckets-hardened",
    "Every bucket (all hold logs): BucketOwnerEnforced, public access blocked, "
                "objects expire, TLS-only policy, no ACLs (encryption: s3-buckets-encrypted).",
)
def log_buckets(args: StackValidationArgs, report: ReportViolation) -> None:
    ownership, private, expiring, tls_only = set(), set(), set(), set()
    for r in of_type(args, "s3/bucketOwnershipControls:BucketOwnershipControls"):
        if as_map(r.props.get("rule")).get("objectOwnership") == "BucketOwnerEnforced":
            ownership |= linked(r, "bucket")
    for r in of_type(args, "s3/bucketPublicAccessBlock:BucketPublicAccessBlock"):
        if all(r.props.get(k) is True for k in ("blockPublicAcls", "blockPublicPolicy",
                                                 "ignorePublicAcls", "restrictPublicBuckets")):
            private |= linked(r, "bucket")
    for r in of_type(args, "s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"):
        if any(as_map(rule).get("status") == "Enabled"
               and (as_map(as_map(rule).get("expiration")).get("days") or 0) > 0
               for rule in as_list(r.props.get("rules"))):
            expiring |= linked(r, "bucket")
    for r in of_type(args, "s3/bucketPolicy:BucketPolicy"):
        if _tls_only(r.props.get("policy")):
            tls_only |= linked(r, "bucket")
    for r in of_type(args, "s3/bucketAcl:BucketAcl"):
        report("Buckets use no ACLs (BucketOwnerEnforced); remove the BucketAcl.", r.urn)
    for bucket in of_type(args, "s3/bucket:Bucket"):
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


@stack_policy(
    "log-buckets-versioned",
    "Every bucket (all hold logs) is versioned, so a delete leaves the previous "
                "version behind, with a lifecycle rule expiring noncurrent versions.",
)
def log_buckets_versioned(args: StackValidationArgs, report: ReportViolation) -> None:
    versioned, trimmed = set(), set()
    for r in of_type(args, "s3/bucketVersioning:BucketVersioning"):
        if as_map(r.props.get("versioningConfiguration")).get("status") == "Enabled":
            versioned |= linked(r, "bucket")
    for r in of_type(args, "s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"):
        if any(as_map(rule).get("status") == "Enabled"
               and (as_map(as_map(rule).get("noncurrentVersionExpiration")).get(
                   "noncurrentDays") or 0) > 0
               for rule in as_list(r.props.get("rules"))):
            trimmed |= linked(r, "bucket")
    for bucket in of_type(args, "s3/bucket:Bucket"):
        if bucket.urn not in versioned:
            report("Log bucket must be versioned (status Enabled): without versions, anyone "
                   "in the account with delete rights can erase the logs.", bucket.urn)
        if bucket.urn not in trimmed:
            report("A versioned log bucket needs a lifecycle rule expiring noncurrent "
                   "versions (noncurrentVersionExpiration), or deleted logs are kept and "
                   "billed forever.", bucket.urn)

