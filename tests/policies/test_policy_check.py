"""The plan's markers reach the rules as the engine's unknowns (`prodstack.policy_check`),
and a rule an unknown value stops is an advisory, as at `pulumi preview`, not a pass and
not a violation."""

from __future__ import annotations

import json

from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policies.ecs import ecs_task_hardened
from policies.keys import encryption_at_rest
from policies.tls import rds_force_ssl
from prodstack import planfile
from prodstack.policy_check import check_resource, engine_values

UNKNOWN_ARN = planfile.unknown_marker("aws:iam/role:Role::prodstack-api-role.arn")


def test_a_marker_becomes_the_engines_unknown_and_other_text_is_kept() -> None:
    value = {"arn": UNKNOWN_ARN, "token": planfile.secret_marker("prodstack:api_token@1a2b3c4d"),
             "plain": "[secrets are not markers] (known before apply)",
             "list": [planfile.SECRET, 5, True],
             "root": f"arn:aws:iam::{planfile.unknown_marker('account')}:root"}
    assert engine_values(value) == {
        "arn": UNKNOWN_STRING_VALUE, "token": UNKNOWN_STRING_VALUE,
        "plain": "[secrets are not markers] (known before apply)",
        "list": [UNKNOWN_STRING_VALUE, 5, True],
        "root": f"arn:aws:iam::{UNKNOWN_STRING_VALUE}:root"}


def test_a_rule_stopped_by_an_unknown_value_is_an_advisory_not_a_violation() -> None:
    advisories: list[str] = []
    props = {"family": planfile.unknown_marker("x.family"), "parameters": []}
    assert check_resource(rds_force_ssl, "aws:rds/parameterGroup:ParameterGroup", props,
                          advisories) == []  # fmt: skip
    assert advisories == ["can't run policy 'rds-force-ssl' during preview: string value at "
                          ".family can't be known during preview"]


def test_a_rule_reading_with_lookup_judges_the_rest_of_the_resource() -> None:
    """A secret the plan does not show is present; the other settings are still judged."""
    advisories: list[str] = []
    cache = {"authToken": planfile.SECRET, "atRestEncryptionEnabled": False,
             "transitEncryptionEnabled": True}
    violations = check_resource(encryption_at_rest,
                                "aws:elasticache/replicationGroup:ReplicationGroup", cache,
                                advisories)  # fmt: skip
    assert violations == ["ElastiCache must encrypt at rest (atRestEncryptionEnabled: true)."]
    assert advisories == []


def _task(image: str) -> dict:
    return {"networkMode": "awsvpc", "containerDefinitions": json.dumps([{
        "name": "api", "image": image, "readonlyRootFilesystem": True, "user": "10001",
        "linuxParameters": {"capabilities": {"drop": ["ALL"]}},
        "logConfiguration": {"logDriver": "awslogs"}}])}


def test_an_image_known_only_after_apply_is_not_judged_but_a_mutable_tag_on_it_is() -> None:
    type_ = "aws:ecs/taskDefinition:TaskDefinition"
    digest = planfile.unknown_marker("docker:index/image:Image::api.repoDigest")
    assert check_resource(ecs_task_hardened, type_, _task(digest)) == []
    repository = planfile.unknown_marker("aws:ecr/repository:Repository::api.repositoryUrl")
    assert check_resource(ecs_task_hardened, type_, _task(f"{repository}:latest")) == [
        "Container 'api' must run an image pinned by digest."]
