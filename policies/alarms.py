"""Alarms: one for each service-level target (docs/targets.md), data-tier events that reach
the alarm topic, and Prometheus alert rules that can fire."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pulumi_policy import ReportViolation, StackValidationArgs

from components._common import (
    DEPLOYMENT_ALARM_TAG,
    DEPLOYMENT_ALARM_USE,
)
from policies._shared import (
    as_list,
    as_map,
    is_unknown,
    linked,
    live_databases,
    lookup,
    of_type,
    parse_json,
    resource_policy,
    stack_policy,
    strings,
    tags_of,
)

# ---- alarms for the targets (docs/targets.md) -----------------------------------------

# docs/targets.md's service levels: target and ceiling. Each alarm may sit at most at the
# ceiling: p99 < 1000 ms, error rate < 1 %, DB connections < 150, Redis memory
# < 90 %; CPU < 70 % is the scaling signal, and the stack lets cpu_target_percent
# (10-90) move the CPU alarms with it, so 90 is their ceiling; ECS memory < 80 %.
GREATER = ("GreaterThanThreshold", "GreaterThanOrEqualToThreshold")
LESS = ("LessThanThreshold", "LessThanOrEqualToThreshold")


def metrics_read(alarm: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(namespace, metric name) pairs an alarm reads, directly or through metric math."""
    found = set()
    if alarm.get("metricName"):
        found.add((str(alarm.get("namespace")), str(alarm.get("metricName"))))
    for query in map(as_map, as_list(alarm.get("metricQueries"))):
        metric = as_map(query.get("metric"))
        if metric.get("metricName"):
            found.add((str(metric.get("namespace")), str(metric.get("metricName"))))
    return found


ELB, ECS, RDS, CACHE = "AWS/ApplicationELB", "AWS/ECS", "AWS/RDS", "AWS/ElastiCache"
# (target, metrics the alarm must read together, comparison, ceiling, resource it needs)
TARGET_ALARMS = (
    ("5xx error rate (ELB and target 5xx over requests)",
     {(ELB, "HTTPCode_ELB_5XX_Count"), (ELB, "HTTPCode_Target_5XX_Count"),
      (ELB, "RequestCount")}, GREATER, 1.0, "lb/loadBalancer:LoadBalancer"),
    ("p99 response time", {(ELB, "TargetResponseTime")}, GREATER, 1.0,
     "lb/loadBalancer:LoadBalancer"),
    ("unhealthy targets", {(ELB, "UnHealthyHostCount")}, GREATER, 0,
     "lb/targetGroup:TargetGroup"),
    ("ECS CPU", {(ECS, "CPUUtilization")}, GREATER, 90, "ecs/service:Service"),
    ("ECS memory", {(ECS, "MemoryUtilization")}, GREATER, 80, "ecs/service:Service"),
    ("RDS CPU", {(RDS, "CPUUtilization")}, GREATER, 90, "rds/instance:Instance"),
    ("RDS connections", {(RDS, "DatabaseConnections")}, GREATER, 150, "rds/instance:Instance"),
    ("RDS free storage", {(RDS, "FreeStorageSpace")}, LESS, None, "rds/instance:Instance"),
    # No request reaches a service with no healthy target: missing data must breach.
    ("no healthy target", {(ELB, "HealthyHostCount")}, LESS, None,
     "lb/targetGroup:TargetGroup"),
    ("ECS running tasks", {("ECS/ContainerInsights", "RunningTaskCount")}, LESS, None,
     "ecs/service:Service"),
)
# Alarms whose silence means "nothing is running": missing data is a breach.
BREACH_WHEN_MISSING = {"no healthy target", "ECS running tasks"}
# Per cache member: (target, metric, ceiling).
TARGET_CACHE_ALARMS = (
    ("Redis memory", (CACHE, "DatabaseMemoryUsagePercentage"), 90),
    ("Redis evictions", (CACHE, "Evictions"), 0),
)


def alarm_problem(alarm: Any, comparison: tuple[str, ...], ceiling: float | None) -> str:
    props = alarm.props
    if props.get("comparisonOperator") not in comparison:
        return f"compares {props.get('comparisonOperator')!r}, not {' or '.join(comparison)}"
    threshold = props.get("threshold")
    if ceiling is not None and isinstance(threshold, (int, float)) and threshold > ceiling:
        return f"threshold {threshold} is above the target's ceiling {ceiling}"
    if not as_list(props.get("alarmActions")):
        return "notifies nobody (no alarmActions)"
    if props.get("actionsEnabled") is False:
        return "has its actions switched off"
    return ""


def _deployment_only(alarm: Any) -> bool:
    """An alarm only ECS deployments watch (tagged so; it notifies nobody)."""
    return tags_of(alarm.props).get(DEPLOYMENT_ALARM_TAG) == DEPLOYMENT_ALARM_USE


@stack_policy(
    "alarms-for-the-targets",
    "Each service-level target (docs/targets.md) has an alarm (5xx rate, p99, "
                "unhealthy and no "
                "healthy targets, running tasks, CPU, memory, DB connections and storage, "
                "Redis memory and evictions) at or under the target's ceiling, notifying "
                "someone.",
)
def alarms_for_the_targets(args: StackValidationArgs, report: ReportViolation) -> None:
    alarms = [a for a in of_type(args, "cloudwatch/metricAlarm:MetricAlarm")
              if not _deployment_only(a)]
    present = {suffix for *_, suffix in TARGET_ALARMS if of_type(args, suffix)}
    for what, metrics, comparison, ceiling, needs in TARGET_ALARMS:
        if needs not in present:
            continue
        matching = [a for a in alarms if metrics <= metrics_read(a.props)]
        if not matching:
            report(f"No alarm for the target: {what} (docs/targets.md).", None)
        for alarm in matching:
            problem = alarm_problem(alarm, comparison, ceiling)
            if not problem and what in BREACH_WHEN_MISSING and alarm.props.get(
                    "treatMissingData") != "breaching":
                problem = "must treat missing data as breaching (no data: nothing runs)"
            if problem:
                report(f"Alarm for {what} {problem}.", alarm.urn)
    for group in of_type(args, "elasticache/replicationGroup:ReplicationGroup"):
        members = group.props.get("numCacheClusters") or 1
        for what, metric, ceiling in TARGET_CACHE_ALARMS:
            matching = [a for a in alarms if metric in metrics_read(a.props)]
            if len(matching) < members:
                report(f"{what}: {len(matching)} alarm(s) for {members} cache member(s).",
                       group.urn)
            for alarm in matching:
                problem = alarm_problem(alarm, GREATER, ceiling)
                if problem:
                    report(f"Alarm for {what} {problem}.", alarm.urn)


# ---- data-tier events and Prometheus alert rules ----------------------------------------

# RDS event categories that must reach the alarm topic (components.observability cites
# the RDS user guide's list).
REQUIRED_RDS_EVENTS = ("failure", "failover", "low storage", "maintenance")
# The API's readiness gauges the data-tier alert rules read (app/metrics.py).
READINESS_GAUGES = ("db_connected", "redis_connected")


def _rule_targets(args: StackValidationArgs, source: str) -> list[Any]:
    """EventBridge rules matching ``source`` that have a target."""
    targets = of_type(args, "cloudwatch/eventTarget:EventTarget")
    return [rule for rule in of_type(args, "cloudwatch/eventRule:EventRule")
            if source in strings(as_map(parse_json(rule.props.get("eventPattern"))).get("source"))
            and any(rule.urn in linked(t, "rule") and lookup(t.props, "arn") for t in targets)]


@stack_policy(
    "data-tier-events-alarmed",
    "RDS (failure, failover, low storage, maintenance), ElastiCache and failed "
                "AWS Backup jobs notify the alarm topic; the Prometheus workspace alerts "
                "when the API cannot reach PostgreSQL or Redis.",
)
def data_tier_events(args: StackValidationArgs, report: ReportViolation) -> None:
    subscriptions = of_type(args, "rds/eventSubscription:EventSubscription")
    for db in live_databases(args):
        mine = [s for s in subscriptions if db.urn in linked(s, "sourceIds")
                and lookup(s.props, "snsTopic") and s.props.get("enabled") is not False]
        categories = {c for s in mine for c in strings(s.props.get("eventCategories"))}
        lacking = [c for c in REQUIRED_RDS_EVENTS if c not in categories]
        if not mine or lacking:
            report(f"RDS events must reach the alarm topic (an enabled event subscription of "
                   f"the instance with {', '.join(REQUIRED_RDS_EVENTS)}); missing "
                   f"{lacking or 'the subscription'}.", db.urn)
    if of_type(args, "elasticache/replicationGroup:ReplicationGroup") and not _rule_targets(
            args, "aws.elasticache"):
        report("ElastiCache events must reach the alarm topic (an EventBridge rule on "
               "aws.elasticache with a target).", None)
    if of_type(args, "backup/plan:Plan") and not _rule_targets(args, "aws.backup"):
        report("Failed AWS Backup jobs must reach the alarm topic (an EventBridge rule on "
               "aws.backup with a target).", None)
    for namespace in of_type(args, "amp/ruleGroupNamespace:RuleGroupNamespace"):
        data = lookup(namespace.props, "data")
        if not isinstance(data, str) or is_unknown(data):
            continue  # known after apply: judged at update time
        for gauge in READINESS_GAUGES:
            if f'{gauge}{{job="api"}}' not in data:
                report(f"The workspace's rules must alert on the API's {gauge} (PostgreSQL "
                       f"or Redis unreachable from the API).", namespace.urn)


# Series a workspace never receives from per-task collectors: a task that is gone sends no
# sample (so `up{job="api"} == 0` is not written for it), and no Prometheus server runs
# whose service discovery could be read. components/metrics.py VPS_ONLY_RULES says why.
ABSENT_FUNCTIONS = ("absent_over_time(", "absent(")
SERVER_ONLY_SERIES = ("prometheus_sd_discovered_targets",)


def _rule_expressions(data: str) -> list[tuple[str, str]]:
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError:
        return []
    return [(str(as_map(r).get("alert")), str(as_map(r).get("expr", "")))
            for g in as_list(as_map(document).get("groups"))
            for r in as_list(as_map(g).get("rules"))]


@resource_policy(
    "metrics-alerts-can-fire",
    "The Prometheus workspace runs only alert rules that can fire on per-task collectors' "
    "data (no `up == 0` or service-discovery rules), and alerts when the API's series go "
    "absent.",
    types="aws:amp/ruleGroupNamespace:RuleGroupNamespace",
)
def metrics_alerts_can_fire(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    data = props.get("data")
    if not isinstance(data, str):
        return
    rules = _rule_expressions(data)
    for alert, expr in rules:
        if any(series in expr for series in SERVER_ONLY_SERIES):
            yield (f"{alert} reads a Prometheus server's own series, which a workspace fed "
                   "by per-task collectors never receives: it cannot fire.")
        elif 'up{job="api"}' in expr and not any(f in expr for f in ABSENT_FUNCTIONS):
            yield (f"{alert} waits for up{{job=\"api\"}} to report a task down, but a task "
                   "that is gone sends nothing: it cannot fire (use absent_over_time).")
    if not any('job="api"' in expr and any(f in expr for f in ABSENT_FUNCTIONS)
               for _, expr in rules):
        yield ("The workspace needs an alert on the API's series going absent "
               "(absent_over_time over job=\"api\"): tasks gone silent alert nobody.")

