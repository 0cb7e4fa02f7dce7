"""The edge: WAF rules enforced, attached and logged; the ALB's hardening, health checks,
origin gate, header secrets and blocked internal paths; CloudFront caching, Host and
security headers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ReportViolation, StackValidationArgs

from policies._shared import (
    as_list,
    as_map,
    is_prod,
    is_unknown,
    linked,
    lookup,
    of_type,
    resource_policy,
    stack_policy,
    strings,
)

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
        size = as_map(as_map(rule.get("statement")).get("sizeConstraintStatement"))
        body = as_map(as_map(size.get("fieldToMatch")).get("body"))
        if (set(as_map(rule.get("action"))) == {"block"} and size.get("comparisonOperator") == "GT"
                and body.get("oversizeHandling") == "MATCH"):
            return True
    return False


@resource_policy(
    "waf-managed-rules-enforced",
    "Web ACLs enforce the AWS common, known-bad-inputs and IP-reputation groups "
    "(override none) and a blocking per-IP rate rule; metrics on every rule.",
    types="aws:wafv2/webAcl:WebAcl",
)
def waf_enforces(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    rules = [as_map(r) for r in as_list(props.get("rules"))]
    enforced = set()
    for rule in rules:
        statement = as_map(as_map(rule.get("statement")).get("managedRuleGroupStatement"))
        if not statement:
            continue
        group = statement.get("name")
        # Managed groups take override_action: `none` keeps the group's own actions
        # (block), `count` only counts. Source: botocore wafv2 OverrideAction.
        override = as_map(rule.get("overrideAction"))
        if set(override) != {"none"}:
            yield (f"WAF rule {rule.get('name')!r} ({group}) must enforce the group "
                   f"(overrideAction none), not {sorted(override) or 'unset'}.")
            continue
        # A rule inside a group may only count when it is the common set's fixed 8 KB
        # body rule and a rule of the ACL blocks bodies over the app's limit instead
        # (components.waf, max_body_bytes).
        for item in map(as_map, as_list(statement.get("ruleActionOverrides"))):
            if "block" in as_map(item.get("actionToUse")):
                continue
            if not (item.get("name") == "SizeRestrictions_BODY" and _blocks_large_bodies(rules)):
                yield (f"WAF rule {rule.get('name')!r} ({group}) must not switch "
                       f"{item.get('name')!r} to {sorted(as_map(item.get('actionToUse')))}.")
        if statement.get("vendorName") == "AWS":
            enforced.add(group)
    for group in REQUIRED_MANAGED_GROUPS:
        if group not in enforced:
            yield f"WAF must enforce the AWS managed rule group {group}."
    rate = [r for r in rules
            if as_map(r.get("statement")).get("rateBasedStatement") is not None]  # fmt: skip
    if not rate:
        yield "WAF must have a per-IP rate-based rule."
    for rule in rate:
        if set(as_map(rule.get("action"))) != {"block"}:
            yield f"WAF rate rule {rule.get('name')!r} must block, not count."
        statement = as_map(as_map(rule.get("statement")).get("rateBasedStatement"))
        key = statement.get("aggregateKeyType")
        if key not in ("IP", "FORWARDED_IP"):
            yield f"WAF rate rule {rule.get('name')!r} must count per client IP, not {key!r}."
    if set(as_map(props.get("defaultAction"))) - {"allow", "block"}:
        yield "WAF default action must be allow or block."
    for rule in [props, *rules]:
        visibility = as_map(rule.get("visibilityConfig"))
        if visibility.get("cloudwatchMetricsEnabled") is not True:
            yield f"WAF {rule.get('name', 'ACL')!r} must publish CloudWatch metrics."


@stack_policy(
    "waf-attached-and-logged",
    "Every web ACL protects something and logs with the authorization header "
                "redacted.",
)
def waf_attached(args: StackValidationArgs, report: ReportViolation) -> None:
    attached: set[str] = set()
    for r in of_type(args, "wafv2/webAclAssociation:WebAclAssociation"):
        attached |= linked(r, "webAclArn")
    for r in of_type(args, "cloudfront/distribution:Distribution"):
        attached |= linked(r, "webAclId")
    redacted: set[str] = set()
    for r in of_type(args, "wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration"):
        headers = {
            str(as_map(as_map(f).get("singleHeader")).get("name", "")).lower()
            for f in as_list(r.props.get("redactedFields"))
        }
        if "authorization" in headers:
            redacted |= linked(r, "resourceArn")
        else:
            report("WAF logs must redact the authorization header (the API token).", r.urn)
    for acl in of_type(args, "wafv2/webAcl:WebAcl"):
        if acl.urn not in attached:
            report("Web ACL is attached to nothing (no association, no distribution).", acl.urn)
        if acl.urn not in redacted:
            report("Web ACL has no logging configuration redacting authorization.", acl.urn)


# ---- load balancer: header hygiene, logs in prod, only CloudFront behind a CDN ---------

@resource_policy(
    "alb-hardened",
    "ALBs drop invalid headers, keep desync mitigation, and log access in prod.",
    types="aws:lb/loadBalancer:LoadBalancer",
)
def alb_hardened(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("dropInvalidHeaderFields") is not True:
        yield "ALB must drop invalid header fields (dropInvalidHeaderFields; FSBP ELB.4)."
    if props.get("desyncMitigationMode") in ("monitor",):
        yield "ALB desync mitigation must stay defensive or strictest (FSBP ELB.12)."
    if is_prod(props) and as_map(props.get("accessLogs")).get("enabled") is not True:
        yield "Prod ALB must write access logs (FSBP ELB.5)."


# The app's liveness endpoint (app/api/routes/health.py); readiness (/health/ready)
# fails with PostgreSQL or Redis, which would take every target out at once.
LIVENESS_PATH = "/health/live"


@resource_policy(
    "target-group-liveness-check",
    f"Target groups health-check {LIVENESS_PATH} (liveness, not readiness).",
    types="aws:lb/targetGroup:TargetGroup",
)
def target_group_liveness(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    check = as_map(props.get("healthCheck"))
    if check.get("enabled") is False:
        yield "Target groups must health-check their targets."
    if check.get("path") != LIVENESS_PATH:
        yield (f"Target health checks use liveness ({LIVENESS_PATH}), not "
               f"{check.get('path')!r}: a database or Redis blip must not fail every target.")


@stack_policy(
    "alb-forwards-only-cdn-requests",
    "With CloudFront in front, the ALB forwards only requests carrying "
                "CloudFront's secret X-Origin-Verify header.",
)
def alb_gated_behind_cdn(args: StackValidationArgs, report: ReportViolation) -> None:
    if not of_type(args, "cloudfront/distribution:Distribution"):
        return
    for listener in of_type(args, "lb/listener:Listener"):
        for action in map(as_map, as_list(listener.props.get("defaultActions"))):
            if action.get("type") == "forward":
                report("Behind a CDN, listeners forward only requests carrying the origin "
                       "header (default action must not forward).", listener.urn)
    for rule in of_type(args, "lb/listenerRule:ListenerRule"):
        if not any(as_map(a).get("type") == "forward" for a in as_list(rule.props.get("actions"))):
            continue
        headers = [as_map(as_map(c).get("httpHeader"))
                   for c in as_list(rule.props.get("conditions"))]
        if not any(h.get("httpHeaderName") == "X-Origin-Verify" and as_list(h.get("values"))
                   for h in headers):
            report("Behind a CDN, a forwarding listener rule must match the X-Origin-Verify "
                   "header.", rule.urn)
# A header a forwarding rule trusts is a generated secret: the origin secret and blue/green's
# test route are 40 random characters (stacks/program.py).
MIN_HEADER_SECRET_LENGTH = 32


def _guessable(value: Any) -> bool:
    if not isinstance(value, str) or is_unknown(value):
        return False  # known only after apply, or a secret the plan does not show
    return len(value) < MIN_HEADER_SECRET_LENGTH or bool(set(value) & set("*?"))


@resource_policy(
    "alb-header-routes-need-secrets",
    "A listener rule that forwards on a header (CloudFront's origin check, blue/green's "
    "test route) matches a generated secret, never a guessable constant.",
    types="aws:lb/listenerRule:ListenerRule",
)
def alb_header_routes_secret(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if not any(as_map(a).get("type") == "forward" for a in as_list(props.get("actions"))):
        return
    for condition in map(as_map, as_list(props.get("conditions"))):
        header = as_map(condition.get("httpHeader"))
        guessable = [v for v in as_list(header.get("values")) if _guessable(v)]
        if guessable:
            yield (f"A forwarding rule matching {header.get('httpHeaderName')} must require a "
                   f"generated secret (>= {MIN_HEADER_SECRET_LENGTH} characters, no "
                   f"wildcards), not {guessable}: anyone can send a constant header.")

# Managed cache policy CachingDisabled. Source: CloudFront developer guide,
# using-managed-cache-policies.html (components.cdn cites the same).
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
NEVER_CACHED = ("/api/*", "/health/*")


@resource_policy(
    "cloudfront-api-never-cached",
    "CloudFront serves /api/* and /health/* with the CachingDisabled policy.",
    types="aws:cloudfront/distribution:Distribution",
)
def cloudfront_api_uncached(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    by_path = {as_map(b).get("pathPattern"): as_map(b)
               for b in as_list(props.get("orderedCacheBehaviors"))}  # fmt: skip
    for path in NEVER_CACHED:
        if lookup(by_path.get(path, {}), "cachePolicyId") != CACHING_DISABLED:
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
    headers = as_map(as_map(policy.get("parametersInCacheKeyAndForwardedToOrigin")).get(
        "headersConfig"))
    items = strings(as_map(headers.get("headers")).get("items"))
    return headers.get("headerBehavior") != "none" and "host" in {i.lower() for i in items}


@stack_policy(
    "cloudfront-host-not-forwarded",
    "No CloudFront behaviour's cache key holds Host (a stack cache policy with "
                "Host, or a managed one known to have it), so the origin sees its own name.",
)
def cloudfront_origin_host(args: StackValidationArgs, report: ReportViolation) -> None:
    for policy in of_type(args, "cloudfront/cachePolicy:CachePolicy"):
        if _keys_on_host(policy.props):
            report("A cache policy must not put Host in the cache key: CloudFront sends "
                   "whatever the key holds to the origin, past AllViewerExceptHostHeader.",
                   policy.urn)
    for distribution in of_type(args, "cloudfront/distribution:Distribution"):
        behaviours = [as_map(distribution.props.get("defaultCacheBehavior")),
                      *map(as_map, as_list(distribution.props.get("orderedCacheBehaviors")))]
        for behaviour in behaviours:
            managed = MANAGED_HOST_KEYED.get(str(lookup(behaviour, "cachePolicyId")))
            if managed:
                report(f"{behaviour.get('pathPattern', 'The default behaviour')} uses "
                       f"{managed}, whose cache key holds Host: the viewer's Host reaches "
                       "the ALB. Use a cache policy without Host.", distribution.urn)


# ---- ALB: internal paths answer 403 before any forward --------------------------------

# What must never reach the app from outside: its metrics, health details and schema
# (app/api/routes), and percent-encoded paths that could spell them another way.
BLOCKED_PATHS = ("/metrics*", "/health", "/openapi.json", "*%*")


@stack_policy(
    "alb-internal-paths-blocked",
    "Every forwarding listener answers /metrics*, /health, /openapi.json and "
                "percent-encoded paths 403 before any forward.",
)
def alb_internal_paths(args: StackValidationArgs, report: ReportViolation) -> None:
    rules_by_listener: dict[str, list[Any]] = {}
    for rule in of_type(args, "lb/listenerRule:ListenerRule"):
        for listener in linked(rule, "listenerArn"):
            rules_by_listener.setdefault(listener, []).append(rule)
    for listener in of_type(args, "lb/listener:Listener"):
        rules = rules_by_listener.get(listener.urn, [])

        def forwards(actions: Any) -> bool:
            return any(as_map(a).get("type") == "forward" for a in as_list(actions))

        forwarding = [r for r in rules if forwards(r.props.get("actions"))]
        if not forwarding and not forwards(listener.props.get("defaultActions")):
            continue  # redirects or answers by itself
        first_forward = min((r.props.get("priority") or 50000 for r in forwarding),
                            default=50001)
        blocked = set()
        for rule in rules:
            if forwards(rule.props.get("actions")) or not all(
                    as_map(a).get("type") == "fixed-response"
                    and str(as_map(a.get("fixedResponse")).get("statusCode")) in ("403", "404")
                    for a in as_list(rule.props.get("actions"))):
                continue
            if (rule.props.get("priority") or 50000) >= first_forward:
                report("A blocking rule must come before every forward (lower priority).",
                       rule.urn)
                continue
            for condition in map(as_map, as_list(rule.props.get("conditions"))):
                blocked |= set(strings(as_map(condition.get("pathPattern")).get("values")))
        missing = [p for p in BLOCKED_PATHS if p not in blocked]
        if missing:
            report(f"Listener forwards {missing} to the app; answer them 403 first.",
                   listener.urn)


# ---- CloudFront: security headers and standard logging -------------------------------

HSTS_MIN_AGE = 31_536_000  # one year; the VPS nginx sends two


def _headers_ok(policy: Any) -> bool:
    config = as_map(policy.props.get("securityHeadersConfig"))
    hsts = as_map(config.get("strictTransportSecurity"))
    return (hsts.get("override") is True and (hsts.get("accessControlMaxAgeSec") or 0)
            >= HSTS_MIN_AGE and hsts.get("includeSubdomains") is True
            and as_map(config.get("contentTypeOptions")).get("override") is True
            and as_map(config.get("frameOptions")).get("frameOption") in ("DENY", "SAMEORIGIN"))


@stack_policy(
    "cloudfront-security-headers-and-logging",
    "Every CloudFront behaviour sends HSTS, nosniff and frame DENY, and every "
                "distribution delivers its access logs (standard logging v2).",
)
def cloudfront_headers_and_logging(args: StackValidationArgs, report: ReportViolation) -> None:
    good_headers = {p.urn for p in
                    of_type(args, "cloudfront/responseHeadersPolicy:ResponseHeadersPolicy")
                    if _headers_ok(p)}  # fmt: skip
    sources = {}
    for source in of_type(args, "cloudwatch/logDeliverySource:LogDeliverySource"):
        if source.props.get("logType") == "ACCESS_LOGS":
            for distribution in linked(source, "resourceArn"):
                sources[source.urn] = distribution
    delivered = set()
    for delivery in of_type(args, "cloudwatch/logDelivery:LogDelivery"):
        if linked(delivery, "deliveryDestinationArn"):
            delivered |= {sources[s] for s in linked(delivery, "deliverySourceName")
                          if s in sources}  # fmt: skip
    for d in of_type(args, "cloudfront/distribution:Distribution"):
        behaviours = [as_map(d.props.get("defaultCacheBehavior")),
                      *map(as_map, as_list(d.props.get("orderedCacheBehaviors")))]
        policies = linked(d, "defaultCacheBehavior") | linked(d, "orderedCacheBehaviors")
        if not all(lookup(b, "responseHeadersPolicyId") for b in behaviours) or not (
                policies & good_headers):
            report("Every CloudFront behaviour sends the security headers (HSTS >= 1 year "
                   "with subdomains, nosniff, frame DENY).", d.urn)
        if d.urn not in delivered:
            report("CloudFront needs standard logging (a LogDeliverySource ACCESS_LOGS "
                   "delivered to a destination; FSBP CloudFront.5).", d.urn)

