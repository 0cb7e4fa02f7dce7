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
    assert "`backupRetentionPeriod`: `30` → `14`" in text
    assert "| cloud stack `prod` | 0 | 1 | 0 | 0 | 0 | 0 |" in text  # add, change, ...


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
    # The summary table opens the diff, before any verdict.
    assert text.index("| cloud stack `prod` |") < text.index("This apply cannot succeed")
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
    changes = "<details><summary>Changes by component"
    assert cut.startswith(full[: full.index(changes)])
    assert "more changed resource(s)" in cut and "--full FILE" in cut
    kept = cut[cut.index(changes):cut.index("\n_")]
    assert kept.split("</summary>", 1)[1].rstrip() in full
    fences = [line for line in kept.splitlines() if line.strip().startswith("```")]
    assert len(fences) % 2 == 0, "a code block was cut in the middle"
    assert cut.count("<details>") == cut.count("</details>")


def risk_rows(result: dict) -> list[str]:
    """The start of each risk's row, as the markdown table shows it."""
    return [f"| {r['label']} `{r['name']}` | **{r['action']}** |" for r in result["risks"]]


def composed_head(cloud_plans: dict, variants: tuple[str, ...]) -> dict:
    """prod with every resource and output that any of ``variants`` changes, as one pull
    request that changes all of their config values at once would plan it."""
    base = cloud_plans["prod"]
    head = json.loads(json.dumps(base))
    by_id = {r["id"]: r for r in head["resources"]}
    base_index = {r["id"]: r for r in base["resources"]}
    for name in variants:
        variant = cloud_plans[name]
        index = {r["id"]: r for r in variant["resources"]}
        for rid, resource in index.items():
            if base_index.get(rid) != resource:
                by_id[rid] = resource
        for rid in base_index.keys() - index.keys():
            by_id.pop(rid, None)
        for key, value in (variant.get("outputs") or {}).items():
            if value != (base.get("outputs") or {}).get(key):
                head["outputs"][key] = value
    head["resources"] = sorted(by_id.values(), key=lambda r: r["id"])
    return head


# Seven config changes in one pull request (the recorded one-change plans of prod).
MANY = ("prod-replicas", "prod-min-replicas", "prod-log-level", "prod-backup-days",
        "prod-vpc-cidr", "prod-no-cdn", "prod-token-b")


def test_a_many_change_diff_stays_a_comment_a_reviewer_reads(cloud_plans):
    from prodstack import comment

    result = diff.compare(cloud_plans["prod"], composed_head(cloud_plans, MANY))
    assert result["summary"]["replace"] > 20 and result["summary"]["remove"] > 5
    full = diff.render_markdown(result, max_chars=10**9)
    text = diff.render_markdown(result)
    assert len(full) > 15_000 and len(text) <= diff.DEFAULT_MAX_CHARS < 15_000
    # As plan.yml posts it, beside dev and the VPS with no changes: one table, then the
    # sections; every risk row is there, the rest is folded.
    same = {s: diff.compare(cloud_plans[p], cloud_plans[p]) for s, p in
            (("stack-dev", "dev"), ("stack-prod", "prod"))}  # fmt: skip
    sections = [{"id": "stack-dev", "title": "dev", "diff": same["stack-dev"]},
                {"id": "stack-prod", "title": "prod", "diff": result}]
    posted = comment.render(sections, link="https://github.com/o/r/actions/runs/1")
    assert len(posted) < 15_000 < len(comment.render_full(sections))
    assert posted.count("| | add | change | replace | remove |") == 1
    assert posted.index("| cloud stack `prod` |") < posted.index("<!-- prodstack-plan:")
    for row in risk_rows(result):
        assert row in posted, row
    assert "[job summary](https://github.com/o/r/actions/runs/1)" in posted
    assert posted.count("<details>") == posted.count("</details>") > 0


# From the minimum --max-chars up, in steps that land inside rows and resources.
BUDGETS = (2000, 2500, 3000, 4000, 5000, 6000, 8000, 10_000, 12_000, 15_000, 20_000)


@pytest.mark.parametrize("limit", BUDGETS)
def test_every_risk_row_is_kept_at_every_budget(cloud_plans, limit):
    """A VPC change (14 risk rows, a cannot-apply verdict) and seven changes at once: at
    every budget every risk row is there, whole; when they alone are over the budget the
    output says so, and otherwise it fits."""
    from prodstack import comment

    for head in (cloud_plans["prod-vpc-cidr"], composed_head(cloud_plans, MANY)):
        result = diff.compare(cloud_plans["prod"], head)
        full = diff.render_markdown(result, max_chars=10**9)
        text = diff.render_markdown(result, max_chars=limit)
        assert result["risks"] and result["cannot_apply"]
        for row in risk_rows(result):
            assert row in text, (limit, row)
        assert "This apply cannot succeed as written" in text
        for line in text.splitlines():
            assert line in full.splitlines() or "left out" in line, line  # never a cut line
        if len(text) > limit:
            assert "they are all kept" in text
        assert text.count("<details>") == text.count("</details>")
        posted = comment.render([{"id": "stack-prod", "title": "prod", "diff": result}],
                                max_chars=limit)  # fmt: skip
        for row in risk_rows(result):
            assert row in posted, (limit, row)


@pytest.mark.parametrize("limit", [2000, 3000, 5000, 8000])
def test_small_caps_keep_the_summary_and_cut_the_rest_by_whole_rows(cloud_plans, limit):
    result = diff.compare(cloud_plans["prod"], cloud_plans["prod-log-level"])
    full = diff.render_markdown(result, max_chars=10**9)
    text = diff.render_markdown(result, max_chars=limit)
    assert len(full) > 2000 and len(text) <= limit
    assert text.startswith(full[: full.index("<details>")])  # the whole summary
    for line in text.splitlines():
        assert line in full.splitlines() or "left out" in line, line  # never a cut line
    assert ("left out" in text) == (len(full) > limit)


def test_the_default_max_chars_is_the_diffs(cloud_plans):
    from prodstack.cli import build_parser

    args = build_parser().parse_args(["diff", "a.json", "b.json"])
    assert args.max_chars == diff.DEFAULT_MAX_CHARS


def test_fail_on_names_what_blocks(cloud_plans):
    risky = diff.compare(cloud_plans["prod"], cloud_plans["prod-vpc-cidr"])
    assert diff.blocking(risky, {"risk"}) and diff.blocking(risky, {"replace"})
    assert diff.blocking(risky, {"delete"}) == []
    calm = diff.compare(cloud_plans["prod"], cloud_plans["prod-backup-days"])
    assert diff.blocking(calm, {"risk", "policy"}) == []


def test_a_point_in_time_restore_reads_as_one(cloud_plans, tmp_path):
    from tests.support.recordings import record_isolated

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
