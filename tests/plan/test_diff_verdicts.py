"""Verdicts of `prodstack diff` on commits of the real program: a change that AWS refuses
reads as one, and a change that destroys nothing does not read as a deletion.

Each change is a commit in a clone of this checkout, and each diff is the CLI's
`--base COMMIT~1 --head COMMIT` (two runs of the real program under mocks).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prodstack import diff
from prodstack.cloud_plan import REPO
from tests.plan.test_release import prodstack

RECORD = "aws:route53/record:Record"
# name -> (stack, what the commit does to the checkout)
EDITS = {
    "vpc-cidr": ("prod", [("Pulumi.prod.yaml", "  prodstack:az_count:",
                           "  prodstack:vpc_cidr: 10.1.0.0/16\n  prodstack:az_count:")]),
    "no-cdn": ("prod", [("Pulumi.prod.yaml", "prodstack:cdn: true", "prodstack:cdn: false")]),
    "storage": ("prod", [("Pulumi.prod.yaml", 'prodstack:storage_gb: "100"',
                          'prodstack:storage_gb: "200"')]),
    "domain": ("prod", [("Pulumi.prod.yaml", "prodstack:domain: api.example.com",
                         "prodstack:domain: www.example.com")]),
    "no-dev-file": ("dev", None),
}


def _commit(repo: Path, name: str) -> None:
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "checkout", "--quiet", "-b", name, "main-copy"], check=True)
    edits = EDITS[name][1]
    if edits is None:
        subprocess.run([*git, "rm", "--quiet", "Pulumi.dev.yaml"], check=True)
    for file, old, new in edits or ():
        text = (repo / file).read_text()
        assert old in text, f"{file}: {old!r} not found"
        (repo / file).write_text(text.replace(old, new, 1))
    subprocess.run([*git, "commit", "--quiet", "-am", name], check=True)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[str, dict]:
    """Each commit's diff, as the CLI's JSON, with its exit code and stderr."""
    repo = tmp_path_factory.mktemp("verdicts") / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "branch", "main-copy"], check=True)
    for name in EDITS:
        _commit(repo, name)

    def run(name: str) -> dict:
        proc = prodstack("diff", "--base", f"{name}~1", "--head", name, "--stack",
                         EDITS[name][0], "--format", "json", "--fail-on", "risk,downtime",
                         cwd=repo)  # fmt: skip
        assert proc.stdout, proc.stderr
        return {"result": json.loads(proc.stdout), "code": proc.returncode,
                "stderr": proc.stderr}  # fmt: skip

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in EDITS}
        return {name: future.result() for name, future in futures.items()}


def test_a_vpc_cidr_change_cannot_succeed_and_says_what_to_do_instead(verdicts):
    found = verdicts["vpc-cidr"]
    result = found["result"]
    (blocker,) = result["cannot_apply"]
    assert blocker["vpc"] == "aws:ec2/vpc:Vpc::prodstack-net-vpc"
    assert {r.rsplit("::", 1)[1] for r in blocker["resources"]} == {
        "prodstack-db-instance", "prodstack-db-subnets", "prodstack-cache-group",
        "prodstack-cache-subnets"}  # fmt: skip
    assert "new stack" in blocker["instead"] and "snapshot" in blocker["instead"]
    assert found["code"] == 1 and "cannot succeed as written" in found["stderr"]
    text = diff.render_markdown(result)
    # Said before the risk table, and kept however small the comment is cut.
    assert text.index("This apply cannot succeed as written") < text.index("#### ⚠️")
    assert "This apply cannot succeed as written" in diff.render_markdown(result,
                                                                           max_chars=2000)
    # The VPC parenthesis is on the rows it is about, and no other.
    parenthesis = "(a database cannot move to another VPC's subnets)"
    rows = [line for line in text.splitlines() if parenthesis in line]
    assert sorted(re.search(r"`([^`]+)`", row).group(1) for row in rows) == [
        "prodstack-cache-group", "prodstack-cache-subnets", "prodstack-db-instance",
        "prodstack-db-subnets"]  # fmt: skip


def test_an_update_that_moves_no_database_carries_no_vpc_parenthesis(verdicts):
    """Removing the CDN changes what stateful resources read at apply, in the same VPC."""
    result = verdicts["no-cdn"]["result"]
    assert result["cannot_apply"] == []
    assert "another VPC" not in diff.render_markdown(result, max_chars=10**9)


def test_removing_the_cdn_moves_the_public_name_in_place(verdicts):
    """One record holds the public name, whatever serves it: without the CDN its alias
    target changes in place, and no second record of the name is created."""
    result = verdicts["no-cdn"]["result"]
    assert [r for r in result["risks"] if r["action"] == "collide"] == []
    changes = {c["name"]: c for c in result["changes"]}
    record = changes["prodstack-domain-alias"]
    assert record["action"] == "update"
    assert [p["property"] for p in record["properties"]] == ["aliases"]
    assert changes["prodstack-lb-alias-0"]["action"] == "remove"  # origin.api.example.com


def test_a_record_created_over_a_name_another_still_holds_is_a_risk(cloud_plans):
    """The old program's CDN removal, rebuilt from real plans: the ALB's record is
    replaced to take `api.example.com` while the CDN's record of that name is deleted only
    after it (Pulumi creates before it deletes)."""
    base = copy.deepcopy(cloud_plans["prod"])
    head = copy.deepcopy(cloud_plans["prod-no-cdn"])
    # The old program: the CDN's record held the public name, and without the CDN the
    # ALB's (which held the origin's name beside the CDN).
    for plan, owner in ((base, "cdn"), (head, "lb")):
        record = next(r for r in plan["resources"] if r["name"] == "prodstack-domain-alias")
        record.update(name=f"prodstack-{owner}-alias-0",
                      id=f"{RECORD}::prodstack-{owner}-alias-0")
        record["options"].pop("aliases")
    result = diff.compare(base, head)
    (collision,) = [r for r in result["risks"] if r["action"] == "collide"]
    assert collision["name"] == "prodstack-lb-alias-0"
    assert collision["record"] == "api.example.com A"
    assert collision["holder"] == f"{RECORD}::prodstack-cdn-alias-0"
    assert "Route 53 refuses the create" in collision["order"]
    assert diff.blocking(result, {"risk"})
    text = diff.render_markdown(result)
    assert "1 DNS record collision(s)" in text
    assert "| Route 53 record `prodstack-lb-alias-0` | **collide** |" in text
    # With allow_overwrite the create is an UPSERT: no collision.
    lb_record = next(r for r in head["resources"] if r["name"] == "prodstack-lb-alias-0")
    lb_record["inputs"]["allowOverwrite"] = True
    assert not [r for r in diff.compare(base, head)["risks"] if r["action"] == "collide"]


def test_an_aliased_rename_is_the_same_resource(cloud_plans):
    """From the program before the public name's record was the stack's own, to now: the
    `aliases` option makes it the same record, neither deleted nor created."""
    base = copy.deepcopy(cloud_plans["prod"])
    record = next(r for r in base["resources"] if r["name"] == "prodstack-domain-alias")
    record.update(name="prodstack-cdn-alias-0", id=f"{RECORD}::prodstack-cdn-alias-0",
                  parent="prodstack:cdn:Cdn::prodstack-cdn")
    record["options"].pop("aliases")
    result = diff.compare(base, cloud_plans["prod"])
    assert result["changes"] == [] and result["risks"] == []
    assert result["summary"]["unchanged"] == len(cloud_plans["prod"]["resources"])
    # Without the alias it is a deletion and a creation of the same name: a collision.
    head = copy.deepcopy(cloud_plans["prod"])
    next(r for r in head["resources"] if r["name"] == "prodstack-domain-alias")[
        "options"].pop("aliases")
    result = diff.compare(base, head)
    assert {c["action"] for c in result["changes"]} == {"add", "remove"}
    assert [r["action"] for r in result["risks"]] == ["collide"]


def test_a_security_group_rule_of_another_source_kind_is_replaced(verdicts):
    """Without the CDN the ALB admits the world by CIDR, not CloudFront's prefix list."""
    changes = {c["name"]: c for c in verdicts["no-cdn"]["result"]["changes"]}
    rules = [c for c in changes.values()
             if c["type"] == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
             and {"cidrIpv4", "prefixListId"} & {p["property"] for p in c["properties"]}]
    assert rules
    for rule in rules:
        assert rule["action"] == "replace", rule["name"]
        assert set(rule["forced_by"]) >= {"cidrIpv4", "prefixListId"}


def test_deleting_a_stack_file_destroys_nothing_and_saves_nothing(verdicts):
    result = verdicts["no-dev-file"]["result"]
    assert result["stack_file_removed"] == "Pulumi.dev.yaml"
    assert result["summary"]["remove"] == 0 and result["changes"] == []
    assert result["still_deployed"] > 100
    cost = result["cost"]
    assert cost["after"] == cost["before"] > 0 and cost["delta"] == 0
    text = diff.render_markdown(result)
    assert "nothing is destroyed" in text and "`pulumi destroy --stack dev`" in text
    assert "to remove" not in text and "$0.00 a month" not in text
    assert verdicts["no-dev-file"]["code"] == 0


def test_a_storage_only_change_is_no_restart(verdicts):
    result = verdicts["storage"]["result"]
    (note,) = result["disruptions"]
    assert note["property"] == "allocatedStorage" and note["downtime"] is False
    assert verdicts["storage"]["code"] == 0  # --fail-on downtime does not fire
    text = diff.render_markdown(result)
    assert "0 restart(s) or rollout(s)" in text and "1 in-place change(s) to note" in text
    assert "#### Downtime and restarts" not in text


def test_a_domain_change_shows_the_new_url(verdicts):
    result = verdicts["domain"]["result"]
    outputs = {o["output"]: o for o in result["outputs"]}
    assert outputs["url"]["old"] == "https://api.example.com"
    assert outputs["url"]["new"] == "https://www.example.com"
    text = diff.render_markdown(result)
    assert "- `url`: `https://api.example.com` → `https://www.example.com`" in text
