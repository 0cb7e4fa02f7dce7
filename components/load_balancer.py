"""Load balancer: ALB, target group, HTTPS/redirect listeners, certificate, access logs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components._common import alias_record, child_opts, merge_tags, region_and_account

# ALB TLS 1.3 security policies whose lowest protocol is TLS 1.2 or 1.3: the allow-list the
# component validates against (the policy pack's `alb-listener-tls` keeps its own). In AWS's
# naming `TLS13-1-X` means "TLS 1.3 down to TLS 1.X", so ELBSecurityPolicy-TLS13-1-0-2021-06
# and -TLS13-1-1-2021-06 (TLS 1.0 / 1.1 still on) are left out on purpose. The recommended
# one is also the console default; the API default (ELBSecurityPolicy-2016-08) has no
# TLS 1.3, so it is never left implicit.
# Source: docs.aws.amazon.com/elasticloadbalancing/latest/application/describe-ssl-policies.html
# (tables "TLS 1.3 security policies", "FIPS security policies", "Post-quantum security
# policies", column "Protocols").
TLS13_POLICIES = (
    "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-Res-FIPS-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
)
DEFAULT_TLS13_POLICY = TLS13_POLICIES[0]

# Account that writes ALB access logs, for Regions launched before August 2022; newer
# Regions use the service principal logdelivery.elasticloadbalancing.amazonaws.com.
# Source: TF internal/service/elb/service_account_data_source.go; AWS ELB user guide
# "Enable access logs for your Application Load Balancer".
ELB_LOG_ACCOUNTS = {
    "us-east-1": "127311923021", "us-east-2": "033677994240", "us-west-1": "027434742980",
    "us-west-2": "797873946194", "ca-central-1": "985666609251", "eu-west-1": "156460612806",
    "eu-west-2": "652711504416", "eu-west-3": "009996457667", "eu-central-1": "054676820928",
    "eu-north-1": "897822967062", "eu-south-1": "635631232127",
    "ap-northeast-1": "582318560864", "ap-northeast-2": "600734575887",
    "ap-northeast-3": "383597477331", "ap-south-1": "718504428378",
    "ap-southeast-1": "114774131450", "ap-southeast-2": "783225319266",
    "ap-southeast-3": "589379963580", "ap-east-1": "754344448648", "sa-east-1": "507241528517",
    "me-south-1": "076674570225", "af-south-1": "098369216593",
}
ACCESS_LOG_PREFIX = "alb"
# Paths served only inside the VPC: the Prometheus scrape, the detailed health report
# (dependency errors, version, uptime) and the API description. The listener answers 403
# before any forwarding rule; liveness and readiness (/health/live, /health/ready) stay
# public for uptime checks. At most three values per condition and five wildcards per
# rule. Source: AWS ELB user guide, rule-condition-types.html ("Condition basics").
INTERNAL_PATHS = ("/metrics*", "/health", "/openapi.json")
# The app matches routes on the percent-decoded path, while the ALB documents comparing
# the path as sent; a request spelling an internal path with escapes (/%6Detrics) would
# slip past INTERNAL_PATHS. No route of the API needs an escape in its path, so every
# path containing one is refused too.
ENCODED_PATHS = ("*%*",)
# Header CloudFront adds on every origin request; the ALB forwards only when it matches,
# because CloudFront's origin-facing prefix list is shared by every AWS customer.
ORIGIN_VERIFY_HEADER = "X-Origin-Verify"
# Blue/green: requests carrying this header, with the stack's generated secret as its
# value (``test_route_secret``), take the test listener rule, which ECS points at the green
# (new) tasks while a deployment waits before the switch. A constant value would let anyone
# reach green before the switch.
TEST_ROUTE_HEADER = "X-Prodstack-Route"
# A header condition compares at most 128 characters, case-insensitively, with `*` and `?`
# as wildcards: the secret is shorter and alphanumeric. Source: botocore elbv2
# HttpHeaderConditionConfig.Values.
MAX_HEADER_VALUE_LENGTH = 128
# Rule priorities (1-50000, lower first, "A listener can't have multiple rules with the
# same priority"). Source: pulumi_aws lb.ListenerRule `priority`. The 403 rules come before
# every forward. The CDN's forwarding rule (rolling) and blue/green's production rule are
# never wanted together, but a `deploy_strategy` switch creates the new one before it
# deletes the old (Pulumi's default), so they must not share a priority. Production's comes
# first: while both exist, traffic stays on whichever the outgoing blue/green set serves
# (to rolling), or moves at once to the group the rolling tasks are already in (to
# blue/green, whose first deployment starts in that same group).
INTERNAL_PATHS_PRIORITY, ENCODED_PATHS_PRIORITY = 1, 2
TEST_RULE_PRIORITY, PRODUCTION_RULE_PRIORITY, FROM_CDN_PRIORITY = 5, 10, 20


@dataclass(frozen=True)
class LoadBalancerArgs:
    """Inputs of :class:`LoadBalancer`."""

    vpc_id: pulumi.Input[str]
    """VPC of the target group. Required; from ``Network.vpc_id``. Example: ``net.vpc_id``."""

    subnet_ids: Sequence[pulumi.Input[str]]
    """Public subnets, at least 2 AZs. Required. Example: ``net.public_subnet_ids``."""

    security_group_id: pulumi.Input[str]
    """Security group of the ALB. Required. Example: ``net.alb_security_group_id``."""

    domain: str = ""
    """Public hostname served over HTTPS. Empty means no TLS on the ALB: a plain-HTTP
    listener forwards traffic and the program warns. Default: ``""``.
    Example: ``"api.example.com"``."""

    certificate_arn: str = ""
    """Existing ACM certificate (same Region as the ALB) covering ``domain`` and
    ``origin_domain``. Empty with a ``hosted_zone_id`` creates a DNS-validated one.
    Default: ``""``. Example: ``"arn:aws:acm:eu-west-1:123456789012:certificate/abc"``."""

    hosted_zone_id: str = ""
    """Route 53 public zone for DNS validation and the alias records. Default: ``""``.
    Example: ``"Z0123456789ABCDEFGHIJ"``."""

    origin_domain: str = ""
    """Extra hostname on the certificate that CloudFront uses to reach this ALB over
    HTTPS (the ``*.elb.amazonaws.com`` name can't match a certificate). Default: ``""``.
    Example: ``"origin.api.example.com"``."""

    origin_verify_secret: pulumi.Input[str] | None = None
    """Shared secret CloudFront sends in ``X-Origin-Verify``. When set, the listener
    answers 403 unless the header matches, so other CloudFront distributions (which
    share the prefix list) cannot bypass the CDN and its WAF. Default: ``None``
    (no CDN). Example: ``random.RandomPassword("origin", length=40).result``."""

    origin_verify_previous_secret: pulumi.Input[str] | None = None
    """During a rotation of the origin secret, the value CloudFront sent before: the
    listener accepts either until the next deploy drops it, so CloudFront's edges, which
    take the new value over several minutes, are never refused. Default: ``None``.
    Example: the previous version's ``random.RandomPassword(...).result``."""

    alias_names: tuple[str, ...] = ()
    """Names to point at the ALB with Route 53 alias A records (needs ``hosted_zone_id``).
    Default: ``()``. Example: ``("api.example.com",)``."""

    ssl_policy: str = DEFAULT_TLS13_POLICY
    """HTTPS listener policy; one of :data:`TLS13_POLICIES`.
    Default: ``"ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"``.
    Example: ``"ELBSecurityPolicy-TLS13-1-3-2021-06"``."""

    app_port: int = 8000
    """Container port of the targets. Default: ``8000``. Example: ``8080``."""

    health_check_path: str = "/health/live"
    """Target health check path: liveness, which depends on nothing but the process.
    Not readiness (``/health/ready`` checks PostgreSQL and Redis): a Redis blip or an
    RDS Multi-AZ failover would fail every target at once, ECS would replace every task,
    and each replacement would run ``migrate`` against the failing database. Readiness
    stays in the app, which degrades on its own (reads work without Redis).
    Default: ``"/health/live"``. Example: ``"/health/live"``."""

    deregistration_delay_seconds: int = 30
    """Connection draining time before a target is removed, 0-3600.
    Default: ``30``. Example: ``60``."""

    deletion_protection: bool = True
    """ALB deletion protection. Default: ``True``. Example: ``False`` (dev)."""

    access_logs: bool = True
    """Write access logs to an SSE-S3 encrypted, private S3 bucket. Default: ``True``.
    Example: ``False`` (dev)."""

    access_log_retention_days: int = 90
    """Days before access-log objects expire. Default: ``90``. Example: ``365``."""

    access_log_noncurrent_days: int = 30
    """Days a deleted or expired access-log object stays recoverable as a noncurrent
    version (the bucket is versioned) before it is removed for good, >= 1.
    Default: ``30``. Example: ``90``."""

    blue_green: bool = False
    """Build what an ECS blue/green deployment moves traffic with: an alternate target
    group, a production listener rule and a test listener rule that matches
    ``X-Prodstack-Route: <test_route_secret>`` (both forward with weights that ECS
    rewrites, so Pulumi leaves their actions alone after creation). Default: ``False``
    (one target group, rolling deployments). Example: ``True``."""

    test_route_secret: pulumi.Input[str] | None = None
    """Blue/green: the value the test rule requires in ``X-Prodstack-Route``, a generated
    secret (alphanumeric, at most 128 characters), so only operators who read it from the
    stack reach the green set before the switch. Required with ``blue_green``.
    Default: ``None``. Example: ``random.RandomPassword("test-route", length=40).result``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every taggable child. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        if self.ssl_policy not in TLS13_POLICIES:
            problems.append(f"ssl_policy={self.ssl_policy!r}: use a TLS 1.3 policy")
        if self.domain and not (self.certificate_arn or self.hosted_zone_id):
            problems.append("domain needs certificate_arn or hosted_zone_id")
        if self.alias_names and not self.hosted_zone_id:
            problems.append("alias_names need hosted_zone_id")
        if not 0 <= self.deregistration_delay_seconds <= 3600:
            problems.append("deregistration_delay_seconds: 0-3600")
        if self.access_log_noncurrent_days < 1:
            problems.append("access_log_noncurrent_days: at least 1")
        if self.blue_green and self.test_route_secret is None:
            problems.append("blue_green needs test_route_secret (a generated secret)")
        if isinstance(self.test_route_secret, str) and not (
                self.test_route_secret.isalnum()
                and len(self.test_route_secret) <= MAX_HEADER_VALUE_LENGTH):
            problems.append(f"test_route_secret: alphanumeric, at most "
                            f"{MAX_HEADER_VALUE_LENGTH} characters")
        if problems:
            raise ValueError("LoadBalancerArgs: " + "; ".join(problems))


class LoadBalancer(pulumi.ComponentResource):
    """An internet-facing ALB: TLS 1.3, HTTP->HTTPS redirect, liveness-checked target group.

    Creates:
        ``{name}-alb``, ``{name}-tg`` (IP targets, ``/health/live``, 30 s draining),
        ``{name}-https`` (TLS 1.3 policy) + ``{name}-http`` (301 to HTTPS), or only
        ``{name}-http`` forwarding when there is no domain; ``{name}-cert`` +
        validation records when the certificate is DNS-validated; ``{name}-alias-<i>``
        records; ``{name}-logs`` bucket with encryption, public-access block, owner
        enforcement, versioning, lifecycle (current and noncurrent versions) and a
        TLS-only policy when access logs are on. With
        ``blue_green``: ``{name}-tg-alt`` (the alternate target group),
        ``{name}-production`` and ``{name}-test`` listener rules (instead of
        ``{name}-from-cdn``).

    Example:
        ``LoadBalancer("app", LoadBalancerArgs(vpc_id=..., subnet_ids=..., security_group_id=...,
        domain="api.example.com", hosted_zone_id="Z...")``

    Cost:
        $0.0225/h + $0.008 per LCU-hour: **~$16.4/month + ~$5.8/LCU** (730 h). ACM public
        certificates are free; access logs cost S3 storage. Knobs: traffic, ``access_logs``.

    Secure defaults:
        TLS 1.3 listener policy, HTTP only redirects, ``drop_invalid_header_fields``,
        deletion protection, access logs, health check on liveness; ``/metrics``,
        ``/health`` and ``/openapi.json`` (and any percent-escaped path) answered 403
        (``{name}-internal-paths``, ``{name}-encoded-paths``).

    Opt-outs:
        ``domain=""`` (plain HTTP, warned; dev only), ``deletion_protection=False``,
        ``access_logs=False``.
    """

    arn: pulumi.Output[str]
    """ARN of the ALB."""
    arn_suffix: pulumi.Output[str]
    """``app/<name>/<id>``, the CloudWatch ``LoadBalancer`` dimension."""
    dns_name: pulumi.Output[str]
    """AWS DNS name of the ALB."""
    zone_id: pulumi.Output[str]
    """Route 53 zone of the ALB's DNS name (for alias records)."""
    target_group_arn: pulumi.Output[str]
    """ARN of the target group the ECS service registers into."""
    target_group_arn_suffix: pulumi.Output[str]
    """``targetgroup/<name>/<id>``, the CloudWatch ``TargetGroup`` dimension."""
    listener_arn: pulumi.Output[str]
    """ARN of the HTTPS listener (the HTTP one without a domain)."""
    forwarder_arn: pulumi.Output[str]
    """ARN of what forwards to the target group: the listener, or behind a CDN or with
    ``blue_green`` the production listener rule. The ECS service waits for it."""
    alternate_target_group_arn: pulumi.Output[str] | None
    """ARN of the blue/green alternate target group (``None`` without ``blue_green``)."""
    alternate_target_group_arn_suffix: pulumi.Output[str] | None
    """CloudWatch ``TargetGroup`` dimension of the alternate target group, or ``None``."""
    production_rule_arn: pulumi.Output[str] | None
    """Listener rule ECS switches production traffic with (``None`` without ``blue_green``)."""
    test_rule_arn: pulumi.Output[str] | None
    """Header-matched listener rule ECS points at green before the switch, or ``None``."""
    origin_check_rules: list[aws.lb.ListenerRule]
    """The forwarding rules that match ``X-Origin-Verify`` (empty without a CDN)."""
    validation_records: dict[str, pulumi.Output[str]]
    """FQDN of the Route 53 validation record created for each name on a DNS-validated
    certificate (``{}`` with ``certificate_arn`` or no domain). Pass it to another
    certificate for the same names (the CDN's) so it reuses them instead of owning the
    same record a second time."""
    https: bool
    """Whether the ALB terminates TLS (``domain`` set)."""

    def __init__(
        self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:load_balancer:LoadBalancer", name, None, opts)
        self._name = name
        self._args = args
        self.https = bool(args.domain)
        self.validation_records = {}
        if not self.https:
            pulumi.log.warn(
                f"{name}: no domain configured, so the load balancer serves plain HTTP on "
                "port 80. Set `domain` (and `certificate_arn` or `hosted_zone_id`) for HTTPS.",
                self,
            )

        logs_bucket, log_bucket_setup = (
            self._create_access_log_bucket() if args.access_logs else (None, [])
        )
        self._create_alb(logs_bucket, log_bucket_setup)
        self._create_target_group()
        certificate_arn = self._certificate() if self.https else None
        self._create_listeners(certificate_arn)
        self._create_alias_records()

        self.register_outputs(
            {
                "arn": self.arn,
                "arn_suffix": self.arn_suffix,
                "dns_name": self.dns_name,
                "zone_id": self.zone_id,
                "target_group_arn": self.target_group_arn,
                "target_group_arn_suffix": self.target_group_arn_suffix,
                "listener_arn": self.listener_arn,
                "forwarder_arn": self.forwarder_arn,
                "alternate_target_group_arn": self.alternate_target_group_arn,
                "alternate_target_group_arn_suffix": self.alternate_target_group_arn_suffix,
                "production_rule_arn": self.production_rule_arn,
                "origin_check_rules": [rule.arn for rule in self.origin_check_rules],
                "test_rule_arn": self.test_rule_arn,
                "validation_records": self.validation_records,
                "https": self.https,
            }
        )

    def _tags(self, role: str) -> dict[str, str]:
        return merge_tags(self._args.tags, role)

    def _create_access_log_bucket(self) -> tuple[aws.s3.Bucket, list[pulumi.Resource]]:
        """The log bucket, and what must exist before the ALB may log to it."""
        n, args = self._name, self._args
        bucket = aws.s3.Bucket(
            f"{n}-logs",
            force_destroy=not args.deletion_protection,
            tags=self._tags("access-logs"),
            opts=child_opts(self),
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{n}-logs-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child_opts(self),
        )
        ownership = aws.s3.BucketOwnershipControls(
            f"{n}-logs-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child_opts(self),
        )
        # ALB access logs support SSE-S3 only, not SSE-KMS.
        # Source: AWS ELB user guide, enable-access-logging.html ("Amazon S3-managed keys").
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{n}-logs-encryption",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child_opts(self),
        )
        # Versioned, so a delete (by anyone in the account with delete rights, or an
        # intruder covering tracks) leaves the log behind as a noncurrent version.
        # Values: Enabled | Suspended. Source: botocore s3 BucketVersioningStatus.
        versioning = aws.s3.BucketVersioning(
            f"{n}-logs-versioning",
            bucket=bucket.id,
            versioning_configuration={"status": "Enabled"},
            opts=child_opts(self),
        )
        # Current logs expire after access_log_retention_days (expiry leaves a noncurrent
        # version on a versioned bucket); noncurrent versions go access_log_noncurrent_days
        # later. NoncurrentDays: a positive integer. Source: botocore s3
        # NoncurrentVersionExpiration.NoncurrentDays, LifecycleRule. The lifecycle waits
        # for versioning, as pulumi_aws s3.BucketLifecycleConfiguration's example
        # "Creating a Lifecycle Configuration for a bucket with versioning" does.
        aws.s3.BucketLifecycleConfiguration(
            f"{n}-logs-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "expire-access-logs",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "expiration": {"days": args.access_log_retention_days},
                    "noncurrent_version_expiration": {
                        "noncurrent_days": args.access_log_noncurrent_days},
                }
            ],
            opts=child_opts(self, depends_on=[versioning]),
        )
        region, account = region_and_account(self)
        elb_account = ELB_LOG_ACCOUNTS.get(region)
        principal = (
            {"AWS": f"arn:aws:iam::{elb_account}:root"}
            if elb_account
            else {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}
        )

        def policy(bucket_arn: str) -> str:
            return json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AllowAlbLogDelivery",
                            "Effect": "Allow",
                            "Principal": principal,
                            "Action": "s3:PutObject",
                            "Resource": f"{bucket_arn}/{ACCESS_LOG_PREFIX}/AWSLogs/{account}/*",
                        },
                        {
                            "Sid": "DenyInsecureTransport",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [bucket_arn, f"{bucket_arn}/*"],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        },
                    ],
                }
            )

        bucket_policy = aws.s3.BucketPolicy(
            f"{n}-logs-policy",
            bucket=bucket.id,
            policy=bucket.arn.apply(policy),
            opts=child_opts(self),
        )
        return bucket, [public_access, ownership, bucket_policy]

    def _create_alb(self, logs_bucket: aws.s3.Bucket | None,
                    log_bucket_setup: list[pulumi.Resource]) -> None:  # fmt: skip
        args = self._args
        access_logs = (
            {"bucket": logs_bucket.bucket, "prefix": ACCESS_LOG_PREFIX, "enabled": True}
            if logs_bucket is not None
            else None
        )
        self.alb = aws.lb.LoadBalancer(
            f"{self._name}-alb",
            load_balancer_type="application",
            internal=False,
            subnets=list(args.subnet_ids),
            security_groups=[args.security_group_id],
            drop_invalid_header_fields=True,
            enable_deletion_protection=args.deletion_protection,
            enable_http2=True,
            idle_timeout=60,
            access_logs=access_logs,
            tags=self._tags("alb"),
            # AWS checks that it may write to the bucket when logging is switched on, so
            # the bucket's policy and ownership settings must exist first.
            opts=child_opts(self, depends_on=log_bucket_setup),
        )
        self.arn = self.alb.arn
        self.arn_suffix = self.alb.arn_suffix
        self.dns_name = self.alb.dns_name
        self.zone_id = self.alb.zone_id

    def _create_target_group(self) -> None:
        self.target_group = self._target_group("tg")
        self.target_group_arn = self.target_group.arn
        self.target_group_arn_suffix = self.target_group.arn_suffix
        self.alternate_target_group = None
        self.alternate_target_group_arn = None
        self.alternate_target_group_arn_suffix = None
        if self._args.blue_green:
            # Both target groups are alike; which one is blue changes with every
            # deployment. Source: ECS developer guide, alb-resources-for-blue-green.html.
            self.alternate_target_group = self._target_group("tg-alt")
            self.alternate_target_group_arn = self.alternate_target_group.arn
            self.alternate_target_group_arn_suffix = self.alternate_target_group.arn_suffix

    def _target_group(self, role: str) -> aws.lb.TargetGroup:
        args = self._args
        return aws.lb.TargetGroup(
            f"{self._name}-{role}",
            vpc_id=args.vpc_id,
            port=args.app_port,
            protocol="HTTP",
            target_type="ip",
            deregistration_delay=args.deregistration_delay_seconds,
            health_check={
                "enabled": True,
                "path": args.health_check_path,
                "protocol": "HTTP",
                "port": "traffic-port",
                "matcher": "200",
                "interval": 15,
                "timeout": 5,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
            tags=self._tags(role),
            opts=child_opts(self),
        )

    def _certificate(self) -> pulumi.Input[str]:
        args = self._args
        if args.certificate_arn:
            return args.certificate_arn
        cert = dns_validated_certificate(
            self,
            f"{self._name}-cert",
            domain=args.domain,
            extra_names=(args.origin_domain,) if args.origin_domain else (),
            hosted_zone_id=args.hosted_zone_id,
            tags=self._tags("cert"),
        )
        self.validation_records = cert.validation_records
        return cert.arn

    def _create_listeners(self, certificate_arn: pulumi.Input[str] | None) -> None:
        n, args = self._name, self._args
        forward = [{"type": "forward", "target_group_arn": self.target_group.arn}]
        gated = args.origin_verify_secret is not None
        default_actions = forward
        if gated:
            default_actions = [{"type": "fixed-response", "fixed_response": {
                "content_type": "text/plain", "message_body": "Forbidden", "status_code": "403",
            }}]
        if certificate_arn is None:
            self.listener = aws.lb.Listener(
                f"{n}-http",
                load_balancer_arn=self.alb.arn,
                port=80,
                protocol="HTTP",
                default_actions=default_actions,
                # Visible to the policy pack: plain HTTP is a named, dev-only exception.
                tags=self._tags("http") | {"prodstack:plain-http": "no-domain"},
                opts=child_opts(self),
            )
        else:
            self.listener = aws.lb.Listener(
                f"{n}-https",
                load_balancer_arn=self.alb.arn,
                port=443,
                protocol="HTTPS",
                ssl_policy=args.ssl_policy,
                certificate_arn=certificate_arn,
                default_actions=default_actions,
                tags=self._tags("https"),
                opts=child_opts(self),
            )
            aws.lb.Listener(
                f"{n}-http",
                load_balancer_arn=self.alb.arn,
                port=80,
                protocol="HTTP",
                default_actions=[
                    {
                        "type": "redirect",
                        "redirect": {
                            "protocol": "HTTPS",
                            "port": "443",
                            "status_code": "HTTP_301",
                        },
                    }
                ],
                tags=self._tags("http"),
                opts=child_opts(self),
            )
        self.listener_arn = self.listener.arn
        self.forwarder_arn = self.listener.arn
        self._create_internal_path_rules()
        self.production_rule_arn = None
        self.test_rule_arn = None
        self.origin_check_rules: list[aws.lb.ListenerRule] = []
        # Values of one condition are alternatives ("matches if one of them matches"): the
        # previous secret is the second during a rotation. Source: botocore elbv2
        # HttpHeaderConditionConfig.Values ("If you specify multiple strings, the condition
        # is satisfied if one of the strings matches").
        accepted = [args.origin_verify_secret] + (
            [args.origin_verify_previous_secret]
            if args.origin_verify_previous_secret is not None else [])
        origin_check = (
            [{"http_header": {"http_header_name": ORIGIN_VERIFY_HEADER, "values": accepted}}]
            if gated else []
        )
        if args.blue_green:
            self._create_blue_green_rules(origin_check)
        elif gated:
            rule = aws.lb.ListenerRule(
                f"{n}-from-cdn",
                listener_arn=self.listener.arn,
                priority=FROM_CDN_PRIORITY,
                actions=forward,
                conditions=origin_check,
                tags=self._tags("from-cdn"),
                opts=child_opts(self),
            )
            self.forwarder_arn = rule.arn
            self.origin_check_rules = [rule]

    def _create_blue_green_rules(self, origin_check: list[dict]) -> None:
        """The production and test rules ECS moves between the two target groups.

        ECS rewrites both rules' forward weights on every deployment (it shifts
        production to green, then keeps the old group at weight 0), so Pulumi sets the
        actions once and then ignores them: resetting them would send production back
        to a target group that may have no tasks left. A rule may hold forward actions
        only. Sources: ECS developer guide, alb-resources-for-blue-green.html
        ("Limitations", listener rules); terraform-aws-modules/terraform-aws-alb#409.
        """
        n = self._name
        assert self.alternate_target_group is not None
        weighted = [{"type": "forward", "forward": {"target_groups": [
            {"arn": self.target_group.arn, "weight": 100},
            {"arn": self.alternate_target_group.arn, "weight": 0},
        ]}}]
        # A rule needs a condition; behind a CDN it is the origin check, else any path.
        production_conditions = origin_check or [{"path_pattern": {"values": ["/*"]}}]
        production = aws.lb.ListenerRule(
            f"{n}-production",
            listener_arn=self.listener.arn,
            priority=PRODUCTION_RULE_PRIORITY,
            actions=weighted,
            conditions=production_conditions,
            tags=self._tags("production"),
            opts=child_opts(self, ignore_changes=["actions"]),
        )
        test = aws.lb.ListenerRule(
            f"{n}-test",
            listener_arn=self.listener.arn,
            priority=TEST_RULE_PRIORITY,
            actions=weighted,
            # Conditions are ANDed: behind a CDN the test route still needs the origin
            # secret, so it is reachable only through CloudFront and its WAF.
            conditions=[*origin_check, {"http_header": {
                "http_header_name": TEST_ROUTE_HEADER,
                "values": [self._args.test_route_secret],
            }}],
            tags=self._tags("test"),
            opts=child_opts(self, ignore_changes=["actions"]),
        )
        self.forwarder_arn = production.arn
        self.production_rule_arn = production.arn
        self.test_rule_arn = test.arn
        if origin_check:
            self.origin_check_rules = [production, test]

    def _create_internal_path_rules(self) -> None:
        """403 for the internal paths and for percent-escaped paths, ahead of any forward.

        Prometheus (or any scraper) reaches ``/metrics`` on the tasks' private addresses
        inside the VPC, never through the ALB.
        """
        forbidden = [{"type": "fixed-response", "fixed_response": {
            "content_type": "text/plain", "message_body": "Forbidden", "status_code": "403",
        }}]
        for role, priority, paths in (
            ("internal-paths", INTERNAL_PATHS_PRIORITY, INTERNAL_PATHS),
            ("encoded-paths", ENCODED_PATHS_PRIORITY, ENCODED_PATHS),
        ):
            aws.lb.ListenerRule(
                f"{self._name}-{role}",
                listener_arn=self.listener.arn,
                priority=priority,
                actions=forbidden,
                conditions=[{"path_pattern": {"values": list(paths)}}],
                tags=self._tags(role),
                opts=child_opts(self),
            )

    def _create_alias_records(self) -> None:
        for i, alias in enumerate(self._args.alias_names):
            alias_record(
                self, f"{self._name}-alias-{i}", zone_id=self._args.hosted_zone_id,
                hostname=alias, target_dns_name=self.alb.dns_name,
                target_zone_id=self.alb.zone_id, evaluate_target_health=True,
            )


@dataclass(frozen=True)
class ValidatedCertificate:
    """What :func:`dns_validated_certificate` made."""

    arn: pulumi.Output[str]
    """ARN of the certificate, known once ACM has validated it."""
    validation_records: dict[str, pulumi.Output[str]]
    """Validation record FQDN per name on the certificate, shared ones included."""


def dns_validated_certificate(
    parent: pulumi.Resource,
    name: str,
    *,
    domain: str,
    hosted_zone_id: str,
    extra_names: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    region: str | None = None,
    shared_records: Mapping[str, pulumi.Input[str]] | None = None,
) -> ValidatedCertificate:
    """An ACM certificate validated through Route 53.

    ``region`` pins the certificate (CloudFront needs ``us-east-1``). Children are
    named ``{name}``, ``{name}-validation-<i>`` (one per name not in ``shared_records``)
    and ``{name}-validated``. ``shared_records`` maps names to the FQDN of a validation
    record another certificate already owns: ACM gives one account the same validation
    CNAME for a name in every Region (terraform-provider-aws#13653: "funnel the DNS
    record handling to a single record"), and two resources owning one record would
    delete it when either certificate is replaced.
    """
    shared = dict(shared_records or {})
    names = [domain, *extra_names]
    region_kw = {"region": region} if region else {}
    cert = aws.acm.Certificate(
        name,
        domain_name=domain,
        subject_alternative_names=list(extra_names) or None,
        validation_method="DNS",
        # ECDSA P-256, accepted by both ALB and CloudFront. Source: botocore acm
        # KeyAlgorithm enum; ACM user guide "Key algorithms".
        key_algorithm="EC_prime256v1",
        tags=dict(tags or {}),
        opts=child_opts(parent),
        **region_kw,
    )
    fqdns: dict[str, pulumi.Output[str]] = {}
    for i, hostname in enumerate(names):
        if hostname in shared:
            fqdns[hostname] = pulumi.Output.from_input(shared[hostname])
            continue
        option = cert.domain_validation_options.apply(
            lambda opts, h=hostname: next(o for o in opts if o.domain_name == h)
        )
        fqdns[hostname] = aws.route53.Record(
            f"{name}-validation-{i}",
            zone_id=hosted_zone_id,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=300,
            allow_overwrite=True,
            opts=child_opts(parent),
        ).fqdn
    validation = aws.acm.CertificateValidation(
        f"{name}-validated",
        certificate_arn=cert.arn,
        validation_record_fqdns=[fqdns[h] for h in names],
        opts=child_opts(parent),
        **region_kw,
    )
    return ValidatedCertificate(validation.certificate_arn, fqdns)
