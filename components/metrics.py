"""Metrics: the API's Prometheus metrics, scraped inside each task, kept in AMP.

The VPS profile scrapes the API with Prometheus and alerts on what it scrapes
(pyinfra/tasks/prometheus.py). On the cloud profile the ALB answers 403 for /metrics, so
the scrape runs inside the VPC, in the task itself: an AWS Distro for OpenTelemetry
collector beside the API reads ``localhost:<port>/metrics`` and remote-writes to an
Amazon Managed Service for Prometheus (AMP) workspace. The workspace evaluates the VPS
profile's own alert rules (pyinfra/files/prodstack-alerts.yml, the groups that concern
the API), so the two profiles query with the same PromQL and alert on the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import yaml

from components._common import child_opts, merge_tags

REPO_ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_TEMPLATE = Path(__file__).resolve().parent / "templates" / "metrics-collector.yaml"
# The VPS profile's alert rules: one file, unit-tested with promtool (tests/vps).
ALERT_RULES_FILE = REPO_ROOT / "pyinfra" / "files" / "prodstack-alerts.yml"
# The groups whose rules read only the API's own series (job="api"); the others read node,
# PostgreSQL, Redis and backup exporters, which exist on the VPS profile only (RDS,
# ElastiCache and the tasks alarm through CloudWatch, components/observability.py).
CLOUD_RULE_GROUPS = ("prodstack-api",)
# Rules of those groups that can never fire on AMP, so the workspace does not get them. On
# the VPS profile one Prometheus scrapes every replica and writes `up 0` for one that does
# not answer; here each task's collector scrapes only its own task (localhost), so a task
# that is gone sends nothing at all rather than `up 0`, and no Prometheus server exists
# whose service discovery could report an empty target list
# (prometheus_sd_discovered_targets). ApiNoTaskReporting (absent_over_time, in
# DEPENDENCY_RULES_FILE) and the healthy-hosts and running-tasks CloudWatch alarms
# (components/observability.py) cover tasks that are gone.
VPS_ONLY_RULES = ("ApiReplicaDown", "ApiAllReplicasDown")
# The cloud profile's own data-tier rules, on the API's readiness gauges (db_connected,
# redis_connected): RDS and ElastiCache have no exporter for the VPS data rules to read.
DEPENDENCY_RULES_FILE = COLLECTOR_TEMPLATE.parent / "api-dependency-alerts.yml"

# ADOT collector image, pinned by tag and by the digest of its multi-architecture index
# (linux/amd64 and linux/arm64), so the same reference runs on either task platform.
# Tag: aws-observability/aws-otel-collector VERSION file and docs/releases/v0.49.0.md
# (2026-07-10: collector-contrib v0.156.0). Digest: the v0.49.0 index as pinned in public
# repositories' ECS and Terraform definitions; check it on a machine that reaches the
# registry with `docker buildx imagetools inspect <image>` before bumping either.
COLLECTOR_IMAGE = (
    "public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0"
    "@sha256:d2bdfff2c377c3d71d78bd5d9ce9862fd535b12134a5739d87a07801297cf9fd"
)
# The image's non-root user `aoc` (ARG USER_UID=4317 in its cmd/awscollector/Dockerfile).
COLLECTOR_USER = "4317"
# The image's health probe: GETs the health_check extension (templates/metrics-collector.yaml).
COLLECTOR_HEALTH_COMMAND = ("CMD", "/healthcheck")
# The ADOT collector reads its whole configuration from this variable when it is set
# (aws-otel-collector pkg/config/config_factory.go, envKey; ECS injects it from SSM).
COLLECTOR_CONFIG_ENV = "AOT_CONFIG_CONTENT"
# Components the template may use: all of them are in ADOT v0.49.0's build
# (pkg/defaultcomponents/defaults.go). A component outside this list would make the
# collector exit at start-up with "unknown type".
ADOT_COMPONENTS = {
    "receivers": {"prometheus"},
    "processors": {"memory_limiter", "resourcedetection", "resource", "batch"},
    "exporters": {"prometheusremotewrite"},
    "extensions": {"sigv4auth", "health_check"},
}
# The VPS profile's Prometheus scrapes every 15 s (pyinfra/templates/prometheus.j2.yml,
# global.scrape_interval); the rules' `for:` and `[5m]` windows assume that rate.
SCRAPE_INTERVAL_SECONDS = 15
# SSM Parameter Store standard tier: values up to 4 KB, no charge. Source: AWS Systems
# Manager user guide, parameter-store-advanced-parameters.html (standard: 4 KB).
SSM_STANDARD_MAX_BYTES = 4096
# AMP workspace alias: 1-100 characters. Source: botocore 1.44.5 (installed) amp
# CreateWorkspace `alias` (min 1, max 100).
ALIAS_MAX = 100
# Rule groups namespace name, 1-128 of [0-9A-Za-z][-.0-9A-Z_a-z]*. Source: botocore 1.44.5
# (installed) amp CreateRuleGroupsNamespace `name`.
RULES_NAMESPACE = "prodstack-api"
_PLACEHOLDER = re.compile(r"^\{\{ ([a-z_]+) \}\}$")


def render_collector_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The collector configuration: the template with each ``"{{ name }}"`` scalar replaced.

    Raises ``ValueError`` naming a placeholder without a value, or a value no placeholder
    uses, so the template and the code cannot drift apart silently.
    """
    template = yaml.safe_load(COLLECTOR_TEMPLATE.read_text())
    used: set[str] = set()

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        match = _PLACEHOLDER.match(node) if isinstance(node, str) else None
        if match is None:
            return node
        name = match.group(1)
        if name not in values:
            raise ValueError(f"{COLLECTOR_TEMPLATE.name}: no value for {{{{ {name} }}}}")
        used.add(name)
        return values[name]

    config = fill(template)
    unused = sorted(set(values) - used)
    if unused:
        raise ValueError(f"{COLLECTOR_TEMPLATE.name}: no placeholder for {', '.join(unused)}")
    return config


def collector_config_problems(config: Mapping[str, Any]) -> list[str]:
    """Structural checks on a collector configuration (the ``otelcol validate`` binary is
    not available here): known components only, every pipeline's components defined,
    every defined component used, the remote-write exporter authenticated."""
    problems = []
    service = config.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("service.pipelines: none")
    for kind in ("receivers", "processors", "exporters", "extensions"):
        defined = set(config.get(kind) or {})
        unknown = {name.split("/")[0] for name in defined} - ADOT_COMPONENTS[kind]
        if unknown:
            problems.append(f"{kind}: {sorted(unknown)} not in the ADOT build")
        if kind == "extensions":
            used = set(service.get("extensions") or [])
        else:
            used = {n for p in pipelines.values() for n in (p or {}).get(kind, [])}
        if used - defined:
            problems.append(f"{kind}: {sorted(used - defined)} used but not defined")
        if defined - used:
            problems.append(f"{kind}: {sorted(defined - used)} defined but not used")
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "exporters"):
            if not (pipeline or {}).get(kind):
                problems.append(f"service.pipelines.{name}: no {kind}")
    for name, exporter in (config.get("exporters") or {}).items():
        if name.startswith("prometheusremotewrite"):
            authenticator = ((exporter or {}).get("auth") or {}).get("authenticator")
            if authenticator not in (config.get("extensions") or {}):
                problems.append(f"exporters.{name}: not signed (auth.authenticator)")
            if not str((exporter or {}).get("endpoint", "")).startswith("https://"):
                problems.append(f"exporters.{name}: endpoint is not https")
    return problems


def cloud_alert_rules() -> dict[str, Any]:
    """The VPS alert rules file, reduced to :data:`CLOUD_RULE_GROUPS` less
    :data:`VPS_ONLY_RULES` (the same rules, read from the same file, never copied), then
    the cloud's own rules (:data:`DEPENDENCY_RULES_FILE`)."""
    rules = yaml.safe_load(ALERT_RULES_FILE.read_text())
    groups = [g | {"rules": [r for r in g["rules"] if r.get("alert") not in VPS_ONLY_RULES]}
              for g in rules["groups"] if g["name"] in CLOUD_RULE_GROUPS]
    missing = set(CLOUD_RULE_GROUPS) - {g["name"] for g in groups}
    if missing:
        raise ValueError(f"{ALERT_RULES_FILE.name}: no group {sorted(missing)}")
    present = {r.get("alert") for g in rules["groups"] for r in g["rules"]}
    if set(VPS_ONLY_RULES) - present:
        raise ValueError(
            f"{ALERT_RULES_FILE.name}: no rule {sorted(set(VPS_ONLY_RULES) - present)}")
    groups += yaml.safe_load(DEPENDENCY_RULES_FILE.read_text())["groups"]
    return {"groups": groups}


@dataclass(frozen=True)
class MetricsCollector:
    """What a task needs to run the collector beside the API (``Metrics.collector``)."""

    workspace_arn: pulumi.Input[str]
    """The one workspace the task role may write to (``aps:RemoteWrite``)."""
    config_parameter_arn: pulumi.Input[str]
    """SSM parameter holding the rendered configuration (read at task start)."""
    image: str = COLLECTOR_IMAGE
    """Collector image, pinned by digest."""
    user: str = COLLECTOR_USER
    """Numeric non-root user of the image."""
    cpu: int = 64
    """CPU units reserved for the collector inside the task."""
    memory_mib: int = 128
    """Hard memory limit of the collector container (MiB); it is OOM-killed above it,
    which stops only the collector (non-essential), never the API."""


@dataclass(frozen=True)
class MetricsArgs:
    """Inputs of :class:`Metrics`."""

    alias: str
    """AMP workspace alias, 1-100 characters (botocore amp CreateWorkspace). Required.
    Example: ``"prodstack-prod"``."""

    target_port: int
    """Container port of the API, scraped on localhost inside the task. Required.
    Example: ``8000``."""

    host_label: str
    """Value of the ``host`` label on every series (the VPS profile uses the host name;
    here the stack's name, so ``sum by (host)`` adds up every task). Required.
    Example: ``"prodstack-prod"``."""

    retention_days: int = 30
    """Days the workspace keeps metrics, 1 or more (AMP's own default is 150). The VPS
    profile's ``metrics_retention_days``, same name and meaning in the stack config.
    Default: ``30`` (the VPS profile's). Example: ``150``."""

    scrape_interval_seconds: int = SCRAPE_INTERVAL_SECONDS
    """How often the collector scrapes, 5-60 s; samples ingested (AMP's price) grow
    with 1/interval. Default: ``15`` (the VPS profile's). Example: ``30``."""

    collector_memory_mib: int = 128
    """Hard memory limit of the collector container, 64-512 MiB; the collector's own
    memory limiter refuses data below it. Default: ``128``. Example: ``256``."""

    collector_cpu: int = 64
    """CPU units reserved for the collector (1024 = 1 vCPU), 32-256. Default: ``64``.
    Example: ``128``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every taggable child. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= len(self.alias) <= ALIAS_MAX:
            problems.append(f"alias={self.alias!r}: 1-{ALIAS_MAX} characters")
        if not 1 <= self.target_port <= 65535:
            problems.append(f"target_port={self.target_port}: 1-65535")
        if self.retention_days < 1:
            problems.append(f"retention_days={self.retention_days}: at least 1")
        if not self.host_label:
            problems.append("host_label: required")
        if not 5 <= self.scrape_interval_seconds <= 60:
            problems.append(f"scrape_interval_seconds={self.scrape_interval_seconds}: 5-60")
        if not 64 <= self.collector_memory_mib <= 512:
            problems.append(f"collector_memory_mib={self.collector_memory_mib}: 64-512")
        if not 32 <= self.collector_cpu <= 256:
            problems.append(f"collector_cpu={self.collector_cpu}: 32-256")
        if problems:
            raise ValueError("MetricsArgs: " + "; ".join(problems))

    def collector_values(self, *, region: str, remote_write_url: str) -> dict[str, Any]:
        """The template's values for this stack."""
        return {
            "region": region,
            "scrape_interval": f"{self.scrape_interval_seconds}s",
            # A scrape must end before the next starts.
            "scrape_timeout": f"{max(1, self.scrape_interval_seconds - 5)}s",
            "target": f"localhost:{self.target_port}",
            "host": self.host_label,
            # The limiter acts below the container's hard limit (about 80 %), spikes
            # allowed within a fifth of that.
            "memory_limit_mib": self.collector_memory_mib * 4 // 5,
            "memory_spike_mib": self.collector_memory_mib // 5,
            "remote_write_url": remote_write_url,
        }


class Metrics(pulumi.ComponentResource):
    """An AMP workspace, the VPS profile's API alert rules in it, and the collector config.

    Creates:
        ``{name}-workspace`` (AMP workspace), ``{name}-workspace-config`` (retention),
        ``{name}-rules`` (rule groups namespace
        ``prodstack-api``: the VPS profile's API rules, read from
        pyinfra/files/prodstack-alerts.yml, and the data-tier rules on the API's
        readiness gauges, templates/api-dependency-alerts.yml),
        ``{name}-collector-config`` (SSM parameter, standard tier: the rendered collector
        configuration). The collector container itself belongs to the task definition:
        pass :attr:`collector` to ``ServiceArgs.metrics_collector``.

    How metrics flow:
        API ``/metrics`` -> collector in the same task (``localhost``) -> SigV4-signed
        remote write over HTTPS (NAT) -> workspace -> PromQL (``query_url``, or Amazon
        Managed Grafana) and the workspace's rules. Series carry ``job="api"``,
        ``host=<stack>`` and ``instance=<task id>``.

    Example:
        ``Metrics("app-metrics", MetricsArgs(alias="prodstack-prod", target_port=8000,
        host_label="prodstack-prod"))``

    Cost:
        No fixed charge; AMP bills samples ingested ($0.90 per 10 M, first 2 billion a
        month), storage ($0.03/GB-month) and query samples. Samples a month = series per
        task x tasks x 2,628,000 s / scrape interval: 200 series x 3 tasks at 15 s ->
        105 M -> **~$9.5/month**; 1 task ~$3.2. The collector shares the task's Fargate
        size (no extra charge). Knobs: ``replicas``, ``scrape_interval_seconds``,
        ``metrics_scrape`` (stack config) to turn it off.

    Secure defaults:
        /metrics never leaves the task; the collector holds no credential (task role,
        SigV4) and may write to this workspace only; its config is a plain SSM
        parameter read by the execution role (nothing secret in it).

    Opt-outs:
        ``metrics_scrape: false`` in the stack config creates none of this.
    """

    workspace_arn: pulumi.Output[str]
    """ARN of the AMP workspace (the task role's ``aps:RemoteWrite`` resource)."""
    workspace_id: pulumi.Output[str]
    """ID of the AMP workspace (``ws-...``)."""
    query_url: pulumi.Output[str]
    """Prometheus-compatible endpoint of the workspace (``.../api/v1/query`` beneath)."""
    remote_write_url: pulumi.Output[str]
    """Where the collector writes (``<query_url>api/v1/remote_write``)."""
    config_parameter_arn: pulumi.Output[str]
    """ARN of the SSM parameter holding the collector configuration."""
    collector: MetricsCollector
    """The collector container's inputs, for ``ServiceArgs.metrics_collector``."""

    def __init__(
        self, name: str, args: MetricsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:metrics:Metrics", name, None, opts)
        self._name = name
        self._args = args
        self._region = aws.get_region(opts=pulumi.InvokeOptions(parent=self)).region
        self._create_workspace()
        self._create_rules()
        self._create_collector_config()
        self.collector = MetricsCollector(
            workspace_arn=self.workspace_arn,
            config_parameter_arn=self.config_parameter_arn,
            cpu=args.collector_cpu,
            memory_mib=args.collector_memory_mib,
        )
        self.register_outputs({
            "workspace_arn": self.workspace_arn,
            "workspace_id": self.workspace_id,
            "query_url": self.query_url,
            "remote_write_url": self.remote_write_url,
            "config_parameter_arn": self.config_parameter_arn,
        })

    def _tags(self, role: str) -> dict[str, str]:
        return merge_tags(self._args.tags, role)

    def _create_workspace(self) -> None:
        # Encrypted at rest with an AWS owned key when kms_key_arn is unset (pulumi_aws
        # amp.Workspace `kms_key_arn`; AMP user guide, encryption-at-rest).
        self.workspace = aws.amp.Workspace(
            f"{self._name}-workspace",
            alias=self._args.alias,
            tags=self._tags("metrics-workspace"),
            opts=child_opts(self),
        )
        # Retention in days. Source: pulumi_aws amp.WorkspaceConfiguration
        # `retention_period_in_days`; botocore amp UpdateWorkspaceConfiguration (min 1).
        # Deleting this resource leaves the retention as it was (the provider's delete is
        # a no-op: workspace_configuration.go, WithNoOpDelete).
        aws.amp.WorkspaceConfiguration(
            f"{self._name}-workspace-config",
            workspace_id=self.workspace.id,
            retention_period_in_days=self._args.retention_days,
            opts=child_opts(self),
        )
        self.workspace_arn = self.workspace.arn
        self.workspace_id = self.workspace.id
        self.query_url = self.workspace.prometheus_endpoint
        # The remote write path under the workspace endpoint. Source: AMP user guide,
        # AMP-onboard-ingest-metrics-remote-write.html ("<endpoint>api/v1/remote_write").
        self.remote_write_url = self.workspace.prometheus_endpoint.apply(
            lambda endpoint: endpoint.rstrip("/") + "/api/v1/remote_write"
        )

    def _create_rules(self) -> None:
        # The namespace's data is a Prometheus rules file (AMP user guide, AMP-Ruler.html;
        # pulumi_aws amp.RuleGroupNamespace `data`).
        aws.amp.RuleGroupNamespace(
            f"{self._name}-rules",
            name=RULES_NAMESPACE,
            workspace_id=self.workspace.id,
            data=yaml.safe_dump(cloud_alert_rules(), sort_keys=False),
            tags=self._tags("metrics-rules"),
            opts=child_opts(self),
        )

    def _create_collector_config(self) -> None:
        args, region = self._args, self._region

        def rendered(url: str) -> str:
            config = render_collector_config(
                args.collector_values(region=region, remote_write_url=url))
            problems = collector_config_problems(config)
            if problems:
                raise ValueError(f"{COLLECTOR_TEMPLATE.name}: " + "; ".join(problems))
            text = yaml.safe_dump(config, sort_keys=False)
            if len(text.encode()) > SSM_STANDARD_MAX_BYTES:
                raise ValueError(f"{COLLECTOR_TEMPLATE.name}: rendered config is "
                                 f"{len(text.encode())} bytes, over the SSM standard "
                                 f"tier's {SSM_STANDARD_MAX_BYTES}")
            return text

        parameter = aws.ssm.Parameter(
            f"{self._name}-collector-config",
            name=f"/{args.alias}/metrics-collector/config.yaml",
            description="prodstack metrics collector configuration (AOT_CONFIG_CONTENT)",
            type="String",
            tier="Standard",
            # Not a secret (no credential in it): `insecure_value` keeps it readable in
            # plans and diffs. Source: pulumi_aws ssm.Parameter `insecure_value`.
            insecure_value=self.remote_write_url.apply(rendered),
            tags=self._tags("metrics-collector-config"),
            opts=child_opts(self),
        )
        self.config_parameter_arn = parameter.arn
