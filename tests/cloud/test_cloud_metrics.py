"""The API's /metrics is scraped from inside the VPC: a collector beside the API in its task.

The real program runs under mocks (the session's ``prod``/``dev`` manifests). What the
collector does is read from the configuration the program renders into its SSM parameter,
parsed as YAML: the same text ECS hands the collector as AOT_CONFIG_CONTENT. The ``otelcol``
binary is not available here, so the configuration is checked structurally
(``collector_config_problems``), not by ``otelcol validate``.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prodstack_cloud_harness import Manifest, check_resource

from components.metrics import (
    ADOT_COMPONENTS,
    ALERT_RULES_FILE,
    CLOUD_RULE_GROUPS,
    COLLECTOR_IMAGE,
    DEPENDENCY_RULES_FILE,
    VPS_ONLY_RULES,
    MetricsArgs,
    MetricsCollector,
    collector_config_problems,
    render_collector_config,
)
from components.service import FARGATE_CPU_MEMORY, ServiceArgs
from policies.ecs import ecs_sidecars_non_essential
from prodstack.sizes import CLOUD as SIZES
from stacks.config import ConfigError, load

COLLECTOR = "metrics-collector"


def _collector_config(m: Manifest) -> dict[str, Any]:
    parameter = m.one("ssm/parameter:Parameter", "prodstack-metrics-collector-config")
    return yaml.safe_load(parameter["insecureValue"])


def _source(m: Manifest, output: str) -> str:
    """The value the mocks gave the workspace's output ``output`` (traced by the recorder)."""
    want = f"aws:amp/workspace:Workspace::prodstack-metrics-workspace.{output}"
    (value,) = [v for v, source in m.data["computed"].items() if source == want]
    return value


def test_collector_scrapes_the_api_port_on_localhost(both: list[Manifest]) -> None:
    for m in both:
        containers = m.containers(f"prodstack-{m.data['stack']}")
        (port,) = [p["containerPort"] for p in containers["api"]["portMappings"]]
        scrape = _collector_config(m)["receivers"]["prometheus"]["config"]
        (job,) = scrape["scrape_configs"]
        assert job["job_name"] == "api" and job["metrics_path"] == "/metrics"
        assert job["static_configs"] == [{"targets": [f"localhost:{port}"]}]
        # The VPS profile's rules group by `host` and select job="api".
        assert job["relabel_configs"] == [
            {"target_label": "host", "replacement": f"prodstack-{m.data['stack']}"}]
        assert scrape["global"]["scrape_interval"] == "15s"


def test_collector_is_non_essential_and_never_gates_the_api(both: list[Manifest]) -> None:
    for m in both:
        containers = m.containers(f"prodstack-{m.data['stack']}")
        collector, api = containers[COLLECTOR], containers["api"]
        assert collector["essential"] is False and api["essential"] is True
        assert COLLECTOR not in {d["containerName"] for d in api["dependsOn"]}
        # It starts once the API is healthy: a task still migrating is not "down".
        assert collector["dependsOn"] == [{"containerName": "api", "condition": "HEALTHY"}]
        assert "portMappings" not in collector
        assert collector["image"] == COLLECTOR_IMAGE and "@sha256:" in COLLECTOR_IMAGE
        # The one-off migration task runs no collector.
        assert list(m.containers(f"prodstack-{m.data['stack']}-migrate")) == ["migrate"]


def test_collector_config_comes_from_ssm_through_ecs_secrets(both: list[Manifest]) -> None:
    for m in both:
        collector = m.containers(f"prodstack-{m.data['stack']}")[COLLECTOR]
        parameter = m.named("prodstack-metrics-collector-config")
        arn = next(v for v, s in m.data["computed"].items()
                   if s == f"{parameter['urn']}.arn")
        assert collector["secrets"] == [{"name": "AOT_CONFIG_CONTENT", "valueFrom": arn}]
        assert "environment" not in collector
        # Plain text, standard tier: nothing secret in it, nothing to pay.
        assert parameter["inputs"]["type"] == "String"
        assert parameter["inputs"]["tier"] == "Standard"
        assert "value" not in parameter["inputs"]
        text = parameter["inputs"]["insecureValue"]
        assert len(text.encode()) <= 4096
        for word in ("password", "secret", "token", "access_key", "AKIA"):
            assert word not in text.lower().replace("aws:secret", "")


def test_remote_write_goes_to_this_stacks_workspace_signed(both: list[Manifest]) -> None:
    for m in both:
        config = _collector_config(m)
        exporter = config["exporters"]["prometheusremotewrite"]
        endpoint = _source(m, "prometheusEndpoint")
        assert exporter["endpoint"] == endpoint + "api/v1/remote_write"
        assert exporter["auth"] == {"authenticator": "sigv4auth"}
        assert config["extensions"]["sigv4auth"] == {"region": "eu-west-1", "service": "aps"}
        assert m.outputs["metrics_query_url"] == endpoint


def test_task_role_may_remote_write_to_that_workspace_only(both: list[Manifest]) -> None:
    for m in both:
        grant = m.one("iam/rolePolicy:RolePolicy", "prodstack-api-task-role-metrics")
        assert grant["role"] == "prodstack-api-task-role-id"
        (statement,) = json.loads(grant["policy"])["Statement"]
        assert statement == {"Effect": "Allow", "Action": "aps:RemoteWrite",
                             "Resource": _source(m, "arn")}
        read = m.one("iam/rolePolicy:RolePolicy", "prodstack-api-execution-role-collector-config")
        assert read["role"] == "prodstack-api-execution-role-id"
        (statement,) = json.loads(read["policy"])["Statement"]
        parameter = m.named("prodstack-metrics-collector-config")
        arn = next(v for v, s in m.data["computed"].items() if s == f"{parameter['urn']}.arn")
        assert statement == {"Effect": "Allow", "Action": "ssm:GetParameters", "Resource": arn}
        # The task definition waits for the read grant (ECS reads the parameter at start).
        task = m.named("prodstack-api-task")
        assert "aws:iam/rolePolicy:RolePolicy::prodstack-api-execution-role-collector-config" \
            in m.data["resource_options"][task["urn"]]["dependencies"]


def test_rendered_config_is_wired_and_uses_only_adot_components(both: list[Manifest]) -> None:
    for m in both:
        config = _collector_config(m)
        assert collector_config_problems(config) == []
        pipeline = config["service"]["pipelines"]["metrics"]
        assert pipeline["receivers"] == ["prometheus"]
        assert pipeline["exporters"] == ["prometheusremotewrite"]
        # The memory limiter comes first, and acts below the container's hard limit.
        collector = m.containers(f"prodstack-{m.data['stack']}")[COLLECTOR]
        assert pipeline["processors"][0] == "memory_limiter"
        assert config["processors"]["memory_limiter"]["limit_mib"] < collector["memory"]
        # Each task's series are told apart by the task id.
        assert config["processors"]["resource"]["attributes"] == [
            {"key": "service.instance.id", "from_attribute": "aws.ecs.task.id",
             "action": "upsert"}]


@pytest.mark.parametrize("weaken, problem", [
    (lambda c: c["service"]["pipelines"]["metrics"].update(exporters=[]), "no exporters"),
    (lambda c: c["exporters"]["prometheusremotewrite"].pop("auth"), "not signed"),
    (lambda c: c["exporters"]["prometheusremotewrite"].update(endpoint="http://x"),
     "not https"),
    (lambda c: c["processors"].update(transform={}), "not in the ADOT build"),
    (lambda c: c["service"]["pipelines"]["metrics"]["processors"].remove("batch"),
     "defined but not used"),
    (lambda c: c["service"].update(extensions=["sigv4auth", "pprof"]), "used but not defined"),
], ids=["no-exporter", "unsigned", "plain-http", "unknown-component", "unused", "undefined"])
def test_structural_check_refuses_a_miswired_config(weaken, problem: str) -> None:
    args = MetricsArgs(alias="prodstack-test", target_port=8000, host_label="prodstack-test")
    config = render_collector_config(args.collector_values(
        region="eu-west-1", remote_write_url="https://aps-workspaces.eu-west-1.amazonaws.com/x"))
    assert collector_config_problems(config) == []
    weakened = copy.deepcopy(config)
    weaken(weakened)
    assert any(problem in p for p in collector_config_problems(weakened)), problem


def test_template_and_values_cannot_drift() -> None:
    args = MetricsArgs(alias="prodstack-test", target_port=8000, host_label="prodstack-test")
    values = args.collector_values(region="eu-west-1", remote_write_url="https://x/")
    with pytest.raises(ValueError, match="no value for {{ target }}"):
        render_collector_config({k: v for k, v in values.items() if k != "target"})
    with pytest.raises(ValueError, match="no placeholder for extra"):
        render_collector_config({**values, "extra": 1})
    assert set(ADOT_COMPONENTS) == {"receivers", "processors", "exporters", "extensions"}


def test_workspace_evaluates_the_vps_api_rules_from_the_same_file(both: list[Manifest]) -> None:
    vps = yaml.safe_load(ALERT_RULES_FILE.read_text())
    api_groups = [g | {"rules": [r for r in g["rules"] if r["alert"] not in VPS_ONLY_RULES]}
                  for g in vps["groups"] if g["name"] in CLOUD_RULE_GROUPS]
    assert api_groups, CLOUD_RULE_GROUPS
    for m in both:
        namespace = m.one("amp/ruleGroupNamespace:RuleGroupNamespace")
        assert namespace["workspaceId"] == _source(m, "id")
        dependencies = yaml.safe_load(DEPENDENCY_RULES_FILE.read_text())["groups"]
        assert yaml.safe_load(namespace["data"]) == {"groups": api_groups + dependencies}
    # Every provisioned rule reads only the series the collector sends (job="api"), and
    # every rule of the file that reads job="api" is provisioned, but the two that need a
    # Prometheus server scraping every replica.
    for group in vps["groups"]:
        for rule in group["rules"]:
            reads_api = 'job="api"' in rule["expr"]
            assert reads_api == (group["name"] in CLOUD_RULE_GROUPS), rule["alert"]


def test_workspace_runs_no_alert_that_cannot_fire_and_notices_silent_tasks(
    both: list[Manifest],
) -> None:
    # Each task's collector scrapes only localhost: a task that is gone sends no `up 0`,
    # and no Prometheus server exists whose service discovery could be read. So the
    # workspace runs neither ApiReplicaDown nor ApiAllReplicasDown, and alerts on the
    # API's series going absent instead.
    for m in both:
        data = yaml.safe_load(m.one("amp/ruleGroupNamespace:RuleGroupNamespace")["data"])
        by_name = {r["alert"]: r["expr"] for g in data["groups"] for r in g["rules"]}
        assert not set(VPS_ONLY_RULES) & set(by_name)
        assert not [a for a, e in by_name.items()
                    if "prometheus_sd_discovered_targets" in e
                    or ('up{job="api"}' in e and "absent" not in e)]  # fmt: skip
        assert by_name["ApiNoTaskReporting"] == 'absent_over_time(up{job="api"}[2m])'
        # Nothing inhibits on an alert the workspace does not run.
        definition = m.one("amp/alertManagerDefinition:AlertManagerDefinition")["definition"]
        assert "ApiAllReplicasDown" not in definition


@pytest.mark.parametrize("size", sorted(SIZES))
def test_collector_fits_inside_every_task_size(size: str) -> None:
    s = SIZES[size]
    args = MetricsArgs(alias="a", target_port=8000, host_label="a")
    assert int(s.task_memory) in FARGATE_CPU_MEMORY[s.task_cpu]
    # The API keeps at least three quarters of the task's CPU and memory.
    assert args.collector_cpu * 4 <= int(s.task_cpu)
    assert args.collector_memory_mib * 4 <= int(s.task_memory)


def test_service_refuses_a_collector_that_starves_the_api() -> None:
    big = MetricsCollector(workspace_arn="arn", config_parameter_arn="arn", memory_mib=256)
    with pytest.raises(ValueError, match="metrics_collector: 64 CPU / 256 MiB"):
        ServiceArgs(family="f", image="i@sha256:0", subnet_ids=["s"], security_group_id="g",
                    target_group_arn="t", listener_arn="l", load_balancer_arn_suffix="a",
                    target_group_arn_suffixes=["r"],
                    cpu="256", memory="512", metrics_collector=big)


def test_metrics_scrape_is_on_by_default_and_off_by_name() -> None:
    base = {"size": "small"}
    assert load(base, region="eu-west-1", stack="dev").metrics_scrape is True
    assert load({**base, "metrics_scrape": "false"}, region="eu-west-1",
                stack="dev").metrics_scrape is False
    with pytest.raises(ConfigError) as bad:
        load({**base, "metrics_scrape": "yes"}, region="eu-west-1", stack="dev")
    assert bad.value.problems == [
        "prodstack:metrics_scrape: 'yes' is invalid; allowed: true or false"]
    with pytest.raises(ConfigError) as no_nat:
        load({**base, "nat": "none"}, region="eu-west-1", stack="dev")
    assert any(p.startswith("prodstack:metrics_scrape: True is invalid; allowed: false with "
                            "nat: none") for p in no_nat.value.problems), no_nat.value.problems
    load({**base, "nat": "none", "metrics_scrape": "false"}, region="eu-west-1", stack="dev")


def test_sidecar_rule_compliant_and_violating(prod: Manifest) -> None:
    policy = ecs_sidecars_non_essential
    task = prod.one("taskDefinition:TaskDefinition", "prodstack-api-task")
    type_ = "aws:ecs/taskDefinition:TaskDefinition"
    assert check_resource(policy, type_, task) == []
    containers = json.loads(task["containerDefinitions"])
    for c in containers:
        if c["name"] == COLLECTOR:
            c["essential"] = True
    weakened = {**task, "containerDefinitions": json.dumps(containers)}
    assert check_resource(policy, type_, weakened) == [
        "Sidecar 'metrics-collector' must be essential: false, so its crash never stops "
        "the serving container's task."]


def test_workspace_alerts_reach_the_alarm_topic(both: list[Manifest]) -> None:
    for m in both:
        topic = m.named(f"prodstack-{m.data['stack']}-obs-alarms")
        topic_arn = next(v for v, s in m.data["computed"].items() if s == f"{topic['urn']}.arn")
        definition = m.one("amp/alertManagerDefinition:AlertManagerDefinition")
        assert definition["workspaceId"] == _source(m, "id")
        config = yaml.safe_load(yaml.safe_load(definition["definition"])["alertmanager_config"])
        assert config["route"]["receiver"] == "alarm-topic"
        assert config["route"]["group_by"] == ["alertname", "host"]
        (receiver,) = config["receivers"]
        assert receiver["sns_configs"] == [{"topic_arn": topic_arn,
                                            "sigv4": {"region": "eu-west-1"},
                                            "send_resolved": True}]
        # Only this workspace may publish, and this account's alarms still may.
        policy = json.loads(m.one("sns/topicPolicy:TopicPolicy")["policy"])
        by_sid = {st["Sid"]: st for st in policy["Statement"]}
        assert set(by_sid) == {"CloudWatchAlarms", "PrometheusAlerts", "EventBridgeRules",
                               "RdsEvents"}
        amp = by_sid["PrometheusAlerts"]
        assert amp["Principal"] == {"Service": "aps.amazonaws.com"}
        assert amp["Condition"]["ArnLike"]["aws:SourceArn"] == _source(m, "arn")
        assert amp["Resource"] == topic_arn
        # The topic's key lets AMP encrypt what it publishes.
        key = json.loads(m.one("kms/key:Key", f"prodstack-{m.data['stack']}-obs-key")["policy"])
        (grant,) = [st for st in key["Statement"] if st.get("Sid") == "PrometheusAlerts"]
        assert grant["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]



def test_workspace_keeps_metrics_as_long_as_the_vps_profile(both: list[Manifest]) -> None:
    import ast

    vps = ast.literal_eval(next(
        line.split("=", 1)[1].strip() for line in
        (ALERT_RULES_FILE.parents[1] / "group_data" / "all.py").read_text().splitlines()
        if line.startswith("metrics_retention_days =")))
    for m in both:
        config = m.one("amp/workspaceConfiguration:WorkspaceConfiguration")
        assert config["workspaceId"] == _source(m, "id")
        assert config["retentionPeriodInDays"] == vps == 30
    assert load({"metrics_retention_days": "150"}, region="eu-west-1",
                stack="dev").metrics_retention_days == 150
    with pytest.raises(ConfigError) as bad:
        load({"metrics_retention_days": "0"}, region="eu-west-1", stack="dev")
    assert bad.value.problems == [
        "prodstack:metrics_retention_days: 0 is invalid; allowed: 1-3650"]


DEPENDENCY_RULE_TESTS = Path(__file__).resolve().parent / "rules" / "api-dependency-alerts.test.yml"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool (scripts/setup.sh)")
def test_data_tier_rules_fire_when_no_task_reaches_postgres_or_redis_and_not_on_a_blip() -> None:
    # promtool evaluates the rules on series shaped as the collector ships them: both
    # tasks losing PostgreSQL pages, one task still reaching Redis keeps RedisUnreachable
    # quiet, a 15 s database blip stays under the 30 s `for`; ApiNoTaskReporting fires
    # once no task has sent a series for 2 minutes, and not while one still does.
    check = subprocess.run(["promtool", "check", "rules", str(DEPENDENCY_RULES_FILE)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run(["promtool", "test", "rules", str(DEPENDENCY_RULE_TESTS)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_data_tier_rules_read_the_gauges_the_api_exports() -> None:
    from app import metrics as app_metrics

    exported = {app_metrics.db_connected._name, app_metrics.redis_connected._name}
    (group,) = [g for g in yaml.safe_load(DEPENDENCY_RULES_FILE.read_text())["groups"]
                if g["name"] == "prodstack-api-dependencies"]
    rules = group["rules"]
    read = {name for rule in rules for name in exported if f"{name}{{job=\"api\"}}" in rule["expr"]}
    assert read == exported
