"""ECS and what it runs: hardened tasks with no secrets in their environment, sidecars,
safe deploys (rolling and blue/green), request scaling, ECR repositories, recoverable
secrets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ReportViolation, StackValidationArgs

from components._common import (
    ECS_EXEC_TAG,
    SECRET_NAME_RE,
    TEARDOWN_TAG,
)
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
    tags_of,
    task_containers,
)
from policies.alarms import ELB, LESS, metrics_read

SECRET_VALUE_RES = (
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # credentials inside a URL
    re.compile(r"\bA(KI|SI)A[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)


# ---- no secrets in task environment ----------------------------------------------------

@resource_policy(
    "no-secrets-in-task-environment",
    "ECS task definitions carry no secret-looking names or values in `environment`.",
    types="aws:ecs/taskDefinition:TaskDefinition",
)
def no_secrets_in_environment(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    raw = props.get("containerDefinitions")
    try:
        containers = json.loads(raw) if isinstance(raw, str) else as_list(raw)
    except ValueError:
        return  # unknown until apply; checked again at update time
    for container in map(as_map, containers):
        for item in map(as_map, as_list(container.get("environment"))):
            name, value = str(item.get("name", "")), str(item.get("value", ""))
            if SECRET_NAME_RE.search(name):
                yield (f"Container {container.get('name')!r}: {name} looks secret; "
                       "inject it through `secrets` (Secrets Manager).")
            elif any(r.search(value) for r in SECRET_VALUE_RES):
                yield (f"Container {container.get('name')!r}: the value of {name} looks "
                       "like a credential; inject it through `secrets`.")


# ---- ECS: hardened tasks, safe deploys, Container Insights ------------------------------

@resource_policy(
    "ecs-task-hardened",
    "Task definitions: awsvpc; containers read-only, non-root, unprivileged, ALL "
    "capabilities dropped, awslogs, image by digest; the serving container is "
    "health-checked and starts only after the migration succeeded.",
    types="aws:ecs/taskDefinition:TaskDefinition",
)
def ecs_task_hardened(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("networkMode") != "awsvpc":
        yield "Tasks use awsvpc networking (their own security group; FSBP ECS.17)."
    for c in task_containers(props) or []:
        name = c.get("name")
        if c.get("readonlyRootFilesystem") is not True:
            yield f"Container {name!r} must have a read-only root filesystem (FSBP ECS.5)."
        user = str(c.get("user") or "").split(":")[0]
        if not user.isdigit() or user == "0":
            yield f"Container {name!r} must run as a numeric non-root user, not {user!r}."
        if c.get("privileged") is True:
            yield f"Container {name!r} must not be privileged (FSBP ECS.4)."
        capabilities = as_map(as_map(c.get("linuxParameters")).get("capabilities"))
        if "ALL" not in strings(capabilities.get("drop")) or as_list(capabilities.get("add")):
            yield f"Container {name!r} must drop ALL capabilities and add none."
        if as_map(c.get("logConfiguration")).get("logDriver") != "awslogs":
            yield f"Container {name!r} must log to CloudWatch (awslogs; FSBP ECS.9)."
        image = lookup(c, "image", "")
        if not is_unknown(image) and "@sha256:" not in str(image):
            yield f"Container {name!r} must run an image pinned by digest."
        if c.get("essential") is True and c.get("portMappings") and not c.get("healthCheck"):
            yield f"Serving container {name!r} needs a health check."
    containers = task_containers(props) or []
    # Gates are the one-shot steps of the serving container's own image (migrate); a
    # non-essential container of another image is a sidecar (ecs-sidecars-non-essential).
    serving_images = {c.get("image") for c in containers
                      if c.get("essential") is True and c.get("portMappings")}
    gates = {c.get("name") for c in containers
             if c.get("essential") is False and c.get("image") in serving_images}
    for c in containers:
        if c.get("essential") is True and c.get("portMappings") and gates:
            waits = {d.get("containerName") for d in map(as_map, as_list(c.get("dependsOn")))
                     if d.get("condition") == "SUCCESS"}  # fmt: skip
            if gates - waits:
                yield (f"Serving container {c.get('name')!r} must start only after "
                       f"{sorted(gates - waits)} succeed (dependsOn SUCCESS).")


@resource_policy(
    "ecs-sidecars-non-essential",
    "A container running another image than the serving container's (the metrics "
    "collector) is non-essential, publishes no port, and the serving container does not "
    "wait for it.",
    types="aws:ecs/taskDefinition:TaskDefinition",
)
def ecs_sidecars_non_essential(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    containers = task_containers(props) or []
    serving = [c for c in containers if c.get("essential") is True and c.get("portMappings")]
    images = {c.get("image") for c in serving}
    for c in containers:
        if not serving or c.get("image") in images:
            continue
        name = c.get("name")
        if c.get("essential") is not False:
            yield (f"Sidecar {name!r} must be essential: false, so its crash never stops "
                   "the serving container's task.")
        if c.get("portMappings"):
            yield f"Sidecar {name!r} must publish no port (it reads the API on localhost)."
        for s in serving:
            waits = {d.get("containerName") for d in map(as_map, as_list(s.get("dependsOn")))}
            if name in waits:
                yield (f"Serving container {s.get('name')!r} must not wait for sidecar "
                       f"{name!r}.")


@resource_policy(
    "ecs-safe-deploys",
    "ECS services roll back failed deploys (circuit breaker, or alarms for blue/green), "
    "keep capacity while rolling, no ECS Exec in prod unless allowed by name; clusters keep "
    "Container Insights.",
    types=("aws:ecs/service:Service", "aws:ecs/cluster:Cluster"),
)
def ecs_service_safe(resource_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if resource_type == "aws:ecs/cluster:Cluster":
        settings = {s.get("name"): s.get("value")
                    for s in map(as_map, as_list(props.get("settings")))}
        if settings.get("containerInsights") not in ("enabled", "enhanced"):
            yield "ECS clusters must keep Container Insights on (FSBP ECS.12)."
        return
    if (props.get("enableExecuteCommand") is True and is_prod(props)
            and tags_of(props).get(ECS_EXEC_TAG) != "allowed-in-prod"):
        yield ("ECS Exec must stay off in prod (a shell into production tasks), unless "
               "allowed by name (ecs_exec_in_prod: the prodstack:ecs-exec tag).")
    strategy = as_map(props.get("deploymentConfiguration")).get("strategy", "ROLLING")
    if strategy == "BLUE_GREEN":
        alarms = as_map(props.get("alarms"))
        if not (alarms.get("enable") is True and alarms.get("rollback") is True
                and as_list(alarms.get("alarmNames"))):
            yield "Blue/green deploys must roll back on their deployment alarms."
    else:
        breaker = as_map(props.get("deploymentCircuitBreaker"))
        if not (breaker.get("enable") is True and breaker.get("rollback") is True):
            yield "Rolling deploys must roll back on the circuit breaker (enable + rollback)."
        if (props.get("deploymentMinimumHealthyPercent") or 0) < 100:
            yield "Rolling deploys must keep every serving task (minimum healthy 100%)."


@stack_policy(
    "blue-green-rolls-back",
    "A BLUE_GREEN service rolls back on existing alarms for healthy targets and "
                "the 5xx rate, bakes before retiring blue, and has an alternate target group "
                "with production and test listener rules.",
)
def blue_green_guarded(args: StackValidationArgs, report: ReportViolation) -> None:
    alarms = {a.props.get("name"): a for a in of_type(args, "cloudwatch/metricAlarm:MetricAlarm")}
    for service in of_type(args, "ecs/service:Service"):
        if as_map(service.props.get("deploymentConfiguration")).get("strategy") != "BLUE_GREEN":
            continue
        named = [alarms.get(n) for n in strings(as_map(service.props.get("alarms")).get(
            "alarmNames"))]
        if None in named:
            report("Blue/green rollback names an alarm the stack does not create.", service.urn)
        watched = set().union(*(metrics_read(a.props) for a in named if a is not None))
        for metric, what in (((ELB, "HealthyHostCount"), "healthy targets"),
                             ((ELB, "HTTPCode_Target_5XX_Count"), "the 5xx error rate")):
            if metric not in watched:
                report(f"Blue/green must roll back on {what}.", service.urn)
        bake = as_map(service.props.get("deploymentConfiguration")).get("bakeTimeInMinutes")
        if not str(bake or "0").isdigit() or int(str(bake or "0")) < 1:
            report("Blue/green needs a bake time before the old set goes away.", service.urn)
        for lb in map(as_map, as_list(service.props.get("loadBalancers"))):
            advanced = as_map(lb.get("advancedConfiguration"))
            alternate, live = (lookup(advanced, "alternateTargetGroupArn"),
                               lookup(lb, "targetGroupArn"))
            if not (alternate and lookup(advanced, "productionListenerRule")
                    and lookup(advanced, "testListenerRule")):
                report("Blue/green needs an alternate target group and production and test "
                       "listener rules.", service.urn)
            elif alternate == live and not is_unknown(live):  # two unknowns: judged at up
                report("Blue/green's alternate target group must differ from the live one.",
                       service.urn)


TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
REQUESTS_PER_TARGET = (ELB, "RequestCountPerTarget")
_QUERY_ID = re.compile(r"\b[a-z][A-Za-z0-9_]*\b")


def _target_group_dimensions(dimensions: Any, query: str) -> set[str]:
    """The TargetGroup dimension values of a metric. One known only after apply counts as
    a group of its own (two unknown values cannot be told apart before apply)."""
    found = set()
    for i, dimension in enumerate(map(as_map, as_list(dimensions))):
        if dimension.get("name") == "TargetGroup":
            value = lookup(dimension, "value")
            found.add(f"{query}.{i}: unknown" if is_unknown(value) else str(value))
    return found


def _request_target_groups(config: Mapping[str, Any]) -> set[str] | None:
    """The TargetGroup dimensions whose RequestCountPerTarget feeds a target tracking
    configuration's metric (through its metric math), or None when it does not scale on
    requests. The predefined ALBRequestCountPerTarget reads one group, its resource label."""
    predefined = as_map(config.get("predefinedMetricSpecification"))
    if predefined.get("predefinedMetricType") == "ALBRequestCountPerTarget":
        return {str(predefined.get("resourceLabel"))}
    custom = as_map(config.get("customizedMetricSpecification"))
    if not custom:
        return None
    if (str(custom.get("namespace")), str(custom.get("metricName"))) == REQUESTS_PER_TARGET:
        return _target_group_dimensions(custom.get("dimensions"), "metric")
    queries = {str(q.get("id")): q for q in map(as_map, as_list(custom.get("metrics")))}
    returned = [i for i, q in queries.items() if q.get("returnData") is not False]
    seen: set[str] = set()
    groups: set[str] = set()
    reads = False
    while returned:
        qid = returned.pop()
        if qid in seen or qid not in queries:
            continue
        seen.add(qid)
        query = queries[qid]
        returned += _QUERY_ID.findall(str(query.get("expression") or ""))
        metric = as_map(as_map(query.get("metricStat")).get("metric"))
        if (str(metric.get("namespace")), str(metric.get("metricName"))) == REQUESTS_PER_TARGET:
            reads = True
            groups |= _target_group_dimensions(metric.get("dimensions"), qid)
    return groups if reads else None


def _scaling_policies_of(args: StackValidationArgs, service: Any) -> list[Any]:
    """The scaling policies of ``service``: their resourceId comes from a scaling target
    whose resourceId comes from the service."""
    targets = {t.urn for t in of_type(args, "appautoscaling/target:Target")
               if service.urn in linked(t, "resourceId")}
    return [p for p in of_type(args, "appautoscaling/policy:Policy")
            if linked(p, "resourceId") & targets]


@stack_policy(
    "request-scaling-watches-every-target-group",
    "A blue/green service scales on requests per task read from both of its "
                "target groups, so request-based scale-out keeps working after production "
                "moves to the other group.",
)
def request_scaling_every_group(args: StackValidationArgs, report: ReportViolation) -> None:
    for service in of_type(args, "ecs/service:Service"):
        if as_map(service.props.get("deploymentConfiguration")).get("strategy") != "BLUE_GREEN":
            continue
        groups = {dep.urn for dep in (service.property_dependencies or {}).get(
            "loadBalancers", []) if dep.resource_type == TARGET_GROUP}
        wanted = max(len(groups), 2)  # blue and green
        scaling = [(p, _request_target_groups(as_map(p.props.get(
            "targetTrackingScalingPolicyConfiguration"))))
            for p in _scaling_policies_of(args, service)]
        scaling = [(p, read) for p, read in scaling if read is not None]
        if not scaling:
            report("A blue/green service must scale on requests per task over both of its "
                   "target groups.", service.urn)
        for policy, read in scaling:
            linked = {dep.urn for dep in (policy.property_dependencies or {}).get(
                "targetTrackingScalingPolicyConfiguration", [])
                if dep.resource_type == TARGET_GROUP}
            if len(read) < wanted or (linked and groups - linked):
                report("Request-count scaling watches one target group, but blue/green "
                       "moves production traffic to the other one on every deployment: "
                       "scale on RequestCountPerTarget of every group the service "
                       "registers in (metric math over both).", policy.urn)


@stack_policy(
    "deployment-alarms-quiet-on-missing-data",
    "The alarms an ECS deployment rolls back on treat missing data as not "
                "breaching (and a below-threshold one fills no gaps), so an outage does not "
                "roll back its fix.",
)
def deployment_alarms_quiet(args: StackValidationArgs, report: ReportViolation) -> None:
    alarms = {a.props.get("name"): a for a in of_type(args, "cloudwatch/metricAlarm:MetricAlarm")}
    for service in of_type(args, "ecs/service:Service"):
        for name in strings(as_map(service.props.get("alarms")).get("alarmNames")):
            alarm = alarms.get(name)
            if alarm is None:
                continue  # blue-green-rolls-back reports an alarm the stack lacks
            treat = alarm.props.get("treatMissingData")
            if treat != "notBreaching":
                report(f"Deployments roll back on {name}, which treats missing data as "
                       f"{treat!r}: during an outage it is already in ALARM and rolls back the "
                       "fix. A deployment alarm treats missing data as notBreaching.",
                       alarm.urn)
            # A below-threshold alarm whose gaps are filled (FILL(m, 0) on a count) sees
            # missing data as a low value: a breach, whatever treatMissingData says.
            fills = [q for q in map(as_map, as_list(alarm.props.get("metricQueries")))
                     if "FILL(" in str(q.get("expression", "")).upper()]
            if fills and alarm.props.get("comparisonOperator") in LESS:
                report(f"Deployment alarm {name} fills gaps (FILL) and alarms below its "
                       "threshold: a filled gap is a low value, so missing data breaches "
                       "whatever treatMissingData says.", alarm.urn)


# ---- ECR and Secrets Manager ---------------------------------------------------------

@resource_policy(
    "ecr-repository-hardened",
    "ECR: immutable tags, scan on push, not force-deletable in prod.",
    types="aws:ecr/repository:Repository",
)
def ecr_hardened(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("imageTagMutability") != "IMMUTABLE":
        yield "ECR tags must be immutable (FSBP ECR.2)."
    if as_map(props.get("imageScanningConfiguration")).get("scanOnPush") is not True:
        yield "ECR must scan images on push (FSBP ECR.1)."
    if (is_prod(props) and props.get("forceDelete") is True
            and tags_of(props).get(TEARDOWN_TAG) != "requested"):
        yield "Prod ECR repositories must not be force-deletable (or the teardown tag)."


@stack_policy(
    "ecr-lifecycle-policy",
    "Every ECR repository expires old images through a lifecycle policy.",
)
def ecr_lifecycle(args: StackValidationArgs, report: ReportViolation) -> None:
    kept = set()
    for r in of_type(args, "ecr/lifecyclePolicy:LifecyclePolicy"):
        kept |= linked(r, "repository")
    for repo in of_type(args, "ecr/repository:Repository"):
        if repo.urn not in kept:
            report("ECR repository has no lifecycle policy (FSBP ECR.3).", repo.urn)


@resource_policy(
    "secrets-recoverable-in-prod",
    "Prod secrets keep a 7-30 day recovery window (no immediate delete).",
    types="aws:secretsmanager/secret:Secret",
)
def secrets_recoverable(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    window = props.get("recoveryWindowInDays")
    if is_prod(props) and window is not None and window < 7:
        yield f"Prod secrets must stay recoverable for 7-30 days, not {window}."

