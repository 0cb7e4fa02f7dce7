"""Deploy strategy: prod goes live blue/green (ECS native), dev rolls; both roll back on
the circuit breaker and on the 5xx and healthy-host alarms, which keep firing when every
task is down."""

from __future__ import annotations

import json

import pytest
from prodstack_cloud_harness import Manifest

from components.load_balancer import LoadBalancerArgs
from components.observability import DEPLOYMENT_ALARM_ROLES
from components.service import ServiceArgs

SERVICE = "ecs/service:Service"
RULE = "lb/listenerRule:ListenerRule"
ALARM = "cloudwatch/metricAlarm:MetricAlarm"


def arn_of(manifest: Manifest, name: str) -> str:
    """The mock ARN of resource ``name`` (the mocks end every ARN with the name)."""
    manifest.named(name)
    return f":{name}"


def alarm(manifest: Manifest, role: str) -> dict:
    return manifest.one(ALARM, f"prodstack-{manifest.data['stack']}-obs-{role}")


def forwarded_target_groups(rule: dict) -> list[tuple[str, int]]:
    (action,) = rule["actions"]
    assert action["type"] == "forward"
    return [(tg["arn"].rsplit(":", 1)[1], tg["weight"])
            for tg in action["forward"]["targetGroups"]]


# ---- prod: native blue/green --------------------------------------------------------


def test_prod_service_deploys_blue_green_with_a_bake_time(prod: Manifest) -> None:
    service = prod.one(SERVICE)
    assert service["deploymentController"] == {"type": "ECS"}
    assert service["deploymentConfiguration"]["strategy"] == "BLUE_GREEN"
    assert 1 <= int(service["deploymentConfiguration"]["bakeTimeInMinutes"]) <= 1440
    assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_prod_service_wires_alternate_target_group_and_both_rules(prod: Manifest) -> None:
    (lb,) = prod.one(SERVICE)["loadBalancers"]
    assert lb["targetGroupArn"].endswith(arn_of(prod, "prodstack-lb-tg"))
    advanced = lb["advancedConfiguration"]
    assert advanced["alternateTargetGroupArn"].endswith(arn_of(prod, "prodstack-lb-tg-alt"))
    assert advanced["productionListenerRule"].endswith(arn_of(prod, "prodstack-lb-production"))
    assert advanced["testListenerRule"].endswith(arn_of(prod, "prodstack-lb-test"))
    assert advanced["roleArn"].endswith(arn_of(prod, "prodstack-api-ecs-lb-role"))
    # Both target groups check health the same way: either one is blue in turn.
    primary = prod.one("lb/targetGroup:TargetGroup", "prodstack-lb-tg")
    alternate = prod.one("lb/targetGroup:TargetGroup", "prodstack-lb-tg-alt")
    assert {k: v for k, v in primary.items() if k != "tags"} == {
        k: v for k, v in alternate.items() if k != "tags"}


def test_ecs_may_move_the_rules_and_nothing_more(prod: Manifest) -> None:
    role = prod.one("iam/role:Role", "prodstack-api-ecs-lb-role")
    principals = [s["Principal"] for s in json.loads(role["assumeRolePolicy"])["Statement"]]
    assert principals == [{"Service": "ecs.amazonaws.com"}]
    attached = [a["policyArn"] for a in prod.inputs("iam/rolePolicyAttachment:RolePolicyAttachment")
                if a["role"] == "prodstack-api-ecs-lb-role"]
    assert attached == ["arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"]
    assert not [p for p in prod.inputs("iam/rolePolicy:RolePolicy")
                if p["role"].startswith("prodstack-api-ecs-lb-role")]


def test_test_rule_is_header_matched_and_behind_the_origin_check(prod: Manifest) -> None:
    test = prod.one(RULE, "prodstack-lb-test")
    production = prod.one(RULE, "prodstack-lb-production")
    headers = {c["httpHeader"]["httpHeaderName"]: c["httpHeader"]["values"]
               for c in test["conditions"]}
    # The test route's value is a generated secret, not a constant: nobody reaches green
    # before the switch without reading it from the stack (`test_route_value`, secret).
    assert headers["X-Prodstack-Route"] == ["[secret]"]
    secret = "random:index/randomPassword:RandomPassword::prodstack-test-route"
    assert secret in prod.named("prodstack-lb-test")["property_dependencies"]["conditions"]
    assert prod.one("randomPassword:RandomPassword", "prodstack-test-route") == {
        "length": 40, "special": False}
    assert prod.outputs["test_route_value"] == "[secret]"
    # Reachable only through CloudFront (and its WAF), like production.
    assert "X-Origin-Verify" in headers
    assert [c["httpHeader"]["httpHeaderName"] for c in production["conditions"]] == [
        "X-Origin-Verify"]
    # The test rule is evaluated first, or production would swallow test requests.
    assert test["priority"] < production["priority"]
    assert test["listenerArn"] == production["listenerArn"]
    assert test["listenerArn"].endswith(arn_of(prod, "prodstack-lb-https"))


def test_rules_start_on_the_primary_group_and_keep_ecs_weights(prod: Manifest) -> None:
    options = prod.data["resource_options"]
    for name in ("prodstack-lb-production", "prodstack-lb-test"):
        assert forwarded_target_groups(prod.one(RULE, name)) == [
            ("prodstack-lb-tg", 100), ("prodstack-lb-tg-alt", 0)]
        # ECS rewrites the weights on every deployment; a later `up` must not undo that.
        assert "actions" in options[f"aws:lb/listenerRule:ListenerRule::{name}"][
            "ignore_changes"]
    # ECS swaps which target group is primary; re-sending the pair would deploy into
    # the live group (terraform-provider-aws#45678).
    assert "loadBalancers" in options["aws:ecs/service:Service::prodstack-api-service"][
        "ignore_changes"]
    # The old single forwarding rule is replaced by the production rule, not kept beside it.
    # (Besides the two 403 rules for internal paths, test_cloud_security.py.)
    assert sorted(r["name"] for r in prod.all(RULE)) == [
        "prodstack-lb-encoded-paths", "prodstack-lb-internal-paths",
        "prodstack-lb-production", "prodstack-lb-test"]


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_deployments_roll_back_on_the_5xx_and_healthy_host_alarms(
    manifests: dict, stack: str
) -> None:
    m = Manifest(manifests[stack])
    alarms = m.one(SERVICE)["alarms"]
    assert alarms["enable"] is True and alarms["rollback"] is True
    wired = [alarm(m, role)["name"] for role in ("high-error-rate", "deploy-healthy-hosts")]
    assert alarms["alarmNames"] == wired == [
        f"prodstack-{stack}-{role}" for role in DEPLOYMENT_ALARM_ROLES]


def _read_metrics(a: dict) -> list[tuple[str, str, str]]:
    return sorted((q["id"], q["metric"]["metricName"], q["metric"]["dimensions"]["TargetGroup"])
                  for q in a["metricQueries"] if "metric" in q)


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_deployments_watch_their_own_healthy_hosts_alarm_quiet_on_missing_data(
    manifests: dict, stack: str
) -> None:
    # During an outage `healthy-hosts` (missing data breaching) is already in ALARM: a
    # deployment watching it would roll back the very fix. Its copy reads the same count
    # in every target group, breaches on zero, and treats no data as no breach.
    m = Manifest(manifests[stack])
    page, deploy = alarm(m, "healthy-hosts"), alarm(m, "deploy-healthy-hosts")
    assert deploy["name"] in m.one(SERVICE)["alarms"]["alarmNames"]
    assert page["name"] not in m.one(SERVICE)["alarms"]["alarmNames"]
    assert deploy["treatMissingData"] == "notBreaching"
    assert (deploy["comparisonOperator"], deploy["threshold"]) == ("LessThanThreshold", 1)
    assert _read_metrics(deploy) == _read_metrics(page)
    (total,) = [q for q in deploy["metricQueries"] if q.get("returnData")]
    # No FILL: a filled gap is a 0, which breaches whatever treatMissingData says.
    assert "FILL" not in total["expression"]
    ids = [q["id"] for q in deploy["metricQueries"] if "metric" in q]
    assert total["expression"] == (ids[0] if len(ids) == 1 else f"SUM([{', '.join(ids)}])")
    # It only gates deployments; the paging alarm notifies.
    assert not deploy.get("alarmActions") and page["alarmActions"]
    assert deploy["tags"]["prodstack:alarm-use"] == "deployment"


# ---- dev: rolling -----------------------------------------------------------------


def test_dev_rolls_with_the_circuit_breaker_and_one_target_group(dev: Manifest) -> None:
    service = dev.one(SERVICE)
    assert service["deploymentConfiguration"] == {"strategy": "ROLLING"}
    assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service["deploymentMinimumHealthyPercent"] == 100
    (lb,) = service["loadBalancers"]
    assert "advancedConfiguration" not in lb
    assert [r["name"] for r in dev.all("lb/targetGroup:TargetGroup")] == ["prodstack-lb-tg"]
    # Only the 403 rules for internal paths (test_cloud_security.py); nothing forwards.
    assert sorted(r["name"] for r in dev.all(RULE)) == [
        "prodstack-lb-encoded-paths", "prodstack-lb-internal-paths"]
    assert not [r for r in dev.all("iam/role:Role") if r["name"].endswith("ecs-lb-role")]
    assert not [r for r in dev.all("randomPassword:RandomPassword")
                if r["name"] == "prodstack-test-route"]  # fmt: skip
    assert "test_route_value" not in dev.outputs


# ---- alarms that fire when every task is down ------------------------------------


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_no_healthy_target_alarms_and_missing_data_breaches(manifests: dict, stack: str) -> None:
    m = Manifest(manifests[stack])
    healthy = alarm(m, "healthy-hosts")
    assert healthy["treatMissingData"] == "breaching"
    assert healthy["comparisonOperator"] == "LessThanThreshold" and healthy["threshold"] == 1
    queries = [q for q in healthy["metricQueries"] if "metric" in q]
    assert {q["metric"]["metricName"] for q in queries} == {"HealthyHostCount"}
    groups = {q["metric"]["dimensions"]["TargetGroup"].split("/")[1] for q in queries}
    # Both blue/green groups count: after a deployment production is on the other one.
    expected = {"prodstack-lb-tg", "prodstack-lb-tg-alt"} if stack == "prod" else {
        "prodstack-lb-tg"}
    assert groups == expected
    (total,) = [q for q in healthy["metricQueries"] if q.get("returnData")]
    assert total["expression"] == " + ".join(f"FILL({q['id']}, 0)" for q in queries)


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_too_few_running_tasks_alarms_and_missing_data_breaches(
    manifests: dict, stack: str
) -> None:
    m = Manifest(manifests[stack])
    running = alarm(m, "running-tasks")
    assert (running["namespace"], running["metricName"]) == (
        "ECS/ContainerInsights", "RunningTaskCount")
    assert set(running["dimensions"]) == {"ClusterName", "ServiceName"}
    assert running["treatMissingData"] == "breaching"
    assert running["comparisonOperator"] == "LessThanThreshold"
    floor = m.one("appautoscaling/target:Target")["minCapacity"]
    assert running["threshold"] == floor


def test_error_rate_counts_elb_5xx_in_the_denominator(prod: Manifest) -> None:
    rate = alarm(prod, "high-error-rate")
    (expression,) = [q["expression"] for q in rate["metricQueries"] if q.get("returnData")]
    numerator, denominator = expression.split(" / ")
    assert "elb5xx" in numerator and "target5xx" in numerator
    assert "elb5xx" in denominator and "requests" in denominator


def test_host_alarms_never_watch_one_blue_green_group_alone(prod: Manifest) -> None:
    for a in prod.inputs(ALARM):
        queries = a.get("metricQueries") or [{"metric": a}]
        groups = {q["metric"]["dimensions"].get("TargetGroup") for q in queries
                  if "metric" in q and "dimensions" in q["metric"]}
        groups.discard(None)
        assert len(groups) in (0, 2), (a["name"], groups)


# ---- component arguments -------------------------------------------------------------


def service_args(**overrides) -> ServiceArgs:
    base = dict(family="f", image="i", subnet_ids=["s"], security_group_id="sg",
                target_group_arn="tg", listener_arn="l", load_balancer_arn_suffix="a",
                target_group_arn_suffixes=["x"])
    return ServiceArgs(**(base | overrides))


@pytest.mark.parametrize("overrides, expected", [
    ({"deploy_strategy": "canary"}, "deploy_strategy='canary': rolling or blue_green"),
    ({"deploy_strategy": "blue_green"}, "blue_green needs alternate_target_group_arn"),
    ({"deploy_strategy": "blue_green", "alternate_target_group_arn": "alt"},
     "production_listener_rule_arn"),
    ({"bake_time_minutes": 1441}, "bake_time_minutes=1441: 0-1440"),
    ({"bake_time_minutes": -1}, "bake_time_minutes=-1"),
])
def test_service_args_refuse_an_incomplete_blue_green(overrides: dict, expected: str) -> None:
    with pytest.raises(ValueError, match="ServiceArgs") as err:
        service_args(**overrides)
    assert expected in str(err.value)


@pytest.mark.parametrize("secret, expected", [
    (None, "blue_green needs test_route_secret"),
    # A header condition compares at most 128 characters, `*` and `?` are wildcards.
    ("*", "test_route_secret: alphanumeric, at most 128"),
    ("a" * 129, "test_route_secret: alphanumeric, at most 128"),
    ("green\nX-Injected: 1", "test_route_secret: alphanumeric"),
])
def test_load_balancer_args_refuse_a_test_route_without_a_usable_secret(
    secret: str | None, expected: str
) -> None:
    with pytest.raises(ValueError, match="LoadBalancerArgs") as err:
        LoadBalancerArgs(vpc_id="v", subnet_ids=["a", "b"], security_group_id="sg",
                         blue_green=True, test_route_secret=secret)
    assert expected in str(err.value)
    LoadBalancerArgs(vpc_id="v", subnet_ids=["a", "b"], security_group_id="sg",
                     blue_green=True, test_route_secret="A" * 40)  # accepted
