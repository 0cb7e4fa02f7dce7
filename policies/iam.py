"""IAM: least privilege (no admin, no wildcards, no `Resource: "*"` on writes), trust
policies, and service principals pinned to this account's resources (the confused
deputy)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from policies._shared import (
    as_list,
    as_map,
    parse_json,
    resource_policy,
    strings,
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
    for statement in map(as_map, as_list(as_map(document).get("Statement")) or [
            as_map(document).get("Statement")]):
        if statement.get("Effect") != "Allow":
            continue
        actions = strings(statement.get("Action"))
        if statement.get("NotAction") is not None:
            yield "Allow with NotAction grants everything else; list the actions."
        if statement.get("NotResource") is not None:
            yield "Allow with NotResource grants every other resource; list the resources."
        for action in actions:
            if action in ("*", "*:*") or action.endswith(":*"):
                yield f"Action {action!r} grants a whole service or everything."
        if "*" in strings(statement.get("Resource")):
            writes = [a for a in actions
                      if not _is_read(a) and a.lower() not in NO_RESOURCE_TYPES]
            if writes:
                yield f"Resource \"*\" on write or secret-reading actions {sorted(writes)}."


def _admin_arn(arn: Any) -> bool:
    return isinstance(arn, str) and arn.rsplit("/", 1)[-1] in ADMIN_MANAGED_POLICIES


@resource_policy(
    "iam-least-privilege",
    "No admin managed policy, no `*`/`svc:*` actions, no NotAction/NotResource, no "
    "`Resource: \"*\"` on write or secret-reading actions, no `*` trust.",
    types=("aws:iam/role:Role", *IAM_POLICY_TYPES, *IAM_ATTACHMENT_TYPES),
)
def iam_least_privilege(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if resource_type == "aws:iam/role:Role":
        for arn in as_list(props.get("managedPolicyArns")):
            if _admin_arn(arn):
                yield f"Role carries the admin managed policy {arn}."
        for inline in map(as_map, as_list(props.get("inlinePolicies"))):
            yield from _statement_problems(parse_json(inline.get("policy")))
        trust = parse_json(props.get("assumeRolePolicy"))
        for statement in map(as_map, as_list(as_map(trust).get("Statement"))):
            principal = statement.get("Principal")
            principals = [principal] if isinstance(principal, str) else [
                p for v in as_map(principal).values() for p in strings(v)]
            if "*" in principals:
                yield "Trust policy lets any principal (\"*\") assume the role."
    elif resource_type in IAM_ATTACHMENT_TYPES:
        if _admin_arn(props.get("policyArn")):
            yield f"Admin managed policy {props.get('policyArn')} attached."
    elif resource_type in IAM_POLICY_TYPES:
        document = parse_json(props.get(IAM_POLICY_TYPES[resource_type]))
        if document is not None:
            yield from _statement_problems(document)


# ---- confused deputy: service principals only for this account's resources ------------

def _service_statements(document: Any) -> Iterable[Mapping[str, Any]]:
    for statement in map(as_map, as_list(as_map(parse_json(document)).get("Statement"))):
        if statement.get("Effect") == "Allow" and as_map(statement.get("Principal")).get(
                "Service"):
            yield statement


def condition_keys(statement: Mapping[str, Any]) -> set[str]:
    return {k for block in as_map(statement.get("Condition")).values() for k in as_map(block)}


def _deputy_problem(statement: Mapping[str, Any]) -> str:
    keys = condition_keys(statement)
    missing = {"aws:SourceAccount", "aws:SourceArn"} - keys
    if missing:
        service = as_map(statement.get("Principal")).get("Service")
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
    services = strings(as_map(statement.get("Principal")).get("Service"))
    return bool(services) and set(services) <= set(DOCUMENTED_TRUST)


# Source: AWS IAM user guide, "The confused deputy problem" (confused-deputy.html): a
# service principal acts for any account unless aws:SourceAccount / aws:SourceArn pin it.
@resource_policy(
    "iam-trust-confused-deputy",
    "Roles a service principal assumes name aws:SourceAccount and aws:SourceArn (except "
    "the roles iam-trust-as-documented holds to AWS's documented trust policy).",
    types="aws:iam/role:Role",
)
def iam_trust_confused_deputy(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    for statement in _service_statements(props.get("assumeRolePolicy")):
        if _documented_principal(statement):
            continue  # iam-trust-as-documented holds these to AWS's own policy
        problem = _deputy_problem(statement)
        if problem:
            yield f"Trust policy: {problem}."


@resource_policy(
    "iam-trust-as-documented",
    "Roles ECS (load balancers) and RDS (RDS Proxy) assume keep AWS's documented trust "
    "policy: that one service principal, sts:AssumeRole, no condition.",
    types="aws:iam/role:Role",
)
def iam_trust_as_documented(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    statements = [as_map(s) for s in as_list(as_map(parse_json(props.get("assumeRolePolicy"))).get(
        "Statement"))]
    documented = [s for s in statements if _documented_principal(s)]
    if not documented:
        return
    for statement in statements:
        principal = as_map(statement.get("Principal"))
        service = strings(principal.get("Service"))
        if statement.get("Effect") != "Allow":
            continue
        if statement not in documented or set(principal) != {"Service"} or len(service) != 1:
            yield (f"A role {'/'.join(DOCUMENTED_TRUST)} assumes trusts only that one service "
                   f"principal, as AWS documents it, not {dict(principal)}.")
        elif strings(statement.get("Action")) != ["sts:AssumeRole"]:
            yield (f"{service[0]} may only sts:AssumeRole this role, not "
                   f"{strings(statement.get('Action'))}.")
        elif statement.get("Condition"):
            yield (f"{service[0]}'s trust must stay as AWS documents it, without conditions: "
                   f"AWS does not document that it sends {sorted(condition_keys(statement))} "
                   "when it assumes this role, and an assumption without them fails.")


# CloudWatch Logs uses a key for a log group, and says which one in the encryption context
# (kms:EncryptionContext:aws:logs:arn, the log group's ARN); AWS documents the key policy
# for its Regional principal with that condition, not with aws:SourceArn/SourceAccount.
# Pinned to log groups of one account, the grant serves no other account's log group.
# Source: CloudWatch Logs user guide, encrypt-log-data-kms.html.
LOGS_PRINCIPAL = re.compile(r"^logs\.[a-z0-9-]+\.amazonaws\.com$")
LOGS_CONTEXT_KEY = "kms:EncryptionContext:aws:logs:arn"


def _names_log_group(arn: str) -> bool:
    """A log group ARN of one Region and account (the account may be unknown before apply):
    no wildcard before the group's name, nor as its first character."""
    prefix, found, name = arn.partition(":log-group:")
    return (bool(found) and prefix.startswith("arn:aws:logs:") and "*" not in prefix
            and bool(name) and not name.startswith("*"))


def _logs_grant_problem(statement: Mapping[str, Any]) -> str:
    arns = [arn for block in as_map(statement.get("Condition")).values()
            for arn in strings(as_map(block).get(LOGS_CONTEXT_KEY))]
    if not arns or not all(_names_log_group(arn) for arn in arns):
        return (f"the CloudWatch Logs grant must name this account's log groups in "
                f"{LOGS_CONTEXT_KEY}, not {arns or 'nothing'} (confused deputy)")
    return ""


def _resource_grant(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    """A key or topic policy: every grant to a service principal is pinned."""
    what = "Topic policy" if resource_type == "aws:sns/topicPolicy:TopicPolicy" else "Key policy"
    for statement in _service_statements(props.get("policy")):
        services = strings(as_map(statement.get("Principal")).get("Service"))
        if what == "Key policy" and services and all(LOGS_PRINCIPAL.match(s) for s in services):
            problem = _logs_grant_problem(statement)
        else:
            problem = _deputy_problem(statement)
        if problem:
            yield f"{what}: {problem}."


@resource_policy(
    "sns-service-grant-confused-deputy",
    "SNS topic policies let service principals (CloudWatch, AMP) publish only with "
    "aws:SourceAccount and aws:SourceArn.",
    types="aws:sns/topicPolicy:TopicPolicy",
)
def sns_confused_deputy(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    yield from _resource_grant(resource_type, props)


@resource_policy(
    "kms-service-grant-confused-deputy",
    "KMS key grants to service principals name aws:SourceAccount and aws:SourceArn "
    "(CloudWatch Logs: this account's log groups in kms:EncryptionContext:aws:logs:arn).",
    types="aws:kms/key:Key",
)
def kms_confused_deputy(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    yield from _resource_grant(resource_type, props)

