"""CDN: a CloudFront distribution in front of the ALB."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components._common import (
    LOG_RETENTION_DAYS,
    SECURITY_LOG_CLASS,
    SECURITY_LOG_TAG,
    alias_record,
    child_opts,
    merge_tags,
)
from components.load_balancer import ORIGIN_VERIFY_HEADER, dns_validated_certificate

# Viewer TLS floors we accept (TLSv1.2_2021 or newer).
# Source: botocore cloudfront MinimumProtocolVersion enum.
MIN_PROTOCOL_VERSIONS = ("TLSv1.2_2021", "TLSv1.2_2025", "TLSv1.3_2025")
# Source: botocore cloudfront PriceClass enum.
PRICE_CLASSES = ("PriceClass_100", "PriceClass_200", "PriceClass_All")

# Managed policy IDs. CachingDisabled: AWS CloudFront developer guide
# "Use managed cache policies" and aws-cdk cache-policy.ts. AllViewerExceptHostHeader
# (the ALB sees its own host name, matching its certificate): aws-cdk
# origin-request-policy.ts.
CACHING_DISABLED_POLICY_ID = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST_HEADER_POLICY_ID = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
# The default behaviour's own cache policy: the origin's Cache-Control decides, as with the
# managed UseOriginCacheControlHeaders, but without Host in the cache key. Whatever a cache
# key holds CloudFront also sends to the origin, whatever the origin request policy says,
# so a key with Host would hand the ALB the viewer's Host despite
# AllViewerExceptHostHeader (it works only while the ALB certificate covers the domain).
# Source: botocore cloudfront ParametersInCacheKeyAndForwardedToOrigin ("The headers,
# cookies, and query strings that are included in the cache key are also included in
# requests that CloudFront sends to the origin").
# TTLs: DefaultTTL applies only when the origin sends no Cache-Control or Expires (0: such a
# response is not cached); MaxTTL caps what the origin asks for (one year, the API's own
# default); MinTTL 0 so no-store/private are honoured. Behaviours: header none | whitelist;
# cookie and query string none | whitelist | allExcept | all. Source: botocore cloudfront
# CachePolicyConfig (MinTTL, DefaultTTL, MaxTTL), CachePolicyHeaderBehavior,
# CachePolicyCookieBehavior, CachePolicyQueryStringBehavior.
ORIGIN_CACHE_CONTROL_TTLS = {"min_ttl": 0, "default_ttl": 0, "max_ttl": 31_536_000}
ORIGIN_CACHE_CONTROL_KEY = {
    "headers_config": {"header_behavior": "none"},
    # The API authenticates with a bearer header, never cookies.
    "cookies_config": {"cookie_behavior": "none"},
    "query_strings_config": {"query_string_behavior": "all"},
    "enable_accept_encoding_gzip": True,
    "enable_accept_encoding_brotli": True,
}
UNCACHED_PATHS = ("/api/*", "/health/*")
ORIGIN_ID = "alb"
# Security headers on every viewer response, the same values the VPS profile's nginx
# sends (pyinfra/templates/nginx-site.j2.conf): HSTS two years with subdomains,
# nosniff, frame DENY, no referrer. Field names and valid values: pulumi_aws
# cloudfront.ResponseHeadersPolicy `security_headers_config` (frame_option DENY |
# SAMEORIGIN; referrer_policy no-referrer | ...).
HSTS_MAX_AGE_SECONDS = 63_072_000
SECURITY_HEADERS = {
    "strict_transport_security": {
        "access_control_max_age_sec": HSTS_MAX_AGE_SECONDS,
        "include_subdomains": True,
        "preload": False,
        "override": True,
    },
    "content_type_options": {"override": True},
    "frame_options": {"frame_option": "DENY", "override": True},
    "referrer_policy": {"referrer_policy": "no-referrer", "override": True},
}
# Standard logging (v2) goes through CloudWatch Logs' delivery API, and CloudFront's
# delivery source lives in us-east-1 like the distribution's other global settings.
# Log type: pulumi_aws cloudwatch.LogDeliverySource `log_type` ("For Amazon CloudFront,
# the valid value is ACCESS_LOGS"). Source: CloudFront developer guide,
# standard-logging.html; CloudWatch Logs user guide, AWS-vended-logs-permissions-V2.
ACCESS_LOG_TYPE = "ACCESS_LOGS"
LOG_REGION = "us-east-1"
# Log groups under /aws/vendedlogs/ share one wildcard resource policy, which keeps the
# 10-policies-per-Region limit out of reach. Source: CloudWatch Logs user guide,
# AWS-logs-infrastructure-CWL.html ("Log group resource policy").
ACCESS_LOG_GROUP_PREFIX = "/aws/vendedlogs/cloudfront/prodstack-"


@dataclass(frozen=True)
class CdnArgs:
    """Inputs of :class:`Cdn`."""

    origin_domain: pulumi.Input[str]
    """Host name CloudFront connects to: a name on the ALB certificate when
    ``origin_https`` (e.g. ``origin.api.example.com``), else the ALB DNS name.
    Required. Example: ``"origin.api.example.com"``."""

    origin_https: bool = True
    """Talk HTTPS (TLS 1.2) to the origin. ``False`` only for a stack without a domain,
    whose ALB has no certificate (warned). Default: ``True``. Example: ``False``."""

    aliases: tuple[str, ...] = ()
    """Public host names served by the distribution; needs ``certificate_arn`` or
    ``hosted_zone_id``. Default: ``()`` (the ``*.cloudfront.net`` name only, warned).
    Example: ``("api.example.com",)``."""

    certificate_arn: str = ""
    """ACM certificate in **us-east-1** covering ``aliases``. Empty with a
    ``hosted_zone_id`` creates a DNS-validated one there. Default: ``""``.
    Example: ``"arn:aws:acm:us-east-1:123456789012:certificate/abc"``."""

    hosted_zone_id: str = ""
    """Route 53 zone for certificate validation and alias records. Default: ``""``.
    Example: ``"Z0123456789ABCDEFGHIJ"``."""

    alias_records: bool = True
    """Create the ``aliases``' Route 53 records here. ``False`` when the caller owns the
    record of the public name (so that it outlives the CDN). Default: ``True``.
    Example: ``False``."""

    origin_verify_secret: pulumi.Input[str] | None = None
    """Secret sent to the origin in ``X-Origin-Verify`` (the ALB forwards only with it).
    Default: ``None``. Example: ``origin_secret.result``."""

    origin_checks: Sequence[pulumi.Resource] = ()
    """What at the origin accepts ``origin_verify_secret`` (the ALB's listener rules): the
    distribution is created or updated only after them, so it never sends a value the
    origin does not accept yet (a rotation). Default: ``()``.
    Example: ``lb.origin_check_rules``."""

    web_acl_arn: pulumi.Input[str] | None = None
    """WAFv2 web ACL ARN (scope CLOUDFRONT). Default: ``None``. Example: ``waf.arn``."""

    validation_records: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Route 53 validation records that already exist, by name: the DNS-validated
    certificate reuses them rather than owning the same record twice (ACM gives a name
    the same validation CNAME in every Region). Default: ``{}``.
    Example: ``lb.validation_records``."""

    minimum_protocol_version: str = "TLSv1.2_2021"
    """Viewer TLS floor: ``TLSv1.2_2021``, ``TLSv1.2_2025`` or ``TLSv1.3_2025``.
    Default: ``"TLSv1.2_2021"``. Example: ``"TLSv1.2_2025"``."""

    price_class: str = "PriceClass_100"
    """Edge locations used: ``PriceClass_100`` (NA/EU), ``PriceClass_200``,
    ``PriceClass_All``. Default: ``"PriceClass_100"``. Example: ``"PriceClass_All"``."""

    access_log_retention_days: int = 365
    """Retention of the access-log group in us-east-1 (standard logging v2, FSBP
    CloudFront.5; security logs), a CloudWatch value. Default: ``365``.
    Example: ``731``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to the distribution. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        if self.minimum_protocol_version not in MIN_PROTOCOL_VERSIONS:
            problems.append(
                f"minimum_protocol_version={self.minimum_protocol_version!r}: allowed "
                + ", ".join(MIN_PROTOCOL_VERSIONS)
            )
        if self.price_class not in PRICE_CLASSES:
            problems.append(f"price_class={self.price_class!r}: allowed {PRICE_CLASSES}")
        if self.aliases and not (self.certificate_arn or self.hosted_zone_id):
            problems.append("aliases need certificate_arn (us-east-1) or hosted_zone_id")
        if self.certificate_arn and ":us-east-1:" not in self.certificate_arn:
            problems.append("certificate_arn must be in us-east-1 for CloudFront")
        if self.access_log_retention_days not in LOG_RETENTION_DAYS:
            problems.append(
                f"access_log_retention_days={self.access_log_retention_days}: CloudWatch value"
            )
        if problems:
            raise ValueError("CdnArgs: " + "; ".join(problems))


class Cdn(pulumi.ComponentResource):
    """CloudFront before the ALB: HTTPS only, TLSv1.2_2021 floor, HTTP/2+3, API never cached.

    Creates:
        ``{name}-distribution``; ``{name}-security-headers`` (response headers policy);
        ``{name}-origin-cache-control`` (the default behaviour's cache policy: the
        origin's Cache-Control, no Host in the key);
        ``{name}-access-logs`` (log group) + ``{name}-log-source``, ``{name}-log-destination``
        and ``{name}-log-delivery`` (standard logging v2, all in us-east-1);
        ``{name}-cert`` (+ validation, in us-east-1) when aliases have no certificate, with
        a validation record only for names not already in ``validation_records``;
        ``{name}-alias-<i>`` Route 53 records.

    Example:
        ``Cdn("app-cdn", CdnArgs(origin_domain="origin.api.example.com",
        aliases=("api.example.com",), hosted_zone_id="Z...", web_acl_arn=waf.arn))``

    Cost:
        Pay per use: $0.085/GB out (first 10 TB, NA/EU) + $0.0100 per 10k HTTPS requests;
        1 TB and 10 M requests -> **~$95/month**; idle ~ $0. The first 1 TB/month is in
        the always-free tier. Access logs: CloudWatch vended-log ingestion ($0.50/GB) and
        storage. Knobs: ``price_class``, traffic, ``access_log_retention_days``.

    Secure defaults:
        Viewers redirected to HTTPS; TLSv1.2_2021 minimum with SNI; HTTPS-only to the
        origin (TLS 1.2); ``/api/*`` and ``/health/*`` never cached; elsewhere the
        origin's Cache-Control decides, and the viewer's Host never reaches the origin;
        WAF attached when given; HSTS (2 years, subdomains), nosniff, frame DENY and
        no-referrer on every response, as the VPS profile's nginx sends them; access
        logs (standard logging v2) to CloudWatch.

    Opt-outs:
        ``origin_https=False`` and no ``aliases`` (stack without a domain; both warned).
    """

    domain_name: pulumi.Output[str]
    """``dxxxx.cloudfront.net`` name of the distribution."""
    distribution_id: pulumi.Output[str]
    """Distribution ID."""
    url: pulumi.Output[str]
    """Public HTTPS URL (first alias, else the CloudFront name)."""

    def __init__(
        self, name: str, args: CdnArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:cdn:Cdn", name, None, opts)
        self._name = name
        if not args.origin_https:
            pulumi.log.warn(
                f"{name}: CloudFront reaches the ALB over plain HTTP because the stack has "
                "no domain. Set `domain` for HTTPS end to end.",
                self,
            )
        viewer_certificate = self._viewer_certificate(args)
        origin_cache_control = aws.cloudfront.CachePolicy(
            f"{name}-origin-cache-control",
            comment="prodstack: the origin's Cache-Control decides; Host not in the key",
            parameters_in_cache_key_and_forwarded_to_origin=ORIGIN_CACHE_CONTROL_KEY,
            opts=child_opts(self),
            **ORIGIN_CACHE_CONTROL_TTLS,
        )
        headers = aws.cloudfront.ResponseHeadersPolicy(
            f"{name}-security-headers",
            comment="prodstack: the security headers the VPS profile's nginx sends",
            security_headers_config=SECURITY_HEADERS,
            opts=child_opts(self),
        )
        behaviour = {
            "target_origin_id": ORIGIN_ID,
            "response_headers_policy_id": headers.id,
            "viewer_protocol_policy": "redirect-to-https",
            "allowed_methods": ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"],
            "cached_methods": ["GET", "HEAD"],
            "compress": True,
            "origin_request_policy_id": ALL_VIEWER_EXCEPT_HOST_HEADER_POLICY_ID,
        }
        self.distribution = aws.cloudfront.Distribution(
            f"{name}-distribution",
            enabled=True,
            comment="prodstack API",
            http_version="http2and3",
            is_ipv6_enabled=True,
            price_class=args.price_class,
            aliases=list(args.aliases) or None,
            origins=[
                {
                    "origin_id": ORIGIN_ID,
                    "domain_name": args.origin_domain,
                    "custom_headers": (
                        [{"name": ORIGIN_VERIFY_HEADER, "value": args.origin_verify_secret}]
                        if args.origin_verify_secret is not None else None
                    ),
                    "custom_origin_config": {
                        "http_port": 80,
                        "https_port": 443,
                        "origin_protocol_policy": (
                            "https-only" if args.origin_https else "http-only"
                        ),
                        "origin_ssl_protocols": ["TLSv1.2"],
                        "origin_read_timeout": 30,
                        "origin_keepalive_timeout": 5,
                    },
                }
            ],
            default_cache_behavior=behaviour | {"cache_policy_id": origin_cache_control.id},
            ordered_cache_behaviors=[
                behaviour | {"path_pattern": path, "cache_policy_id": CACHING_DISABLED_POLICY_ID}
                for path in UNCACHED_PATHS
            ],
            restrictions={"geo_restriction": {"restriction_type": "none"}},
            viewer_certificate=viewer_certificate,
            web_acl_id=args.web_acl_arn,
            tags=merge_tags(args.tags, "distribution"),
            opts=child_opts(self, depends_on=list(args.origin_checks)),
        )
        self._create_access_logs(args)
        for i, alias in enumerate(args.aliases):
            if not args.hosted_zone_id or not args.alias_records:
                break
            alias_record(
                self, f"{name}-alias-{i}", zone_id=args.hosted_zone_id, hostname=alias,
                target_dns_name=self.distribution.domain_name,
                target_zone_id=self.distribution.hosted_zone_id,
                evaluate_target_health=False,
            )
        self.domain_name = self.distribution.domain_name
        self.distribution_id = self.distribution.id
        self.url = (
            pulumi.Output.from_input(f"https://{args.aliases[0]}")
            if args.aliases
            else pulumi.Output.concat("https://", self.distribution.domain_name)
        )
        self.register_outputs(
            {
                "domain_name": self.domain_name,
                "distribution_id": self.distribution_id,
                "url": self.url,
            }
        )

    def _create_access_logs(self, args: CdnArgs) -> None:
        """Standard logging (v2): distribution -> delivery source -> log group (FSBP
        CloudFront.5). No S3 bucket with ACLs is needed, unlike legacy logging; CloudWatch
        Logs adds the log group's resource policy for delivery.logs.amazonaws.com itself."""
        n = self._name
        region = {"region": LOG_REGION}
        group = aws.cloudwatch.LogGroup(
            f"{n}-access-logs",
            name_prefix=ACCESS_LOG_GROUP_PREFIX,
            retention_in_days=args.access_log_retention_days,
            tags=merge_tags(args.tags, "access-logs") | {SECURITY_LOG_TAG: SECURITY_LOG_CLASS},
            opts=child_opts(self),
            **region,
        )
        # Delivery names: 1-60 of [\w-]. Source: botocore logs PutDeliverySourceRequest.name.
        log_name = pulumi.Output.concat("prodstack-cf-", self.distribution.id)
        source = aws.cloudwatch.LogDeliverySource(
            f"{n}-log-source",
            name=log_name,
            log_type=ACCESS_LOG_TYPE,
            resource_arn=self.distribution.arn,
            tags=merge_tags(args.tags, "log-source"),
            opts=child_opts(self),
            **region,
        )
        destination = aws.cloudwatch.LogDeliveryDestination(
            f"{n}-log-destination",
            name=log_name,
            output_format="json",
            delivery_destination_configuration={"destination_resource_arn": group.arn},
            tags=merge_tags(args.tags, "log-destination"),
            opts=child_opts(self),
            **region,
        )
        aws.cloudwatch.LogDelivery(
            f"{n}-log-delivery",
            delivery_source_name=source.name,
            delivery_destination_arn=destination.arn,
            tags=merge_tags(args.tags, "log-delivery"),
            opts=child_opts(self),
            **region,
        )

    def _viewer_certificate(self, args: CdnArgs) -> dict:
        if not args.aliases:
            pulumi.log.warn(
                f"{self._name}: no aliases, so viewers get CloudFront's default certificate, "
                "on which CloudFront ignores minimum_protocol_version (TLSv1 floor). Set "
                "`domain` for the TLSv1.2_2021 floor.",
                self,
            )
            return {"cloudfront_default_certificate": True}
        certificate_arn: pulumi.Input[str] = args.certificate_arn or dns_validated_certificate(
            self,
            f"{self._name}-cert",
            domain=args.aliases[0],
            extra_names=args.aliases[1:],
            hosted_zone_id=args.hosted_zone_id,
            tags=merge_tags(args.tags, "cert"),
            # CloudFront only takes ACM certificates from us-east-1.
            # Source: botocore cloudfront ViewerCertificate.ACMCertificateArn.
            region="us-east-1",
            shared_records=args.validation_records,
        ).arn
        return {
            "acm_certificate_arn": certificate_arn,
            "ssl_support_method": "sni-only",
            "minimum_protocol_version": args.minimum_protocol_version,
        }
