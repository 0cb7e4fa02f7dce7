"""Stack configuration: every ``prodstack:`` key, its type and default, and validation.

``load(raw, region=..., stack=...)`` checks *everything* before any resource exists and
raises :class:`ConfigError` listing every problem, one line each, naming the key, the
bad value and what is allowed. ``Pulumi.yaml`` declares the same keys (a test keeps the
two in step); the VPS profile uses the same names in pyinfra data.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import INT_SETTINGS as APP_INT_SETTINGS
from components._common import LOG_RETENTION_DAYS, PROD_SECURITY_LOG_DAYS
from components.backup import VAULT_LOCK_MODES
from components.database import (
    RESERVED_CONNECTIONS,
    RESTORE_SOURCES,
    RESTORE_TIME_RE,
    max_connections,
)
from components.db_proxy import MAX_CONNECTIONS_PERCENT as PROXY_MAX_CONNECTIONS_PERCENT
from components.network import NAT_STRATEGIES, subnet_cidrs
from components.registry import PLATFORMS, TAG_RE, parse_image_ref
from prodstack import budget, profile
from prodstack.sizes import CLOUD as SIZES

NAMESPACE = "prodstack"

# Commercial Regions with ECS Fargate, RDS, ElastiCache, WAFv2 and ACM.
# Source: AWS General Reference "Regional endpoints" (rande.html) region table.
REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "ca-west-1",
    "mx-central-1", "sa-east-1", "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1",
    "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "il-central-1",
    "me-south-1", "me-central-1", "af-south-1", "ap-east-1", "ap-south-1", "ap-south-2",
    "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-southeast-1",
    "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
    "ap-southeast-7",
)
ACM_ARN_RE = re.compile(r"^arn:aws:acm:([a-z0-9-]+):\d{12}:certificate/[0-9a-f-]{36}$")
ZONE_ID_RE = re.compile(r"^Z[A-Z0-9]{1,32}$")
ENVIRONMENT_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
# The backup targets (docs/targets.md: daily kept 30 days, weekly 3 months, monthly 1 year): the
# floor of each AWS Backup tier in prod.
PROD_BACKUP_TIER_DAYS = (30, 90, 365)


@dataclass(frozen=True)
class Key:
    """One project config key as declared in ``Pulumi.yaml``."""

    type: str
    """``string``, ``integer`` or ``boolean`` (Pulumi config schema types)."""
    default: Any
    """Value used when the stack file does not set the key."""
    description: str
    """One sentence: meaning and allowed values."""
    secret: bool = False
    """Whether the value must be set with ``pulumi config set --secret``."""
    renamed_to: str = ""
    """The key's new name, for an old name that still works for one release."""


def _shared(key: str, note: str = "") -> str:
    """A shared key's description: the one in prodstack/profile.py, plus the cloud's note."""
    text = profile.CloudProfile.model_fields[key].description or ""
    return f"{text} {note}".strip()


def _renamed(old: str) -> Key:
    new = profile.RENAMED["cloud"][old].new
    return Key(KEYS[new].type, None, f"Renamed {new}; this name works until the next release.",
               renamed_to=new)


KEYS: dict[str, Key] = {
    "size": Key("string", profile.DEFAULT_SIZE, _shared("size")),
    "environment": Key("string", "",
                       "Environment label; 'prod' turns on the prod checks. Empty: stack name."),
    "replicas": Key("string", "auto", _shared("replicas")),
    "min_replicas": Key("string", "auto", "Autoscaling floor, >= 1, or auto (the size's)."),
    "max_replicas": Key("string", "auto",
                        "Autoscaling ceiling, >= min_replicas, or auto (the size's)."),
    "cpu_target_percent": Key("integer", 70, "Average task CPU autoscaling holds, 10-90."),
    "requests_per_target": Key("integer", 1000,
                               "ALB requests per task per minute autoscaling holds, >= 1."),
    "deploy_strategy": Key("string", "rolling", _shared("deploy_strategy", "ECS native.")),
    "vpc_cidr": Key("string", "10.0.0.0/16", "Private IPv4 VPC range, /16 to /20."),
    "az_count": Key("string", "auto", "Availability zones, 2 or 3, or auto (the size's)."),
    "nat": Key("string", "auto", "NAT strategy: none | single | per_az | auto (the size's)."),
    "multi_az": Key("string", "auto",
                    "RDS Multi-AZ + cache replica with failover: true | false | auto (size)."),
    "domain": Key("string", "", _shared("domain", "Served over HTTPS; empty is plain HTTP, "
                                        "allowed outside prod only.")),
    "certificate_arn": Key("string", "",
                           "ACM certificate in the stack's Region for domain and origin.domain."),
    "hosted_zone_id": Key("string", "",
                          "Route 53 zone for DNS-validated certificates and alias records."),
    "cdn": Key("boolean", True, "Put CloudFront in front of the ALB."),
    "cdn_certificate_arn": Key("string", "",
                               "ACM certificate in us-east-1 for the CDN (else DNS-validated)."),
    "waf": Key("boolean", True, "Attach a WAFv2 web ACL (to the CDN, else the ALB)."),
    "origin_secret_version": Key("integer", 1,
                                 "Version of the header secret CloudFront sends the ALB, >= 1; "
                                 "raise it by one to rotate (the ALB accepts the previous one "
                                 "too until origin_secret_retired reaches it)."),
    "origin_secret_retired": Key("integer", 0,
                                 "Highest origin secret version the ALB no longer accepts, "
                                 "0 to origin_secret_version - 1; set it to the previous "
                                 "version once CloudFront sends the new one."),
    "edge_rate_limit_per_minute": Key("integer", 600,
                                      _shared("edge_rate_limit_per_minute", "WAF: >= 100.")),
    "web_concurrency": Key("integer", 1, "App WEB_CONCURRENCY: uvicorn workers per task, 1-64."),
    "db_pool_max": Key("integer", 10,
                       "App DB_POOL_MAX: PostgreSQL connections per worker, 1-200."),
    "rate_limit_per_minute": Key("integer", profile.RATE_LIMIT_DEFAULT,
                                 _shared("rate_limit_per_minute")),
    "storage_gb": Key("string", "auto",
                      "Initial database storage, 20-65536 GiB, or auto (the size's)."),
    "max_storage_gb": Key("string", "auto",
                          "Storage autoscaling ceiling, >= 1.1 x storage_gb, or auto (5x)."),
    "kms_keys": Key("boolean", False,
                    "Customer-managed KMS keys for the WAF, API and PostgreSQL logs, the two "
                    "secrets, the cache and Performance Insights (required in prod; turning "
                    "it on replaces the cache: docs/cloud.md)."),
    "rds_proxy": Key("boolean", False,
                     "RDS Proxy between the tasks and the database (TLS, IAM auth only)."),
    "backup_retention_days": Key("integer", 7, _shared("backup_retention_days",
                                                       "RDS: 1-35 (prod >= 7).")),
    "backup_daily_retention_days": Key("integer", 30,
                                       "AWS Backup daily tier: days each daily copy is kept, "
                                       ">= 1 (prod >= 30)."),
    "backup_weekly_retention_days": Key("integer", 90,
                                        "AWS Backup weekly tier: days kept, >= the daily tier's "
                                        "(prod >= 90)."),
    "backup_monthly_retention_days": Key("integer", 365,
                                         "AWS Backup monthly tier: days kept, >= the weekly "
                                         "tier's (prod >= 365)."),
    "backup_vault_lock": Key("string", "governance",
                             "Backup vault lock: governance | compliance | none (prod: not "
                             "none)."),
    "backup_copy_region": Key("string", "",
                              "Second Region receiving a copy of every backup. Empty: none."),
    "backup_restore_drill": Key("boolean", True,
                                "Daily AWS Backup restore test of the newest backup, alarmed "
                                "(required in prod)."),
    "restore_to_time": Key("string", "",
                           "Restore the database to this UTC time (YYYY-MM-DDTHH:MM:SSZ) as a "
                           "new instance the service switches to. Empty: none."),
    "restore_source": Key("string", "keep",
                          "After a restore: keep | release the original instance (release: "
                          "the stack forgets it, AWS keeps it)."),
    "deletion_protection": Key("boolean", True,
                               "Deletion protection on the database and ALB (required in prod)."),
    "ecs_exec": Key("boolean", False,
                    "ECS Exec into running tasks (`aws ecs execute-command`): adds the task "
                    "role's SSM channel permissions. Refused in prod unless ecs_exec_in_prod."),
    "ecs_exec_in_prod": Key("boolean", False,
                            "Allow ecs_exec in a prod stack (tags the service's resources "
                            "prodstack:ecs-exec=allowed-in-prod, which the policy pack accepts)."),
    "teardown": Key("boolean", False,
                    "Lift deletion protection so `pulumi destroy` can finish (prod too); "
                    "the final snapshot stays."),
    "final_snapshot": Key("boolean", True, "Final database snapshot on delete (required in prod)."),
    "flow_logs": Key("boolean", True, "VPC flow logs to CloudWatch (required in prod)."),
    "alb_access_logs": Key("boolean", True, "ALB access logs to S3 (required in prod)."),
    "log_retention_days": Key("integer", 30, "CloudWatch log retention, a CloudWatch value."),
    "security_log_retention_days": Key("integer", 365,
                                       "CloudWatch retention of the security logs (WAF, VPC "
                                       "flow, iam-db-auth-error, CloudFront), a CloudWatch "
                                       "value (prod >= 365)."),
    "metrics_scrape": Key("boolean", True,
                          "Scrape the API's /metrics inside each task into Amazon Managed "
                          "Prometheus, with the VPS profile's API alert rules (needs NAT)."),
    "metrics_retention_days": Key("integer", 30, _shared("metrics_retention_days",
                                                         "(AMP workspace), 1-3650.")),
    "alert_email": Key("string", "", _shared("alert_email", "(subscribed to the alarm topic)")),
    "log_level": Key("string", "INFO", _shared("log_level")),
    "image_platform": Key("string", "linux/amd64",
                          "Image/task platform: linux/amd64 | linux/arm64."),
    "image_tag": Key("string", "",
                     "Immutable image tag. Empty: a hash of the build context after "
                     ".dockerignore, build arguments and platform."),
    "base_image": Key("string", "python:3.11-slim-bookworm", "BASE_IMAGE build argument."),
    "app_context": Key("string", "",
                       "Build context of the API image: a directory with a Dockerfile, "
                       "relative to the repository root. Empty: the bundled app/."),
    "image": Key("string", "",
                 "Deploy this existing ECR image, pinned by digest, instead of building app/: "
                 "<account>.dkr.ecr.<region>.amazonaws.com/<repo>[:<tag>]@sha256:<64 hex>. "
                 "Empty: build."),
    "api_token": Key("string", "",
                     "API bearer token; set with --secret. Empty: generated into Secrets Manager.",
                     secret=True),
}
KEYS.update({old: _renamed(old) for old in profile.RENAMED["cloud"]})


REPO_ROOT = Path(__file__).resolve().parent.parent


def app_context(value: str, root: Path = REPO_ROOT) -> Path:
    """The image's build context: ``value`` (relative paths from ``root``), else app/."""
    if not value:
        return root / "app"
    path = Path(os.path.expanduser(value))
    return (path if path.is_absolute() else root / path).resolve()


class ConfigError(Exception):
    """Every configuration problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class StackConfig:
    """Validated, fully resolved configuration (size defaults applied)."""

    stack: str
    region: str
    environment: str
    size: str
    replicas: int
    min_replicas: int
    max_replicas: int
    cpu_target_percent: int
    requests_per_target: int
    deploy_strategy: str
    vpc_cidr: str
    az_count: int
    nat: str
    multi_az: bool
    domain: str
    certificate_arn: str
    hosted_zone_id: str
    cdn: bool
    cdn_certificate_arn: str
    waf: bool
    origin_secret_version: int
    origin_secret_retired: int
    edge_rate_limit_per_minute: int
    rate_limit_per_minute: int
    web_concurrency: int
    db_pool_max: int
    storage_gb: int
    max_storage_gb: int
    kms_keys: bool
    rds_proxy: bool
    ecs_exec: bool
    ecs_exec_in_prod: bool
    backup_retention_days: int
    backup_daily_retention_days: int
    backup_weekly_retention_days: int
    backup_monthly_retention_days: int
    backup_vault_lock: str
    backup_copy_region: str
    backup_restore_drill: bool
    restore_to_time: str
    restore_source: str
    deletion_protection: bool
    teardown: bool
    final_snapshot: bool
    flow_logs: bool
    alb_access_logs: bool
    log_retention_days: int
    security_log_retention_days: int
    metrics_scrape: bool
    metrics_retention_days: int
    alert_email: str
    log_level: str
    image_platform: str
    image_tag: str
    image: str
    app_context: str
    base_image: str
    api_token: str
    task_cpu: str
    task_memory: str
    db_instance_class: str
    cache_node_type: str
    warnings: tuple[str, ...] = ()
    """Old key names that were used (each still works for one release)."""

    @property
    def is_prod(self) -> bool:
        """Whether the prod-only checks apply."""
        return self.environment == "prod"

    @property
    def protected(self) -> bool:
        """Whether deletion protection is on: configured, and no teardown requested."""
        return self.deletion_protection and not self.teardown

    @property
    def origin_domain(self) -> str:
        """Host name CloudFront uses for the ALB (on the ALB certificate)."""
        return f"origin.{self.domain}" if self.domain and self.cdn else ""


class _Reader:
    """Parses raw string values, collecting problems instead of stopping at the first."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw
        self.problems: list[str] = []
        self.invalid: set[str] = set()

    def bad(self, key: str, value: Any, allowed: str) -> None:
        self.invalid.add(key)
        self.problems.append(f"{NAMESPACE}:{key}: {value!r} is invalid; allowed: {allowed}")

    def valid(self, *keys: str) -> bool:
        """Whether none of ``keys`` has a problem yet (cross-key checks need valid sides)."""
        return not self.invalid.intersection(keys)

    def get(self, key: str) -> Any:
        spec = KEYS[key]
        if key not in self.raw:
            return spec.default
        value = self.raw[key]
        if spec.type == "integer":
            try:
                return int(str(value).strip())
            except ValueError:
                self.bad(key, value, "an integer")
                return spec.default
        if spec.type == "boolean":
            text = str(value).strip().lower()
            if text not in ("true", "false"):
                self.bad(key, value, "true or false")
                return spec.default
            return text == "true"
        return str(value)


def load(raw: Mapping[str, str], *, region: str | None, stack: str) -> StackConfig:
    """Validate raw ``prodstack:`` values (keys without namespace) and resolve defaults.

    Raises :class:`ConfigError` with every problem found.
    """
    # The keys both targets share are checked by one model (prodstack/profile.py), after
    # old names are moved to the shared ones.
    shared = profile.check(raw, "cloud")
    raw = shared.values
    r = _Reader(raw)
    for problem in shared.problems:
        r.bad(problem.key, problem.value, problem.allowed)
        r.invalid.add(shared.renamed.get(problem.key, problem.key))
    for key in sorted(set(raw) - set(KEYS)):
        # Worded as the VPS profile's refusal (pyinfra/tasks/config.py check_known_keys).
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        r.bad(key, raw[key], f"a known key{hint} (" + ", ".join(sorted(KEYS)) + ")")

    if not region:
        r.problems.append("aws:region: not set; allowed: " + ", ".join(REGIONS))
    elif region not in REGIONS:
        r.problems.append(f"aws:region: {region!r} is invalid; allowed: {', '.join(REGIONS)}")

    v = {key: r.get(key) for key in KEYS if not KEYS[key].renamed_to}
    for key, value in shared.profile.model_dump(exclude={"replicas"}).items():
        v[key] = "" if value is None else value
    size = SIZES[v["size"]]

    environment = v["environment"] or stack
    if not ENVIRONMENT_RE.match(environment):
        r.bad("environment", environment, "lowercase letters, digits, hyphens (<= 20)")

    def sized(key: str, fallback: Any) -> Any:
        """The size's value for ``auto``; integer keys given as strings are parsed."""
        value = str(v[key]).strip()
        if value == "auto" or not r.valid(key):
            return fallback
        if isinstance(fallback, int):
            try:
                return int(value)
            except ValueError:
                r.bad(key, v[key], "an integer or auto")
                return fallback
        return value

    # Each key on its own first, then the relations between keys that are valid alone, so
    # one bad value neither hides another nor drags a correct one into the report.
    replicas = sized("replicas", size.replicas)
    min_replicas = sized("min_replicas", min(size.min_replicas, replicas))
    max_replicas = sized("max_replicas", max(size.max_replicas, replicas))
    for key, value in (("replicas", replicas), ("min_replicas", min_replicas),
                       ("max_replicas", max_replicas)):  # fmt: skip
        if r.valid(key) and value < 1:
            r.bad(key, value, "an integer >= 1")
    if r.valid("min_replicas", "max_replicas") and max_replicas < min_replicas:
        r.bad("max_replicas", max_replicas, f">= min_replicas ({min_replicas})")
    if (r.valid("replicas", "min_replicas", "max_replicas")
            and not min_replicas <= replicas <= max_replicas):
        r.bad("replicas", replicas, f"{min_replicas}..{max_replicas} (min..max_replicas)")
    if not 10 <= v["cpu_target_percent"] <= 90:
        r.bad("cpu_target_percent", v["cpu_target_percent"], "10-90")
    if v["requests_per_target"] < 1:
        r.bad("requests_per_target", v["requests_per_target"], "an integer >= 1")

    az_count = sized("az_count", size.az_count)
    if az_count not in (2, 3):
        r.bad("az_count", az_count, "2 or 3")
    try:
        subnet_cidrs(v["vpc_cidr"], 3)
    except ValueError as exc:
        r.bad("vpc_cidr", v["vpc_cidr"], f"a private IPv4 CIDR /16-/20 ({exc})")
    nat = sized("nat", size.nat)
    if nat not in NAT_STRATEGIES:
        r.bad("nat", nat, " | ".join((*NAT_STRATEGIES, "auto")))
    multi_az_raw = str(v["multi_az"]).lower()
    if multi_az_raw not in ("auto", "true", "false"):
        r.bad("multi_az", v["multi_az"], "true | false | auto")
    multi_az = size.multi_az if multi_az_raw == "auto" else multi_az_raw == "true"

    domain = v["domain"]
    if domain and not (v["certificate_arn"] or v["hosted_zone_id"]):
        r.bad("domain", domain, "a certificate source: set certificate_arn or hosted_zone_id")
    if domain and v["cdn"] and not (v["cdn_certificate_arn"] or v["hosted_zone_id"]):
        r.bad("domain", domain,
              "with cdn, a us-east-1 certificate: set cdn_certificate_arn or hosted_zone_id")
    for key, want_region in (("certificate_arn", region), ("cdn_certificate_arn", "us-east-1")):
        arn = v[key]
        match = ACM_ARN_RE.match(arn) if arn else None
        if arn and (match is None or match.group(1) != want_region):
            r.bad(key, arn, f"an ACM certificate ARN in {want_region}")
        if arn and not domain:
            r.bad(key, arn, "only together with domain")
    if r.valid("origin_secret_version") and v["origin_secret_version"] < 1:
        r.bad("origin_secret_version", v["origin_secret_version"], "an integer >= 1")
    elif (r.valid("origin_secret_version", "origin_secret_retired")
          and not 0 <= v["origin_secret_retired"] < v["origin_secret_version"]):
        r.bad("origin_secret_retired", v["origin_secret_retired"],
              f"0 to {v['origin_secret_version'] - 1} (below origin_secret_version)")
    if v["hosted_zone_id"] and not ZONE_ID_RE.match(v["hosted_zone_id"]):
        r.bad("hosted_zone_id", v["hosted_zone_id"], "a Route 53 zone ID like Z0123456789ABC")


    storage_gb = sized("storage_gb", size.storage_gb)
    if r.valid("storage_gb") and not 20 <= storage_gb <= 65_536:
        r.bad("storage_gb", storage_gb, "20-65536")
    max_storage_auto = str(v["max_storage_gb"]).strip() == "auto"
    max_storage_gb = sized("max_storage_gb", min(storage_gb * 5, 65_536))
    if not max_storage_auto and r.valid("max_storage_gb") and not 20 <= max_storage_gb <= 65_536:
        r.bad("max_storage_gb", max_storage_gb, "20-65536")
    # AWS refuses a ceiling less than 10 % above the allocation (RDS user guide
    # USER_PIOPS.Autoscaling); checked only against a valid storage_gb.
    if r.valid("storage_gb", "max_storage_gb") and max_storage_gb < storage_gb * 1.1:
        r.bad("max_storage_gb", max_storage_gb, f">= 1.1 x storage_gb ({storage_gb}), <= 65536")
    tiers = ("backup_daily_retention_days", "backup_weekly_retention_days",
             "backup_monthly_retention_days")
    if r.valid(tiers[0]) and v[tiers[0]] < 1:
        r.bad(tiers[0], v[tiers[0]], "an integer >= 1")
    for shorter, longer in zip(tiers, tiers[1:], strict=False):
        if r.valid(shorter, longer) and v[longer] < v[shorter]:
            r.bad(longer, v[longer], f">= {shorter} ({v[shorter]})")
    if v["backup_vault_lock"] not in VAULT_LOCK_MODES:
        r.bad("backup_vault_lock", v["backup_vault_lock"], " | ".join(VAULT_LOCK_MODES))
    copy_region = v["backup_copy_region"]
    if copy_region and (copy_region not in REGIONS or copy_region == region):
        r.bad("backup_copy_region", copy_region,
              f"another Region than {region}: " + ", ".join(REGIONS))
    if v["restore_to_time"] and not RESTORE_TIME_RE.fullmatch(v["restore_to_time"]):
        r.bad("restore_to_time", v["restore_to_time"],
              "a UTC time YYYY-MM-DDTHH:MM:SSZ within backup_retention_days, or empty")
    if v["restore_source"] not in RESTORE_SOURCES:
        r.bad("restore_source", v["restore_source"], " | ".join(RESTORE_SOURCES))
    elif v["restore_source"] == "release" and not v["restore_to_time"]:
        r.bad("restore_source", "release", "keep, unless restore_to_time is set")
    for key in ("log_retention_days", "security_log_retention_days"):
        if v[key] not in LOG_RETENTION_DAYS:
            r.bad(key, v[key], ", ".join(map(str, LOG_RETENTION_DAYS)))
    if v["metrics_scrape"] and r.valid("nat") and nat == "none":
        # The collector image comes from ECR Public, which has no VPC endpoint, and its
        # writes go to the AMP endpoint: both need a way out of the private subnets.
        r.bad("metrics_scrape", True,
              "false with nat: none (the collector image is on public.ecr.aws and has no "
              "VPC endpoint); or choose nat: single | per_az")
    if v["image_platform"] not in PLATFORMS:
        r.bad("image_platform", v["image_platform"], " | ".join(PLATFORMS))
    if not v["base_image"] or any(c.isspace() for c in v["base_image"]):
        r.bad("base_image", v["base_image"], "an image reference such as python:3.11-slim-bookworm")
    if v["image_tag"] and not TAG_RE.match(v["image_tag"]):
        r.bad("image_tag", v["image_tag"], "1-128 of [A-Za-z0-9_.-], not starting with . or -")
    if v["app_context"] and not (app_context(v["app_context"]) / "Dockerfile").is_file():
        r.bad("app_context", v["app_context"],
              "a directory with a Dockerfile (relative paths are from the repository root)")
    if v["image"]:
        try:
            parse_image_ref(v["image"])
        except ValueError as error:
            r.bad("image", v["image"], str(error))
        if v["image_tag"]:
            # The tag names a build; a pinned image is not built.
            r.bad("image_tag", v["image_tag"], "empty when image is set")
    if v["api_token"] and len(v["api_token"]) < 32:
        r.bad("api_token", "<secret>", "at least 32 characters")

    for key in ("web_concurrency", "db_pool_max"):
        low, high = APP_INT_SETTINGS[key.upper()][1:]
        if r.valid(key) and not low <= v[key] <= high:
            r.bad(key, v[key], f"{low}-{high} (what the app accepts)")
    if (r.valid("web_concurrency", "db_pool_max", "max_replicas", "size", "rds_proxy")
            and v["size"] in SIZES and max_replicas >= 1):
        found = connection_budget(
            size.db_instance_class, max_replicas=max_replicas,
            web_concurrency=v["web_concurrency"], db_pool_max=v["db_pool_max"],
            proxy_percent=PROXY_MAX_CONNECTIONS_PERCENT if v["rds_proxy"] else None)
        if found["peak"] > found["available"]:
            r.bad("rds_proxy" if v["rds_proxy"] else "db_pool_max",
                  v["rds_proxy"] if v["rds_proxy"] else v["db_pool_max"], found["fix"])

    if v["ecs_exec_in_prod"] and not v["ecs_exec"]:
        r.bad("ecs_exec_in_prod", True, "only with ecs_exec: true (it allows ECS Exec in prod)")
    if environment == "prod":
        # Prod profile: the dev-only opt-outs are refused.
        if not domain:
            r.bad("domain", domain, "a domain in prod (plain HTTP is dev-only)")
        for key in ("deletion_protection", "final_snapshot", "flow_logs", "alb_access_logs",
                    "kms_keys"):
            if not v[key]:
                r.bad(key, v[key], "true in prod" + (
                    " (to tear the stack down, set teardown: true instead)"
                    if key == "deletion_protection" else ""))
        if r.valid("backup_retention_days") and v["backup_retention_days"] < 7:
            r.bad("backup_retention_days", v["backup_retention_days"], ">= 7 in prod")
        # An intrusion is often found months later: its traces must still be there.
        if (r.valid("security_log_retention_days")
                and v["security_log_retention_days"] < PROD_SECURITY_LOG_DAYS):
            r.bad("security_log_retention_days", v["security_log_retention_days"],
                  f">= {PROD_SECURITY_LOG_DAYS} in prod")
        # The backup targets (docs/targets.md): daily 30 days, weekly 3 months, monthly 1 year.
        for key, floor in zip(tiers, PROD_BACKUP_TIER_DAYS, strict=True):
            if r.valid(key) and v[key] < floor:
                r.bad(key, v[key], f">= {floor} in prod (docs/targets.md)")
        if v["backup_vault_lock"] == "none":
            r.bad("backup_vault_lock", "none", "governance or compliance in prod")
        if not v["backup_restore_drill"]:
            r.bad("backup_restore_drill", False, "true in prod")
        if not multi_az:
            r.bad("multi_az", v["multi_az"], "true in prod")
        if min_replicas < 2:
            r.bad("min_replicas", min_replicas, ">= 2 in prod")

    if r.problems:
        raise ConfigError(r.problems)
    return StackConfig(
        stack=stack, region=region or "", environment=environment, size=v["size"],
        replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas,
        cpu_target_percent=v["cpu_target_percent"],
        requests_per_target=v["requests_per_target"],
        deploy_strategy=v["deploy_strategy"], vpc_cidr=v["vpc_cidr"],
        az_count=az_count, nat=nat, multi_az=multi_az, domain=domain,
        certificate_arn=v["certificate_arn"], hosted_zone_id=v["hosted_zone_id"],
        cdn=v["cdn"], cdn_certificate_arn=v["cdn_certificate_arn"], waf=v["waf"],
        origin_secret_version=v["origin_secret_version"],
        origin_secret_retired=v["origin_secret_retired"],
        edge_rate_limit_per_minute=v["edge_rate_limit_per_minute"],
        rate_limit_per_minute=v["rate_limit_per_minute"],
        web_concurrency=v["web_concurrency"], db_pool_max=v["db_pool_max"],
        storage_gb=storage_gb, kms_keys=v["kms_keys"], rds_proxy=v["rds_proxy"],
        ecs_exec=v["ecs_exec"], ecs_exec_in_prod=v["ecs_exec_in_prod"],
        max_storage_gb=max_storage_gb, backup_retention_days=v["backup_retention_days"],
        backup_daily_retention_days=v["backup_daily_retention_days"],
        backup_weekly_retention_days=v["backup_weekly_retention_days"],
        backup_monthly_retention_days=v["backup_monthly_retention_days"],
        backup_vault_lock=v["backup_vault_lock"], backup_copy_region=copy_region,
        backup_restore_drill=v["backup_restore_drill"],
        restore_to_time=v["restore_to_time"], restore_source=v["restore_source"],
        deletion_protection=v["deletion_protection"], teardown=v["teardown"],
        final_snapshot=v["final_snapshot"],
        flow_logs=v["flow_logs"], alb_access_logs=v["alb_access_logs"],
        log_retention_days=v["log_retention_days"],
        security_log_retention_days=v["security_log_retention_days"],
        metrics_scrape=v["metrics_scrape"],
        metrics_retention_days=v["metrics_retention_days"],
        alert_email=v["alert_email"],
        log_level=v["log_level"], image_platform=v["image_platform"],
        image_tag=v["image_tag"], image=v["image"], app_context=v["app_context"],
        base_image=v["base_image"],
        api_token=v["api_token"],
        task_cpu=size.task_cpu, task_memory=size.task_memory,
        db_instance_class=size.db_instance_class, cache_node_type=size.cache_node_type,
        warnings=tuple(shared.warnings),
    )


# A deployment runs the old and the new tasks side by side: rolling at up to 200 %
# (deployment_maximum_percent), blue/green with a full green set beside blue.
DEPLOY_SURGE = 2
# The one-off `<family>-migrate` task holds one connection (app/migrate.py). A service
# task's own migrate container exits before its api container opens the pool.
MIGRATE_CONNECTIONS = 1


def connection_budget(instance_class: str, *, max_replicas: int, web_concurrency: int,
                      db_pool_max: int, proxy_percent: int | None = None) -> dict[str, Any]:
    """The most PostgreSQL connections the stack can open, against what the class allows
    (the formula of prodstack/budget.py).

    ``available`` = ``max_connections`` of the class minus the slots reserved for
    superusers. Without a proxy, ``peak`` = ``db_pool_max`` x ``web_concurrency`` x
    ``max_replicas`` x 2 (a deployment at the autoscaling ceiling) + the migrate task.
    With RDS Proxy (``proxy_percent``, its ``max_connections_percent``) the tasks'
    connections (``clients``) end at the proxy, which opens at most that share of
    ``max_connections`` to the instance, so ``peak`` = the proxy's share + the migrate
    task, which logs in directly.
    """
    limit = max_connections(instance_class)
    available = limit - RESERVED_CONNECTIONS
    per_task = db_pool_max * web_concurrency
    clients = per_task * max_replicas * DEPLOY_SURGE
    if proxy_percent is not None:
        proxy_share = limit * proxy_percent // 100
        peak = proxy_share + MIGRATE_CONNECTIONS
        fix = (
            f"a connection budget within {instance_class}'s {available} connections "
            f"(max_connections {limit} - {RESERVED_CONNECTIONS} reserved); behind RDS Proxy "
            f"the {clients} task connections end at the proxy, which may open "
            f"{proxy_share} = {proxy_percent} % max_connections_percent of {limit}, + "
            f"{MIGRATE_CONNECTIONS} migrate task = {peak}: lower the proxy's "
            "max_connections_percent (components/db_proxy.py) or choose a larger size"
        )
        return {"max_connections": limit, "available": available, "peak": peak,
                "clients": clients, "proxy_share": proxy_share, "fix": fix}
    peak = budget.peak(alive_replicas=max_replicas * DEPLOY_SURGE, per_replica=per_task,
                       direct=MIGRATE_CONNECTIONS)  # fmt: skip
    fix = (
        f"a connection budget within {instance_class}'s {available} connections "
        f"(max_connections {limit} - {RESERVED_CONNECTIONS} reserved); the stack can open "
        f"{peak} = {db_pool_max} db_pool_max x {web_concurrency} web_concurrency x "
        f"{max_replicas} max_replicas x {DEPLOY_SURGE} (old and new tasks during a "
        f"deployment) + {MIGRATE_CONNECTIONS} migrate task: lower db_pool_max, "
        "web_concurrency or max_replicas, choose a larger size, or set rds_proxy: true"
    )
    return {"max_connections": limit, "available": available, "peak": peak,
            "clients": clients, "proxy_share": None, "fix": fix}


def from_pulumi() -> StackConfig:
    """Read this stack's config (as the Pulumi engine passes it) and :func:`load` it."""
    import pulumi
    from pulumi.runtime.config import CONFIG, get_config_env

    everything = {**get_config_env(), **CONFIG.get()}
    prefix = f"{NAMESPACE}:"
    raw = {k[len(prefix):]: v for k, v in everything.items() if k.startswith(prefix)}
    cfg = load(raw, region=everything.get("aws:region"), stack=pulumi.get_stack())
    for warning in cfg.warnings:
        pulumi.log.warn(f"prodstack: {warning}")
    return cfg
