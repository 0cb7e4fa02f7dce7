"""Encryption and keys: data stores, buckets and topics encrypted; KMS keys rotate;
customer-managed keys in prod; key users only through a named service."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ReportViolation, StackValidationArgs
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policies._shared import (
    as_list,
    as_map,
    is_prod,
    live_databases,
    lookup,
    of_type,
    parse_json,
    resource_policy,
    stack_policy,
    strings,
)
from policies.iam import condition_keys

# ---- encryption everywhere --------------------------------------------------------------

@resource_policy(
    "encryption-everywhere",
    "RDS, ElastiCache (at rest, in transit, AUTH), ECR and SNS are encrypted.",
    types=("aws:rds/instance:Instance", "aws:elasticache/replicationGroup:ReplicationGroup",
     "aws:ecr/repository:Repository", "aws:sns/topic:Topic"),
)
def encryption_at_rest(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if resource_type == "aws:rds/instance:Instance":
        if props.get("storageEncrypted") is not True:
            yield "RDS storage must be encrypted (storageEncrypted: true)."
    elif resource_type == "aws:elasticache/replicationGroup:ReplicationGroup":
        if props.get("atRestEncryptionEnabled") is not True:
            yield "ElastiCache must encrypt at rest (atRestEncryptionEnabled: true)."
        if props.get("transitEncryptionEnabled") is not True:
            yield "ElastiCache must encrypt in transit (transitEncryptionEnabled: true)."
        if not lookup(props, "authToken"):
            yield "ElastiCache must require an AUTH token."
    elif resource_type == "aws:ecr/repository:Repository" and not props.get(
        "encryptionConfigurations"
    ):
        yield "ECR repositories must set an encryption configuration."
    elif resource_type == "aws:sns/topic:Topic" and not lookup(props, "kmsMasterKeyId"):
        yield "SNS topics must be encrypted with a KMS key (kmsMasterKeyId)."


@stack_policy(
    "s3-buckets-encrypted",
    "Every S3 bucket has a server-side encryption configuration (AES256/KMS).",
)
def s3_buckets_encrypted(args: StackValidationArgs, report: ReportViolation) -> None:
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
        for rule in map(as_map, as_list(config.props.get("rules"))):
            algorithm = as_map(rule.get("applyServerSideEncryptionByDefault")).get("sseAlgorithm")
            if algorithm not in ("AES256", "aws:kms", "aws:kms:dsse"):
                report(f"S3 encryption must use AES256 or KMS, not {algorithm!r}.", config.urn)
    for bucket in buckets:
        if bucket.urn not in encrypted:
            report("S3 bucket has no server-side encryption configuration.", bucket.urn)


@resource_policy(
    "kms-keys-rotate",
    "Customer-managed KMS keys rotate and allow no `*` principal.",
    types="aws:kms/key:Key",
)
def kms_rotation(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("enableKeyRotation") is not True:
        yield "KMS keys must rotate (enableKeyRotation; FSBP KMS.4)."
    for statement in map(as_map, as_list(as_map(parse_json(props.get("policy"))).get("Statement"))):
        principal = statement.get("Principal")
        if statement.get("Effect") == "Allow" and (
                principal == "*" or "*" in strings(as_map(principal).get("AWS"))):
            yield "KMS key policy must not allow any principal (\"*\")."


# ---- customer-managed keys in prod ------------------------------------------------------

# The log groups that hold request and query data (WAF requests, the API's logs, PostgreSQL's
# exports) by the names their services write to (components/waf.py, service.py,
# database.py).
SENSITIVE_LOG_NAMES = (re.compile(r"^aws-waf-logs-"), re.compile(r"^/ecs/"),
                       re.compile(r"^/aws/rds/instance/"))
# The account itself (its number may be unknown before apply): the key's administrator.
ACCOUNT_ROOT = re.compile(rf"^arn:aws:iam::(\d{{12}}|{re.escape(UNKNOWN_STRING_VALUE)}):root$")


@stack_policy(
    "customer-keys-in-prod",
    "In prod the WAF, API and PostgreSQL log groups, the secrets, the cache and "
                "Performance Insights use customer-managed KMS keys.",
)
def customer_keys_in_prod(args: StackValidationArgs, report: ReportViolation) -> None:
    def missing(resource: Any, key: str, what: str) -> None:
        if is_prod(resource.props) and not lookup(resource.props, key):
            report(f"In prod, {what} must be encrypted with a customer-managed KMS key "
                   f"({key}; config kms_keys: true).", resource.urn)

    for group in of_type(args, "cloudwatch/logGroup:LogGroup"):
        name = str(group.props.get("name") or group.props.get("namePrefix") or "")
        if any(p.search(name) for p in SENSITIVE_LOG_NAMES):
            missing(group, "kmsKeyId", f"the log group {name}")
    for secret in of_type(args, "secretsmanager/secret:Secret"):
        missing(secret, "kmsKeyId", "a secret")
    for group in of_type(args, "elasticache/replicationGroup:ReplicationGroup"):
        missing(group, "kmsKeyId", "the cache at rest")
    for db in live_databases(args):
        missing(db, "performanceInsightsKmsKeyId", "Performance Insights")


@resource_policy(
    "kms-key-users-via-service",
    "A KMS key policy names its users besides the account (e.g. the task execution role "
    "for the secrets) only with kms:ViaService: they decrypt through that service alone.",
    types="aws:kms/key:Key",
)
def kms_key_users_via_service(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    for statement in map(as_map, as_list(as_map(parse_json(props.get("policy"))).get("Statement"))):
        if statement.get("Effect") != "Allow":
            continue
        users = [p for p in strings(as_map(statement.get("Principal")).get("AWS"))
                 if not ACCOUNT_ROOT.match(p)]
        if users and "kms:ViaService" not in condition_keys(statement):
            yield (f"Key policy: {users} may use the key only through a named service "
                   "(kms:ViaService), never call KMS directly with it.")

