"""WAF: a WAFv2 web ACL with AWS managed rule groups and a per-IP rate limit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components._common import (
    LOG_RETENTION_DAYS,
    SECURITY_LOG_CLASS,
    SECURITY_LOG_TAG,
    child_opts,
    merge_tags,
)

SCOPES = ("REGIONAL", "CLOUDFRONT")
# Rate-based rule windows accepted by WAFv2. Source: botocore wafv2 RateBasedStatement
# EvaluationWindowSec; TF internal/service/wafv2/schemas.go (IntInSlice 60,120,300,600).
EVALUATION_WINDOWS = (60, 120, 300, 600)
# API allows 10..2e9 but pulumi-aws v7 rejects < 100 at preview (pulumi/pulumi-aws#5841).
MIN_RATE_LIMIT = 100
MAX_RATE_LIMIT = 2_000_000_000

# Largest body WAF forwards for inspection, by scope: fixed at 8 KB for an ALB, 16 KB by
# default for CloudFront (raised only at extra cost). Source: AWS WAF developer guide,
# web-request-body-inspection.html; CloudFormation AWS::WAFv2::WebACL Body,
# OversizeHandling ("For Application Load Balancer ... the limit is fixed at 8 KB";
# "For CloudFront ... the default limit is 16 KB").
BODY_INSPECTION_LIMITS = {"REGIONAL": 8 * 1024, "CLOUDFRONT": 16 * 1024}
# The common rule set's SizeRestrictions_BODY blocks bodies over 8 KB, a size that cannot
# be changed; only its action can be overridden. Source: AWS WAF developer guide,
# aws-managed-rule-groups-baseline.html (core rule set, SizeRestrictions_BODY).
COMMON_RULE_SET_BODY_LIMIT = 8 * 1024
COMMON_BODY_SIZE_RULE = "SizeRestrictions_BODY"
# (rule name, managed group, priority). WCUs: Common 700, KnownBadInputs 200, IP
# reputation 25 (+ rate rule 2, body-size rule 1) = 928, under the 1,500 base budget.
# Source: docs.aws.amazon.com/waf/latest/developerguide/aws-managed-rule-groups-baseline.html
MANAGED_RULE_GROUPS = (
    ("aws-common", "AWSManagedRulesCommonRuleSet", 10),
    ("aws-known-bad-inputs", "AWSManagedRulesKnownBadInputsRuleSet", 20),
    ("aws-ip-reputation", "AWSManagedRulesAmazonIpReputationList", 30),
)


@dataclass(frozen=True)
class WebAclArgs:
    """Inputs of :class:`WebAcl`."""

    scope: str = "REGIONAL"
    """``REGIONAL`` (attach to the ALB) or ``CLOUDFRONT`` (created in us-east-1 and set
    on the distribution). Replaces the resource. Default: ``"REGIONAL"``.
    Example: ``"CLOUDFRONT"``."""

    rate_limit: int = 600
    """Requests one client IP may send per ``evaluation_window_seconds`` before it is
    blocked, 100-2,000,000,000. Default: ``600`` (docs/targets.md: 10 r/s
    per IP, over 60 s). Example: ``1200``."""

    evaluation_window_seconds: int = 60
    """Window of the rate-based rule: 60, 120, 300 or 600. Default: ``60``.
    Example: ``300``."""

    associate_arn: pulumi.Input[str] | None = None
    """ALB ARN to associate with a ``REGIONAL`` ACL. ``None`` leaves it unattached (a
    ``CLOUDFRONT`` ACL is attached through the distribution's ``web_acl_id``).
    Default: ``None``. Example: ``lb.arn``."""

    log_retention_days: int = 365
    """Retention of the WAF log group (security logs, a CloudWatch value); logs redact
    the ``authorization`` header. Default: ``365``. Example: ``731``."""

    log_kms_key_arn: pulumi.Input[str] | None = None
    """Customer-managed key of the log group, in the ACL's Region (us-east-1 for
    ``CLOUDFRONT``); updated in place. Default: ``None`` (CloudWatch Logs' own encryption).
    Example: ``keys.edge_logs_key_arn``."""

    max_body_bytes: int = COMMON_RULE_SET_BODY_LIMIT
    """Largest request body the app accepts (its ``MAX_BODY_BYTES``): the ACL blocks
    bigger bodies and no smaller one, so WAF and app agree. 1,024 up to the scope's body
    inspection limit (8,192 ``REGIONAL``, 16,384 ``CLOUDFRONT``), so every body the app
    takes is inspected whole. At 8,192 the common rule set's ``SizeRestrictions_BODY``
    is that limit; otherwise its action is overridden to count and a rule of this ACL
    blocks bodies over ``max_body_bytes``. Default: ``8192``. Example: ``16384``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to the web ACL and its log group. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        if self.scope not in SCOPES:
            problems.append(f"scope={self.scope!r}: allowed REGIONAL, CLOUDFRONT")
        if not MIN_RATE_LIMIT <= self.rate_limit <= MAX_RATE_LIMIT:
            problems.append(f"rate_limit={self.rate_limit}: allowed 100-2000000000")
        if self.evaluation_window_seconds not in EVALUATION_WINDOWS:
            problems.append(
                f"evaluation_window_seconds={self.evaluation_window_seconds}: "
                "allowed 60, 120, 300, 600"
            )
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            problems.append(f"log_retention_days={self.log_retention_days}: CloudWatch value")
        limit = BODY_INSPECTION_LIMITS.get(self.scope, COMMON_RULE_SET_BODY_LIMIT)
        if not 1024 <= self.max_body_bytes <= limit:
            problems.append(
                f"max_body_bytes={self.max_body_bytes}: 1024-{limit} (what WAF inspects "
                f"for {self.scope})"
            )
        if self.scope == "CLOUDFRONT" and self.associate_arn is not None:
            problems.append("associate_arn: only for REGIONAL (CloudFront uses web_acl_id)")
        if problems:
            raise ValueError("WebAclArgs: " + "; ".join(problems))


def _visibility(metric: str) -> dict:
    # Required on the ACL and every rule; metric names match ^[\w#:.\-/]+$.
    # Source: botocore wafv2 VisibilityConfig.
    return {
        "cloudwatch_metrics_enabled": True,
        "sampled_requests_enabled": True,
        "metric_name": metric,
    }


class WebAcl(pulumi.ComponentResource):
    """A WAFv2 web ACL: AWS managed common, bad-input and IP-reputation rules, per-IP rate limit.

    Creates:
        ``{name}-acl``, ``{name}-logs`` (log group ``aws-waf-logs-...``, in the ACL's
        Region) + ``{name}-logging`` (``authorization`` header redacted) and, for a
        regional ACL with ``associate_arn``, ``{name}-association``.

    Example:
        ``WebAcl("app-waf", WebAclArgs(scope="REGIONAL", associate_arn=lb.arn))``

    Cost:
        $5/month per ACL + $1/month per rule (4 rules, 5 with ``body-size-limit``) +
        $0.60 per million requests: **~$9-10/month + $0.60/M requests**, plus log
        ingestion ($0.50/GB). Knobs: the stack's ``waf``, ``max_body_bytes``.

    Secure defaults:
        Managed rule groups enforce (``override_action: none``), except that the common
        set's 8 KB ``SizeRestrictions_BODY`` only counts when ``max_body_bytes`` is
        larger, and the ACL's own ``body-size-limit`` rule blocks at that size instead;
        the rate rule blocks;
        metrics and sampled requests are on for every rule; requests are logged with the
        bearer token redacted.

    Opt-outs:
        None inside the component; a stack may leave the WAF out (``waf: false``).
    """

    arn: pulumi.Output[str]
    """ARN of the web ACL (CloudFront's ``web_acl_id`` takes the ARN)."""

    def __init__(
        self, name: str, args: WebAclArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:waf:WebAcl", name, None, opts)
        metric_prefix = name.replace("_", "-")
        rules = [
            {
                "name": "rate-limit-per-ip",
                "priority": 1,
                "action": {"block": {}},
                "statement": {
                    "rate_based_statement": {
                        "limit": args.rate_limit,
                        "evaluation_window_sec": args.evaluation_window_seconds,
                        "aggregate_key_type": "IP",
                    }
                },
                "visibility_config": _visibility(f"{metric_prefix}-rate-limit"),
            }
        ]
        own_body_limit = args.max_body_bytes != COMMON_RULE_SET_BODY_LIMIT
        if own_body_limit:
            # Bodies over the app's limit are blocked here; with oversize MATCH a body
            # beyond the inspection limit (never below max_body_bytes) matches too.
            # Source: pulumi_aws wafv2 WebAcl size_constraint_statement, Body
            # oversize_handling CONTINUE | MATCH | NO_MATCH.
            rules.append({
                "name": "body-size-limit",
                "priority": 2,
                "action": {"block": {}},
                "statement": {"size_constraint_statement": {
                    "comparison_operator": "GT",
                    "size": args.max_body_bytes,
                    "field_to_match": {"body": {"oversize_handling": "MATCH"}},
                    "text_transformations": [{"priority": 0, "type": "NONE"}],
                }},
                "visibility_config": _visibility(f"{metric_prefix}-body-size-limit"),
            })
        for rule_name, group, priority in MANAGED_RULE_GROUPS:
            statement: dict = {"vendor_name": "AWS", "name": group}
            if own_body_limit and group == "AWSManagedRulesCommonRuleSet":
                # Its fixed 8 KB body rule would refuse bodies the app accepts; it only
                # counts, and body-size-limit above enforces the app's own limit.
                statement["rule_action_overrides"] = [
                    {"name": COMMON_BODY_SIZE_RULE, "action_to_use": {"count": {}}}
                ]
            rules.append(
                {
                    "name": rule_name,
                    "priority": priority,
                    # Managed groups take override_action, never action.
                    "override_action": {"none": {}},
                    "statement": {"managed_rule_group_statement": statement},
                    "visibility_config": _visibility(f"{metric_prefix}-{rule_name}"),
                }
            )
        # CLOUDFRONT-scoped ACLs must be created in us-east-1.
        # Source: botocore wafv2 CreateWebACLRequest.Scope; Pulumi AWS v7 region support.
        region_kw = {"region": "us-east-1"} if args.scope == "CLOUDFRONT" else {}
        self.acl = aws.wafv2.WebAcl(
            f"{name}-acl",
            scope=args.scope,
            default_action={"allow": {}},
            rules=rules,
            visibility_config=_visibility(f"{metric_prefix}-acl"),
            tags=merge_tags(args.tags, "waf"),
            opts=child_opts(self),
            **region_kw,
        )
        self._create_logging(name, args, region_kw)
        if args.associate_arn is not None:
            aws.wafv2.WebAclAssociation(
                f"{name}-association",
                resource_arn=args.associate_arn,
                web_acl_arn=self.acl.arn,
                opts=child_opts(self),
            )
        self.arn = self.acl.arn
        self.register_outputs({"arn": self.arn})

    def _create_logging(self, name: str, args: WebAclArgs, region_kw: dict) -> None:
        # WAF only logs to CloudWatch log groups named aws-waf-logs-*, in the ACL's Region.
        # Source: AWS WAF developer guide, logging-cw-logs.html.
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name_prefix="aws-waf-logs-prodstack-",
            retention_in_days=args.log_retention_days,
            **({"kms_key_id": args.log_kms_key_arn} if args.log_kms_key_arn is not None else {}),
            tags=merge_tags(args.tags, "waf-logs") | {SECURITY_LOG_TAG: SECURITY_LOG_CLASS},
            opts=child_opts(self),
            **region_kw,
        )
        aws.wafv2.WebAclLoggingConfiguration(
            f"{name}-logging",
            resource_arn=self.acl.arn,
            log_destination_configs=[logs.arn],
            # The API's bearer token must never land in logs.
            redacted_fields=[{"single_header": {"name": "authorization"}}],
            opts=child_opts(self),
            **region_kw,
        )
