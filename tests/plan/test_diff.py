"""`prodstack diff` on real pairs of plans: each pair differs by one config change."""

from __future__ import annotations

import json

import pytest

from prodstack import diff, planfile


def changed(base: dict, head: dict) -> dict[str, dict]:
    return {c["id"]: c for c in diff.compare(base, head)["changes"]}


def test_same_plan_reads_no_changes(cloud_plans):
    result = diff.compare(cloud_plans["prod"], cloud_plans["prod"])
    assert result["changes"] == [] and result["risks"] == [] and result["disruptions"] == []
    assert "**No changes**" in diff.render_markdown(result)


@pytest.mark.parametrize(
    ("variant", "touched"),
    [
        # The knob a reviewer expects, and nothing else.
        ("prod-replicas", {"aws:ecs/service:Service::prodstack-api-service"}),
        # The floor is also the running-task alarm's threshold.
        ("prod-min-replicas", {
            "aws:appautoscaling/target:Target::prodstack-api-scaling-target",
            "aws:cloudwatch/metricAlarm:MetricAlarm::prodstack-prod-obs-running-tasks"}),
        ("prod-backup-days", {"aws:rds/instance:Instance::prodstack-db-instance"}),
        # New task definitions, and the service that points at the new revision.
        ("prod-log-level", {"aws:ecs/taskDefinition:TaskDefinition::prodstack-api-task",
                            "aws:ecs/taskDefinition:TaskDefinition::prodstack-api-migrate-task",
                            "aws:ecs/service:Service::prodstack-api-service"}),
    ],
)
def test_one_config_value_touches_exactly_its_resources(cloud_plans, variant, touched):
    assert set(changed(cloud_plans["prod"], cloud_plans[variant])) == touched


def test_update_shows_old_and_new_values(cloud_plans):
    change = changed(cloud_plans["prod"], cloud_plans["prod-backup-days"])[
        "aws:rds/instance:Instance::prodstack-db-instance"]
    assert change["action"] == "update"
    assert change["properties"] == [
        {"property": "backupRetentionPeriod", "forces_replacement": False, "old": 30, "new": 14}
    ]
    text = diff.render_markdown(diff.compare(cloud_plans["prod"], cloud_plans["prod-backup-days"]))
    assert "`backupRetentionPeriod`: `30` → `14`" in text and "1 to update" in text


def test_ignored_properties_are_shown_but_change_nothing(cloud_plans):
    """The service sets ignore_changes=[desiredCount]: autoscaling owns the running count,
    so `replicas` only matters when the service is created."""
    result = diff.compare(cloud_plans["prod"], cloud_plans["prod-replicas"])
    (change,) = result["changes"]
    assert change["action"] == "ignored" and change["properties"][0]["ignored"] is True
    assert result["summary"]["update"] == 0 and result["summary"]["ignored"] == 1
    assert result["disruptions"] == []
    text = diff.render_markdown(result)
    assert "**No changes**" in text and "`desiredCount`: `3` → `5` (in `ignore_changes`" in text


def test_option_changes_are_updates(cloud_plans):
    head = json.loads(json.dumps(cloud_plans["prod"]))
    instance = next(r for r in head["resources"] if r["name"] == "prodstack-db-instance")
    instance["options"]["protect"] = True
    (change,) = diff.compare(cloud_plans["prod"], head)["changes"]
    assert change["action"] == "update"
    assert change["properties"] == [{"property": "option protect", "forces_replacement": False,
                                     "old": False, "new": True}]  # fmt: skip


def test_task_definition_change_is_a_replacement_that_rolls_the_service(cloud_plans):
    result = diff.compare(cloud_plans["prod"], cloud_plans["prod-log-level"])
    task = next(c for c in result["changes"] if c["name"] == "prodstack-api-task")
    assert task["action"] == "replace" and "containerDefinitions" in task["forced_by"]
    rolls = [d for d in result["disruptions"] if d["name"] == "prodstack-api-service"]
    assert rolls and rolls[0]["property"] == "taskDefinition"
    # Prod deploys blue/green, and the reviewer is told so (not "rolling").
    assert rolls[0]["reason"].startswith("a new task definition revision starts a blue/green")
    # A long JSON value is shown as a unified diff of its parsed form: one line changes.
    lines = [line.strip() for line in diff.render_markdown(result).splitlines()]
    assert '-"value":"INFO"' in [line.replace(" ", "") for line in lines if line[:1] == "-"]
    assert '+"value":"DEBUG"' in [line.replace(" ", "") for line in lines if line[:1] == "+"]


def test_service_disruption_text_follows_its_deployment_strategy():
    entry = diff.replacement_table()["aws:ecs/service:Service"]["disruptive"]["taskDefinition"]
    blue_green = {"deploymentConfiguration": {"strategy": "BLUE_GREEN"}}
    rolling = {"deploymentConfiguration": {"strategy": "ROLLING"}}
    assert "blue/green" in diff._disruption_reason(entry, blue_green)
    for inputs in (rolling, {}, {"deploymentConfiguration": None}):
        assert "rolling deployment" in diff._disruption_reason(entry, inputs)


def test_vpc_cidr_change_replaces_the_vpc_and_its_subnets_first_in_the_report(cloud_plans):
    result = diff.compare(cloud_plans["prod"], cloud_plans["prod-vpc-cidr"])
    risks = {r["name"]: r for r in result["risks"]}
    vpc = risks["prodstack-net-vpc"]
    assert vpc["action"] == "replace" and vpc["forced_by"] == ["cidrBlock"]
    assert vpc["delete_first"] is False and "created first" in vpc["order"]
    assert all(risks[f"prodstack-net-{tier}-{i}"]["forced_by"] for tier in
               ("public", "private", "isolated") for i in range(3))  # fmt: skip
    # What reads the replaced subnets and groups changes at apply; for the database's
    # subnet group that is a risk of its own.
    moved = risks["prodstack-db-subnets"]
    assert moved["action"] == "update" and moved["forced_by"] == ["subnetIds"]
    assert {f"aws:ec2/subnet:Subnet::prodstack-net-isolated-{i}" for i in range(3)} <= set(
        moved["because_of"])
    text = diff.render_markdown(result)
    # Risks come before the per-component changes.
    assert text.index("Stateful resources replaced") < text.index("Changes by component")
    assert "VPC `prodstack-net-vpc` | **replace** | `cidrBlock`" in text


def test_removed_stateful_resource_is_a_deletion_risk(cloud_plans):
    """prod has a CDN and dev has none: removing CloudFront is a stateful deletion."""
    base, head = cloud_plans["prod"], json.loads(json.dumps(cloud_plans["prod"]))
    head["resources"] = [r for r in head["resources"] if r["component"] != "cdn"]
    result = diff.compare(base, head)
    deleted = {r["type"] for r in result["risks"] if r["action"] == "delete"}
    assert "aws:cloudfront/distribution:Distribution" in deleted
    assert all(c["action"] == "remove" for c in result["changes"])
    # Every CDN resource, each counted once.
    cdn = [r for r in base["resources"] if r["component"] == "cdn"]
    assert len(cdn) >= 6 and result["summary"]["remove"] == len(cdn)


def test_added_resources_are_listed_as_added(cloud_plans):
    base = json.loads(json.dumps(cloud_plans["prod"]))
    base["resources"] = [r for r in base["resources"] if r["component"] != "waf"]
    result = diff.compare(base, cloud_plans["prod"])
    assert {c["action"] for c in result["changes"]} == {"add"}
    assert result["summary"]["add"] == 4 and result["risks"] == []


def test_changed_secret_shows_secret_changed_and_never_a_value(cloud_plans):
    base, head = cloud_plans["prod-token-a"], cloud_plans["prod-token-b"]
    result = diff.compare(base, head)
    version = next(c for c in result["changes"] if c["type"].endswith("SecretVersion"))
    assert version["properties"][0]["secret_changed"] is True
    assert "old" not in version["properties"][0] and "new" not in version["properties"][0]
    text = diff.render_markdown(result)
    assert "secret changed" in text
    dumped = planfile.dumps(base) + planfile.dumps(head) + text + json.dumps(result)
    assert "plan-secret-" not in dumped  # the stand-in the program saw


def test_json_format_is_plain_data(cloud_plans):
    result = diff.compare(cloud_plans["prod"], cloud_plans["prod-backup-days"])
    assert json.loads(json.dumps(result)) == result
    assert result["format"] == "prodstack.diff" and result["summary"]["update"] == 1


@pytest.mark.parametrize("base", ["dev", "empty"])
def test_markdown_of_two_very_different_stacks_fits_one_comment(cloud_plans, base):
    """dev against prod, and a first deploy of prod (an empty base)."""
    before = cloud_plans["dev"] if base == "dev" else {**cloud_plans["prod"], "resources": []}
    result = diff.compare(before, cloud_plans["prod"])
    full = diff.render_markdown(result, max_chars=10**9)
    limit = diff.GITHUB_COMMENT_LIMIT if base == "empty" else 30_000
    cut = diff.render_markdown(result, max_chars=limit)
    assert len(full) > limit, "pair too similar to exercise the cap"
    assert len(cut) <= limit
    # Summary and risks are always kept; the cut is at a resource boundary and says so.
    assert cut.startswith(full[: full.index("#### Changes by component")])
    assert "more changed resource(s)" in cut and "--full FILE" in cut
    kept = cut[cut.index("#### Changes by component"):cut.index("\n_")]
    assert kept.rstrip() in full
    fences = [line for line in kept.splitlines() if line.strip().startswith("```")]
    assert len(fences) % 2 == 0, "a code block was cut in the middle"


@pytest.mark.parametrize("limit", [2000, 3000, 5000, 8000])
def test_small_caps_keep_the_summary_and_cut_risks_by_whole_rows(cloud_plans, limit):
    result = diff.compare(cloud_plans["prod"], cloud_plans["prod-vpc-cidr"])
    full = diff.render_markdown(result, max_chars=10**9)
    text = diff.render_markdown(result, max_chars=limit)
    assert len(text) <= limit
    assert text.startswith(full[: full.index("#### ⚠️")])  # the whole summary
    for line in text.splitlines():
        assert line in full.splitlines() or "left out" in line, line  # never a cut line
    assert "left out" in text


def test_fail_on_names_what_blocks(cloud_plans):
    risky = diff.compare(cloud_plans["prod"], cloud_plans["prod-vpc-cidr"])
    assert diff.blocking(risky, {"risk"}) and diff.blocking(risky, {"replace"})
    assert diff.blocking(risky, {"delete"}) == []
    calm = diff.compare(cloud_plans["prod"], cloud_plans["prod-backup-days"])
    assert diff.blocking(calm, {"risk", "policy"}) == []


def test_a_point_in_time_restore_reads_as_one(cloud_plans, tmp_path):
    from prodstack.cloud_plan import record_isolated

    when = "2026-12-07T05:00:00Z"
    head = record_isolated("prod", tmp_path / "restore.json", {"restore_to_time": when},
                           plan=True)
    result = diff.compare(cloud_plans["prod"], head)
    (restore,) = [d for d in result["disruptions"] if "restore" in d]
    assert restore["restore"] == {"source": "prodstack-prod", "time": when}
    # Nothing stateful is replaced or deleted: the old instance stays (only tagged).
    assert result["risks"] == []
    old = next(c for c in result["changes"] if c["name"] == "prodstack-db-instance")
    assert old["action"] == "update"
    text = diff.render_markdown(result)
    first = text.index("#### Downtime and restarts")
    assert text.index("database restore: RDS instance `prodstack-db-restored` "
                      "(`prodstack-prod-r2612070500`) is created from `prodstack-prod` as "
                      f"it was at {when}") > first
    assert "keeps running, and billing, until `restore_source: release`" in text
    # The service moves in the same deployment.
    assert any(d["name"] == "prodstack-api-service" for d in result["disruptions"])
