"""Keys: customer-managed KMS keys for the logs, the secrets and the data stores (opt-in).

With the AWS managed keys (``aws/secretsmanager``, ``aws/rds``, ``aws/logs``) any principal
of the account that may call the service may also use its key: ``GetSecretValue`` alone
reads the API token. A customer-managed key's policy names who may use it, so reading the
token also takes an explicit ``kms:Decrypt`` on this key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components._common import child_opts, merge_tags, region_and_account

# Days a scheduled key deletion waits (7-30); the longest, for a key whose loss makes
# every log, secret and cache snapshot it encrypted unreadable. Source: pulumi_aws kms.Key
# `deletion_window_in_days` ("must be between 7 and 30, inclusive").
DELETION_WINDOW_DAYS = 30
# What CloudWatch Logs does with a log group's key: its service principal is Regional
# (logs.<region>.amazonaws.com), and the encryption context names the log group, so a
# statement pinned to this account's log group ARNs lets no other account's log group use
# the key (the confused deputy). Source: CloudWatch Logs user guide, encrypt-log-data-kms.html
# (the key policy for logs.<region>.amazonaws.com: kms:Encrypt*, kms:Decrypt*,
# kms:ReEncrypt*, kms:GenerateDataKey*, kms:Describe*, condition ArnLike/ArnEquals on
# kms:EncryptionContext:aws:logs:arn).
LOGS_ACTIONS = ("kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                "kms:Describe*")
LOGS_CONTEXT_KEY = "kms:EncryptionContext:aws:logs:arn"
# The ECS execution role reads the two secrets at task start through Secrets Manager, which
# decrypts with the caller's permission on the key. Source: Secrets Manager user guide,
# security-encryption.html ("Permissions for the KMS key": GetSecretValue needs kms:Decrypt;
# the aws/secretsmanager key policy uses kms:ViaService secretsmanager.<Region>.amazonaws.com);
# ECS developer guide, secrets-envvar-secrets-manager.html (kms:Decrypt for a customer
# managed key, as the execution role).
SECRET_READ_ACTIONS = ("kms:Decrypt",)


@dataclass(frozen=True)
class KeysArgs:
    """Inputs of :class:`Keys`."""

    log_groups: Sequence[str]
    """Names (``*`` wildcards allowed) of the log groups in the stack's Region that may
    use the logs key. Required. Example: ``("/ecs/prodstack-prod",)``."""

    edge_log_groups: Sequence[str] = ()
    """Names of the log groups in us-east-1 (a CLOUDFRONT-scoped WAF logs there) that may
    use a second logs key, created in us-east-1 only when this is not empty. Default:
    ``()``. Example: ``("aws-waf-logs-prodstack-*",)``."""

    secret_readers: pulumi.Input[Sequence[str]] = ()
    """IAM role ARNs that may decrypt the secrets through Secrets Manager. Default: ``()``.
    Example: ``[service.execution_role_arn]``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every key. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        if not self.log_groups:
            raise ValueError("KeysArgs: log_groups: at least one log group name")


class Keys(pulumi.ComponentResource):
    """Three customer-managed keys in the stack's Region (four behind a CDN), each rotated
    yearly, each with a policy naming who may use it.

    Creates:
        ``{name}-logs`` (CloudWatch Logs, for the named log groups only), ``{name}-edge-logs``
        (the same, in us-east-1, with ``edge_log_groups``), ``{name}-secrets`` (decrypt
        through Secrets Manager for ``secret_readers``) and ``{name}-data`` (the cache at
        rest and Performance Insights).

    Example:
        ``Keys("app-keys", KeysArgs(log_groups=["/ecs/app"], secret_readers=[role.arn]))``

    Cost:
        $1 per key-month (**$3-4/month**) plus $0.03 per 10,000 requests; rotation adds
        $1 per key-month for each of the first two rotations. Knob: ``edge_log_groups``.

    Secure defaults:
        Automatic yearly rotation; a 30-day deletion window; the account keeps
        administration (the key policy's root statement, which also lets IAM policies
        grant use, as the AWS default key policy does); every service statement is
        pinned to this account's resources.

    Opt-outs:
        None: the stack either uses these keys (``kms_keys: true``) or the AWS managed ones.
    """

    logs_key_arn: pulumi.Output[str]
    """ARN of the logs key in the stack's Region."""
    edge_logs_key_arn: pulumi.Output[str] | None
    """ARN of the logs key in us-east-1 (``None`` without ``edge_log_groups``)."""
    secrets_key_arn: pulumi.Output[str]
    """ARN of the secrets key."""
    data_key_arn: pulumi.Output[str]
    """ARN of the data key (cache at rest, Performance Insights)."""

    def __init__(
        self, name: str, args: KeysArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:keys:Keys", name, None, opts)
        self._name = name
        self._args = args
        self._region, self._account = region_and_account(self)

        self.logs_key_arn = self._key(
            "logs", "prodstack logs (WAF, API, PostgreSQL)",
            [self._logs_statement(self._region, args.log_groups)]).arn
        self.edge_logs_key_arn = None
        if args.edge_log_groups:
            self.edge_logs_key_arn = self._key(
                "edge-logs", "prodstack logs in us-east-1 (CloudFront-scoped WAF)",
                [self._logs_statement("us-east-1", args.edge_log_groups)],
                region="us-east-1").arn
        readers = pulumi.Output.from_input(args.secret_readers)
        self.secrets_key_arn = self._key(
            "secrets", "prodstack secrets (API token, cache AUTH token)",
            readers.apply(self._secret_statements)).arn
        # ElastiCache and RDS use the key through grants they create, at creation, with the
        # permissions of the principal that creates the cache or the instance (the account's
        # statement). Sources: ElastiCache user guide, at-rest-encryption.html ("Using
        # customer managed keys from AWS KMS"); RDS user guide,
        # USER_PerfInsights.access-control.cmk-policy.html.
        self.data_key_arn = self._key(
            "data", "prodstack data at rest (cache, Performance Insights)", []).arn
        self.register_outputs({
            "logs_key_arn": self.logs_key_arn,
            "edge_logs_key_arn": self.edge_logs_key_arn,
            "secrets_key_arn": self.secrets_key_arn,
            "data_key_arn": self.data_key_arn,
        })

    def _logs_statement(self, region: str, names: Sequence[str]) -> dict:
        return {
            "Sid": "CloudWatchLogs",
            "Effect": "Allow",
            "Principal": {"Service": f"logs.{region}.amazonaws.com"},
            "Action": list(LOGS_ACTIONS),
            "Resource": "*",
            "Condition": {"ArnLike": {LOGS_CONTEXT_KEY: [
                f"arn:aws:logs:{region}:{self._account}:log-group:{n}" for n in names]}},
        }

    def _secret_statements(self, readers: Sequence[str]) -> list[dict]:
        if not readers:
            return []
        return [{
            "Sid": "SecretReaders",
            "Effect": "Allow",
            "Principal": {"AWS": sorted(set(readers))},
            "Action": list(SECRET_READ_ACTIONS),
            "Resource": "*",
            "Condition": {"StringEquals": {
                "kms:ViaService": f"secretsmanager.{self._region}.amazonaws.com"}},
        }]

    def _key(self, role: str, description: str,
             statements: pulumi.Input[list[dict]], *, region: str | None = None) -> aws.kms.Key:
        """A rotated key whose policy is the account's administration plus ``statements``."""
        admin = {
            # The AWS default key policy's statement: the account administers the key, and
            # IAM policies may grant its use. Without it the key could become unmanageable.
            # Source: KMS developer guide, key-policy-default.html ("Allows access to the
            # AWS account and enables IAM policies").
            "Sid": "AccountAdmin",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{self._account}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
        # Source: pulumi_aws kms.Key (`enable_key_rotation`, `deletion_window_in_days`,
        # `policy`, `region`).
        return aws.kms.Key(
            f"{self._name}-{role}",
            description=description,
            enable_key_rotation=True,
            deletion_window_in_days=DELETION_WINDOW_DAYS,
            policy=pulumi.Output.from_input(statements).apply(lambda extra: json.dumps({
                "Version": "2012-10-17", "Statement": [admin, *extra]})),
            tags=merge_tags(self._args.tags, f"{role}-key"),
            opts=child_opts(self),
            **({"region": region} if region else {}),
        )
