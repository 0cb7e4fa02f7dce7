"""Small helpers shared by the components (no resources are created here)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

#: Tag every taggable child carries; the policy pack reads it to tell prod from dev.
ENVIRONMENT_TAG = "prodstack:environment"
#: Tag every taggable child carries while ``teardown: true`` is set; the policy pack accepts
#: lifted deletion protection in prod only with it.
TEARDOWN_TAG = "prodstack:teardown"
#: Tag the original database carries after a point-in-time restore replaced it (kept until
#: released): the data-tier rules no longer ask backups, drills and events of it.
RESTORE_SOURCE_TAG = "prodstack:restore-source"
# On every log group that holds security logs (WAF requests, VPC flow logs, RDS IAM
# authentication failures, CloudFront access logs): kept `security_log_retention_days`,
# apart from the application logs, since an intrusion is often found months later. Prod
# keeps them at least a year (stacks/config.py refuses less; policy `security-logs-kept`).
SECURITY_LOG_TAG = "prodstack:log-class"
SECURITY_LOG_CLASS = "security"
PROD_SECURITY_LOG_DAYS = 365
# On an alarm only ECS deployments watch (it notifies nobody): the target checks, which
# want a notifying alarm treating missing data as breaching, leave it to
# `deployment-alarms-quiet-on-missing-data`.
DEPLOYMENT_ALARM_TAG = "prodstack:alarm-use"
DEPLOYMENT_ALARM_USE = "deployment"
# On an ECS service with ECS Exec on in prod: the named, visible exception the policy
# pack accepts (config `ecs_exec_in_prod: true`).
ECS_EXEC_TAG = "prodstack:ecs-exec"


def child_opts(parent: pulumi.Resource, **kwargs: Any) -> pulumi.ResourceOptions:
    """Options for a child resource: always parented to its component."""
    return pulumi.ResourceOptions(parent=parent, **kwargs)


def merge_tags(base: Mapping[str, str], role: str) -> dict[str, str]:
    """The component's tags plus a ``prodstack:role`` tag naming the child's role."""
    return {**base, "prodstack:role": role}


def assume_role_policy(service: str, *, account: str, source_arn: str) -> str:
    """IAM trust policy letting one AWS service principal assume a role, and only on
    behalf of this account's resources matching ``source_arn`` (wildcards allowed).

    The two condition keys stop the confused deputy: without them, the service could be
    made to assume the role for a resource in another account. Source: IAM user guide,
    "The confused deputy problem" (confused-deputy.html): ``aws:SourceArn`` and
    ``aws:SourceAccount`` in the trust policy of a service role.
    """
    return _trust_policy(service, source_conditions(account=account, source_arn=source_arn))


def documented_trust_policy(service: str) -> str:
    """IAM trust policy letting ``service`` assume a role, with no condition: the form AWS
    documents for the roles whose assumption is not known to carry ``aws:SourceArn`` or
    ``aws:SourceAccount`` (a condition on a key the service does not send fails every
    assumption). Use :func:`assume_role_policy` wherever AWS documents the keys.

    Each caller cites the AWS page showing this exact policy for its role.
    """
    return _trust_policy(service, None)


def _trust_policy(service: str, condition: dict | None) -> str:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service},
                                 "Action": "sts:AssumeRole"}
    if condition is not None:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def source_conditions(*, account: str, source_arn: str) -> dict:
    """The confused-deputy condition block: the calling service acts for ``account`` and
    for a resource matching ``source_arn`` only (IAM user guide, confused-deputy.html)."""
    return {
        "StringEquals": {"aws:SourceAccount": account},
        "ArnLike": {"aws:SourceArn": source_arn},
    }


# CloudWatch Logs accepts only these retention values (days).
# Source: botocore logs/2014-03-28 PutRetentionPolicyRequest.retentionInDays doc;
# TF internal/service/logs/validate.go validRetentionInDays.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
    2192, 2557, 2922, 3288, 3653,
)

# Environment-variable names that must never travel in a task's plain `environment`
# (the service refuses them; the policy pack rejects them).
SECRET_NAME_RE = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|CREDENTIAL|API_KEY|AUTH", re.I)


def alias_record(
    parent: pulumi.Resource | None,
    name: str,
    *,
    zone_id: str,
    hostname: str,
    target_dns_name: pulumi.Input[str],
    target_zone_id: pulumi.Input[str],
    evaluate_target_health: bool,
    aliases: Sequence[pulumi.Alias] = (),
) -> aws.route53.Record:
    """A Route 53 alias A record pointing ``hostname`` at an AWS endpoint (``parent``
    None: the stack's own; ``aliases``: the names it was deployed under before)."""
    return aws.route53.Record(
        name,
        zone_id=zone_id,
        name=hostname,
        type="A",
        aliases=[
            {
                "name": target_dns_name,
                "zone_id": target_zone_id,
                "evaluate_target_health": evaluate_target_health,
            }
        ],
        opts=pulumi.ResourceOptions(parent=parent, aliases=list(aliases) or None),
    )


def stored_secret(
    name: str,
    *,
    value: pulumi.Input[str],
    description: str,
    recovery_window_days: int,
    tags: Mapping[str, str],
    parent: pulumi.Resource | None = None,
    kms_key_arn: pulumi.Input[str] | None = None,
) -> aws.secretsmanager.Secret:
    """A Secrets Manager secret ``{name}`` holding ``value`` (version ``{name}-value``).

    ``recovery_window_days`` is 0 (delete at once) or 7-30. ``kms_key_arn``: a customer
    managed key instead of ``aws/secretsmanager``; changing it re-encrypts the current
    versions in place (botocore secretsmanager UpdateSecretRequest.KmsKeyId).
    """
    opts = child_opts(parent) if parent is not None else None
    secret = aws.secretsmanager.Secret(
        name,
        description=description,
        recovery_window_in_days=recovery_window_days,
        **({"kms_key_id": kms_key_arn} if kms_key_arn is not None else {}),
        tags=dict(tags),
        opts=opts,
    )
    aws.secretsmanager.SecretVersion(
        f"{name}-value", secret_id=secret.id, secret_string=value, opts=opts
    )
    return secret


def region_and_account(parent: pulumi.Resource) -> tuple[str, str]:
    """The region and the account a component deploys into, looked up (two invokes)
    with the component as their parent, for ARNs and key policies it writes."""
    invoke = pulumi.InvokeOptions(parent=parent)
    return aws.get_region(opts=invoke).region, aws.get_caller_identity(opts=invoke).account_id
