"""Switching `deploy_strategy` on a deployed stack, each way, on the real program.

Each test takes two recordings of the same stack, one per strategy: the base is what is
deployed, the head what `pulumi up` is given. What Pulumi then does follows from its
engine, which the mocks do not run, so `_sent` applies the engine's own rule to the
recordings: a resource whose URN is in the state keeps the state's value of every
property in its `ignore_changes`, whether it is updated or replaced; only a resource
with no previous state is created from the program's values. Sources: Pulumi docs,
concepts/options/ignorechanges; pulumi/pulumi pkg/resource/deploy/step_generator.go
(generateSteps: `if hasOld { processIgnoreChanges(...) }`, before the new state a
replacement creates is built). Pulumi creates a replacement or a new resource before it
deletes the old one (docs: concepts/options/deletebeforereplace), so old and new
listener rules exist side by side for a while.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prodstack_cloud_harness import Manifest, run_all, run_harness

from components.load_balancer import TEST_ROUTE_HEADER

SERVICE = "aws:ecs/service:Service"
RULE = "aws:lb/listenerRule:ListenerRule"


@pytest.fixture(scope="module")
def switched(tmp_path_factory: pytest.TempPathFactory, manifests: dict) -> dict[str, Manifest]:
    """prod (blue/green, behind the CDN) and dev (rolling, no CDN), each also recorded
    with the other strategy."""
    tmp: Path = tmp_path_factory.mktemp("strategy-switch")
    other = {"prod": "rolling", "dev": "blue_green"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {stack: pool.submit(run_harness, stack, tmp / f"{stack}-{strategy}.json",
                                      "--set", f"deploy_strategy={strategy}")
                   for stack, strategy in other.items()}
        result = {f"{s}-{other[s]}": Manifest(f.result()) for s, f in futures.items()}
    result |= {"prod-blue_green": Manifest(manifests["prod"]),
               "dev-rolling": Manifest(manifests["dev"])}
    for name, m in result.items():
        assert m.data["exit_code"] == 0, (name, m.data["stderr"])
    return result


def _by_urn(m: Manifest) -> dict[str, dict[str, Any]]:
    return {r["urn"]: r for r in m.resources}


def _sent(base: Manifest, head: Manifest) -> dict[str, dict[str, Any]]:
    """The inputs Pulumi sends for each resource of ``head`` over the state ``base``
    left: for a URN already in the state, every ``ignore_changes`` property is reset to
    the state's value (absent there: absent here), as processIgnoreChanges does."""
    old = _by_urn(base)
    sent = {}
    for urn, resource in _by_urn(head).items():
        inputs = dict(resource["inputs"])
        if urn in old:
            for key in head.data["resource_options"][urn]["ignore_changes"]:
                if key in old[urn]["inputs"]:
                    inputs[key] = old[urn]["inputs"][key]
                else:
                    inputs.pop(key, None)
        sent[urn] = inputs
    return sent


def _service(m: Manifest) -> dict[str, Any]:
    (service,) = [r for r in m.resources if r["type"] == SERVICE]
    return service


def _forwarding_rules(m: Manifest) -> dict[str, dict[str, Any]]:
    return {r["urn"]: r["inputs"] for r in m.resources
            if r["type"] == RULE and r["inputs"]["actions"][0]["type"] == "forward"}


def _test_route(rule: dict[str, Any]) -> bool:
    return any(c.get("httpHeader", {}).get("httpHeaderName") == TEST_ROUTE_HEADER
               for c in rule["conditions"])


def _live_group(rule: dict[str, Any]) -> str:
    """The target group a forwarding rule sends all traffic to."""
    action = rule["actions"][0]
    if "targetGroupArn" in action:
        return action["targetGroupArn"]
    (group,) = [g["arn"] for g in action["forward"]["targetGroups"] if g["weight"] == 100]
    return group


DIRECTIONS = [("dev-rolling", "dev-blue_green"), ("prod-rolling", "prod-blue_green"),
              ("prod-blue_green", "prod-rolling"), ("dev-blue_green", "dev-rolling")]


@pytest.mark.parametrize("base, head", DIRECTIONS, ids=[f"{b}-to-{h}" for b, h in DIRECTIONS])
def test_a_switch_creates_a_new_service_from_the_programs_values(
    switched: dict[str, Manifest], base: str, head: str
) -> None:
    old, new = switched[base], switched[head]
    service = _service(new)
    # Every value the program gives is sent, none kept from the state by ignore_changes.
    sent = _sent(old, new)[service["urn"]]
    assert sent == service["inputs"]
    # Because it is a new URN (to rolling nothing is ignored, but an in-place update would
    # point the new rolling tasks at a group ECS may have emptied, while blue/green's
    # rules still route production: a fresh service and rule set instead).
    assert service["urn"] != _service(old)["urn"]
    assert service["urn"] not in _by_urn(old)
    (lb,) = sent["loadBalancers"]
    if head.endswith("blue_green"):
        advanced = lb["advancedConfiguration"]
        assert advanced["alternateTargetGroupArn"].endswith(":prodstack-lb-tg-alt")
        assert advanced["productionListenerRule"].endswith(":prodstack-lb-production")
        assert advanced["testListenerRule"].endswith(":prodstack-lb-test")
        assert advanced["roleArn"].endswith(":prodstack-api-ecs-lb-role")
        assert sent["deploymentConfiguration"]["strategy"] == "BLUE_GREEN"
    else:
        assert "advancedConfiguration" not in lb
        assert lb["targetGroupArn"].endswith(":prodstack-lb-tg")
        assert sent["deploymentConfiguration"] == {"strategy": "ROLLING"}
    # The old service goes once the new one exists; its scaling target and policies are
    # replaced too (their resource id names the service: force-new).
    target = new.one("appautoscaling/target:Target")
    assert target["resourceId"].endswith("/" + service["name"])
    assert old.one("appautoscaling/target:Target")["resourceId"] != target["resourceId"]
    assert run_all(new) == []


@pytest.mark.parametrize("base, head", DIRECTIONS, ids=[f"{b}-to-{h}" for b, h in DIRECTIONS])
def test_old_and_new_rules_never_share_a_priority_and_traffic_stays_served(
    switched: dict[str, Manifest], base: str, head: str
) -> None:
    old, new = switched[base], switched[head]
    # Between the create and the delete, the listener holds the old rules and the new.
    during = {**_forwarding_rules(old), **_forwarding_rules(new)}
    listeners = {r["listenerArn"] for r in during.values()}
    for listener in listeners:
        priorities = [r["priority"] for r in during.values() if r["listenerArn"] == listener]
        assert len(priorities) == len(set(priorities)), (listener, during)
    # What ordinary requests match first (the test rule wants the secret header).
    first = min((r for r in during.values() if not _test_route(r)),
                key=lambda r: r["priority"])
    old_service = _service(old)["inputs"]["loadBalancers"][0]
    if head.endswith("blue_green"):
        # The new production rule takes the requests at once, and sends them to the
        # group the rolling tasks are already registered in.
        assert first == _forwarding_rules(new)["aws:lb/listenerRule:ListenerRule::"
                                                 "prodstack-lb-production"]
        assert _live_group(first) == old_service["targetGroupArn"]
    else:
        # The outgoing production rule keeps the requests until it is deleted: whichever
        # group ECS left live (`actions` are ECS's since creation).
        assert first == _forwarding_rules(old)["aws:lb/listenerRule:ListenerRule::"
                                                 "prodstack-lb-production"]
        assert "actions" in old.data["resource_options"][
            "aws:lb/listenerRule:ListenerRule::prodstack-lb-production"]["ignore_changes"]


def test_the_cdn_rule_and_the_production_rule_are_the_two_that_once_collided(
    switched: dict[str, Manifest]
) -> None:
    # Behind the CDN the rolling stack forwards through a rule of its own, which a switch
    # leaves beside blue/green's production rule until the end of the update.
    rolling = _forwarding_rules(switched["prod-rolling"])
    blue_green = _forwarding_rules(switched["prod-blue_green"])
    assert [u.rsplit("::", 1)[1] for u in rolling] == ["prodstack-lb-from-cdn"]
    assert sorted(u.rsplit("::", 1)[1] for u in blue_green) == [
        "prodstack-lb-production", "prodstack-lb-test"]
    (cdn,) = rolling.values()
    assert cdn["priority"] not in {r["priority"] for r in blue_green.values()}
