"""Correctness invariants of the cloud stacks, one named test each.

They run on the session's recorded prod and dev manifests (``conftest.py``), on the
config loader, and on the app's own code where the invariant is about the app.
"""

from __future__ import annotations

import json

import pytest
from prodstack_cloud_harness import check_resource, run_all, run_harness

from app.core.config import INT_SETTINGS, LOG_LEVELS, ConfigError, load_settings
from components.database import DatabaseArgs
from stacks.config import ConfigError as StackConfigError
from stacks.config import load

TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
EXECUTION_GRANTS = (
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment::prodstack-api-execution-role-managed",
    "aws:iam/rolePolicy:RolePolicy::prodstack-api-execution-role-secrets",
)


def _urns(manifest, type_: str) -> list[str]:
    return [r["urn"] for r in manifest.resources if r["type"] == type_]


def _problems(raw: dict[str, str], stack: str = "dev") -> list[str]:
    with pytest.raises(StackConfigError) as err:
        load(raw, region="eu-west-1", stack=stack)
    return err.value.problems


def _accepted(raw: dict[str, str]) -> bool:
    try:
        load(raw, region="eu-west-1", stack="dev")
    except StackConfigError:
        return False
    return True


# ---- 3: RDS pins the major version only -------------------------------------------------


def test_rds_pins_only_the_major_version_while_minor_upgrades_are_automatic(both):
    """A pinned minor next to auto minor upgrades plans a downgrade after every upgrade."""
    for manifest in both:
        instance = manifest.one("rds/instance:Instance")
        assert instance["autoMinorVersionUpgrade"] is True
        assert "." not in instance["engineVersion"], instance["engineVersion"]
    with pytest.raises(ValueError, match="major version only"):
        DatabaseArgs(subnet_ids=["a"], security_group_id="sg", identifier="db",
                     engine_version="16.11")  # fmt: skip


# ---- 6: the load balancer checks liveness -------------------------------------------------


def test_target_group_health_check_is_liveness_which_survives_a_database_outage(both):
    """The ALB's path answers 200 while PostgreSQL and Redis are down; readiness does not."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from app.api.routes import health

    class Down:
        async def ping(self, timeout: float) -> None:
            raise ConnectionRefusedError

        def update_gauges(self) -> None:
            pass

    app = Starlette(routes=health.routes)
    app.state.probe = health.DependencyProbe(Down(), Down())
    # Every target group, blue/green's alternate included.
    paths = {tg["healthCheck"]["path"] for m in both
             for tg in m.inputs("lb/targetGroup:TargetGroup")}
    assert len(paths) == 1
    with TestClient(app) as client:
        assert client.get(paths.pop()).status_code == 200
        assert client.get("/health/ready").status_code == 503


# ---- 8: the stack sets only what the app accepts ------------------------------------------


def _api_env(manifest) -> dict[str, str]:
    task = next(i for i in manifest.inputs("taskDefinition:TaskDefinition")
                if not i["family"].endswith("-migrate"))
    api = next(c for c in json.loads(task["containerDefinitions"]) if c["name"] == "api")
    env = {e["name"]: e["value"] for e in api["environment"]}
    # ECS injects these from Secrets Manager at start; stand-ins of a valid shape.
    for secret in api["secrets"]:
        env[secret["name"]] = "s3cret-stand-in-" + "x" * 32
    return env


def test_app_accepts_every_variable_the_stack_sets(both):
    """The app exits 2 on a value it refuses; every task would then crash-loop."""
    for manifest in both:
        env = _api_env(manifest)
        assert {"LOG_LEVEL", "RATE_LIMIT_PER_MINUTE", "PORT"} <= set(env)
        load_settings(env)  # raises ConfigError naming the variable


@pytest.mark.parametrize("level", [*LOG_LEVELS, "CRITICAL", "TRACE", "info"])
def test_stack_log_levels_are_exactly_the_apps(level: str):
    try:
        load_settings({"LOG_LEVEL": level, "DATABASE_URL": "postgresql://u:p@h/d",
                       "REDIS_URL": "redis://h", "API_TOKEN": "t" * 32})  # fmt: skip
        app_accepts = True
    except ConfigError:
        app_accepts = False
    # The stack refuses what the app refuses and passes the app's spelling (upper case).
    assert _accepted({"log_level": level}) == app_accepts


def test_stack_rate_limit_range_is_exactly_the_apps():
    _, low, high = INT_SETTINGS["RATE_LIMIT_PER_MINUTE"]
    for value, ok in ((low - 1, False), (low, True), (high, True), (high + 1, False)):
        assert _accepted({"rate_limit_per_minute": str(value)}) is ok, value


# ---- 9: prod teardown ------------------------------------------------------------------


def test_prod_refuses_deletion_protection_off_and_points_to_teardown():
    from test_cloud_config import stack_raw

    found = _problems(stack_raw("prod") | {"deletion_protection": "false"}, stack="prod")
    assert any("deletion_protection" in p and "teardown: true" in p for p in found), found


@pytest.fixture(scope="module")
def prod_teardown(tmp_path_factory):
    from prodstack_cloud_harness import Manifest

    data = run_harness("prod", tmp_path_factory.mktemp("teardown") / "prod.json",
                       "--set", "prodstack:teardown=true")  # fmt: skip
    assert data["exit_code"] == 0, data["stderr"]
    return Manifest(data)


def test_prod_teardown_opt_in_lets_destroy_finish_and_keeps_the_final_snapshot(prod_teardown):
    db = prod_teardown.one("rds/instance:Instance")
    assert db["deletionProtection"] is False
    assert db["skipFinalSnapshot"] is False and db["finalSnapshotIdentifier"]
    assert prod_teardown.one("lb/loadBalancer:LoadBalancer")["enableDeletionProtection"] is False
    assert prod_teardown.one("ecr/repository:Repository")["forceDelete"] is True
    assert any("teardown" in w for w in prod_teardown.warnings)
    # The policy pack accepts it: the lifted protection carries the named teardown tag.
    assert run_all(prod_teardown) == []


def test_policy_refuses_lifted_prod_protection_without_the_teardown_tag(prod_teardown):
    from policies.data import prod_protection

    for type_ in ("aws:rds/instance:Instance", "aws:lb/loadBalancer:LoadBalancer"):
        props = prod_teardown.one(type_.split(":", 1)[1])
        untagged = props | {"tags": {k: v for k, v in props["tags"].items()
                                     if k != "prodstack:teardown"}}
        assert check_resource(prod_protection, type_, untagged), type_


def test_docs_give_the_teardown_procedure_the_config_accepts():
    from prodstack_cloud_harness import REPO

    text = (REPO / "docs" / "cloud.md").read_text()
    assert "pulumi config set teardown true" in text
    assert "first set `deletion_protection: false`" not in text


# ---- 10: every key validated on its own ---------------------------------------------------


def test_every_bad_key_is_named_on_its_own_in_one_report():
    found = _problems({"min_replicas": "-1", "max_replicas": "-1", "replicas": "-1",
                       "storage_gb": "10", "max_storage_gb": "-5",
                       "cpu_target_percent": "5", "base_image": ""})  # fmt: skip
    named = [p.split(":")[1] for p in found]
    for key in ("replicas", "min_replicas", "max_replicas", "storage_gb", "max_storage_gb",
                "cpu_target_percent", "base_image"):
        assert named.count(key) == 1, (key, found)
    # A bad storage_gb is not the yardstick for max_storage_gb: its own range is reported.
    assert any(p.startswith("prodstack:max_storage_gb: -5") and "20-65536" in p
               for p in found), found


def test_a_valid_key_is_not_blamed_for_its_neighbours_error():
    found = _problems({"replicas": "3", "min_replicas": "2", "max_replicas": "0"})
    assert [p.split(":")[1] for p in found] == ["max_replicas"], found


# ---- 14: ECS waits for what its execution role may do -------------------------------------


def test_service_and_task_definitions_wait_for_execution_role_grants(manifests):
    from prodstack_cloud_harness import Manifest

    for data in manifests.values():
        manifest = Manifest(data)
        options = data["resource_options"]
        dependents = _urns(manifest, TASK) + _urns(manifest, SERVICE)
        assert len(dependents) == 3
        for urn in dependents:
            for grant in EXECUTION_GRANTS:
                assert grant in options[urn]["dependencies"], (urn, grant)


# ---- 5: the image tag follows exactly what the build depends on ---------------------------


def _context(root, ignore: str = "") -> None:
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (root / "a.py").write_text("x = 1\n")
    (root / "wheelhouse").mkdir()
    (root / "wheelhouse" / ".gitkeep").write_text("")
    if ignore:
        (root / ".dockerignore").write_text(ignore)


def test_image_tag_context_is_exactly_what_docker_sends(tmp_path):
    """The hashed files are the members of the Docker SDK's own build-context archive."""
    import tarfile

    from docker.utils.build import tar

    from components.registry import context_files

    _context(tmp_path, "# caches\n**/__pycache__\n*.log\n!keep.log\ncache/\nwheelhouse/*\n"
                       "!wheelhouse/.gitkeep\n")  # fmt: skip
    for extra in ("__pycache__/a.pyc", "sub/__pycache__/b.pyc", "run.log", "keep.log",
                  "cache/x", "wheelhouse/x-1.0-py3-none-any.whl", "sub/c.py"):
        (tmp_path / extra).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / extra).write_text(extra)
    patterns = [line for line in (tmp_path / ".dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    with tarfile.open(fileobj=tar(str(tmp_path), exclude=patterns)) as archive:
        sent = sorted(m.name for m in archive.getmembers() if m.isfile())
    assert context_files(tmp_path) == sent
    assert "keep.log" in sent and "wheelhouse/.gitkeep" in sent and "sub/c.py" in sent
    assert not {"run.log", "cache/x", "wheelhouse/x-1.0-py3-none-any.whl"} & set(sent)


def test_image_tag_changes_with_base_image_platform_and_every_sent_file(tmp_path):
    """ECR tags are immutable: a new input under an old tag would be refused at push."""
    from components.registry import context_hash

    _context(tmp_path, "**/__pycache__\n")
    args = {"BASE_IMAGE": "python:3.11-slim-bookworm", "SBOM_DIGEST": "sha256:00"}
    tag = context_hash(tmp_path, build_args=args, platform="linux/amd64")
    assert tag == context_hash(tmp_path, build_args=dict(args), platform="linux/amd64")
    changed = [
        context_hash(tmp_path, build_args=args | {"BASE_IMAGE": "python:3.12-slim-bookworm"},
                     platform="linux/amd64"),
        context_hash(tmp_path, build_args=args, platform="linux/arm64"),
        context_hash(tmp_path, build_args=args | {"SBOM_DIGEST": "sha256:01"},
                     platform="linux/amd64"),
    ]
    assert tag not in changed and len(set(changed)) == 3
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"never sent")
    assert context_hash(tmp_path, build_args=args, platform="linux/amd64") == tag
    # Docker sends what .dockerignore leaves in, a wheelhouse included.
    (tmp_path / "wheelhouse" / "x-1.0-py3-none-any.whl").write_bytes(b"sent")
    assert context_hash(tmp_path, build_args=args, platform="linux/amd64") != tag


# ---- 11: one validation record per validation name ---------------------------------------


def test_each_acm_validation_name_has_exactly_one_route53_record(prod):
    """ACM gives a name one validation CNAME in every Region; two records owning it
    would delete it when either certificate is replaced."""
    certificates = prod.inputs("acm/certificate:Certificate")
    assert len(certificates) == 2  # the ALB's (stack Region) and the CDN's (us-east-1)
    names = {n for c in certificates
             for n in [c["domainName"], *(c.get("subjectAlternativeNames") or [])]}
    records = [r for r in prod.inputs("route53/record:Record") if r["type"] == "CNAME"]
    record_names = [r["name"] for r in records]
    assert len(record_names) == len(set(record_names)) == len(names), record_names
    validations = prod.inputs("acm/certificateValidation:CertificateValidation")
    for validation in validations:
        assert set(validation["validationRecordFqdns"]) <= set(record_names)
    # Both certificates wait for the shared name's one record.
    shared = [n for n in record_names if n.endswith(".api.example.com.") and "origin" not in n]
    assert all(shared[0] in v["validationRecordFqdns"] for v in validations)


# ---- 12: WAF and app agree on the body size -----------------------------------------------


# AWS WAF developer guide: body inspection is fixed at 8 KB for an ALB and 16 KB by default
# for CloudFront; the common rule set's SizeRestrictions_BODY blocks bodies over 8 KB.
BODY_INSPECTION_LIMITS = {"REGIONAL": 8 * 1024, "CLOUDFRONT": 16 * 1024}
COMMON_RULE_SET_BODY_LIMIT = 8 * 1024


def _waf_body_cap(acl: dict) -> int:
    """Largest body the web ACL lets through, from its rules."""
    caps = []
    for rule in acl["rules"]:
        statement = rule["statement"]
        group = statement.get("managedRuleGroupStatement")
        if group and group["name"] == "AWSManagedRulesCommonRuleSet":
            overridden = {o["name"]: o["actionToUse"]
                          for o in group.get("ruleActionOverrides") or []}
            if "block" in overridden.get("SizeRestrictions_BODY", {"block": {}}):
                caps.append(COMMON_RULE_SET_BODY_LIMIT)
        size = statement.get("sizeConstraintStatement")
        if size and "body" in size["fieldToMatch"] and "block" in rule.get("action", {}):
            assert size["comparisonOperator"] == "GT"
            # Only a body WAF sees whole is measured; beyond that oversize handling decides.
            assert size["size"] <= BODY_INSPECTION_LIMITS[acl["scope"]]
            assert size["fieldToMatch"]["body"]["oversizeHandling"] == "MATCH"
            caps.append(size["size"])
    assert caps, "no body-size rule blocks"
    return min(caps)


def test_waf_blocks_exactly_the_bodies_the_app_refuses(both):
    for manifest in both:
        env = _api_env(manifest)
        app_limit = load_settings(env).max_body_bytes
        assert _waf_body_cap(manifest.one("wafv2/webAcl:WebAcl")) == app_limit, manifest



def test_waf_policy_lets_the_body_rule_count_only_where_the_acl_blocks_large_bodies(prod):
    """The one override the pack accepts is the 8 KB body rule, with the ACL's own
    body-size rule blocking instead; any other counted rule, or no own rule, is refused."""
    import copy

    from policies.edge import waf_enforces

    acl = prod.one("wafv2/webAcl:WebAcl")
    waf = "aws:wafv2/webAcl:WebAcl"
    assert check_resource(waf_enforces, waf, acl) == []
    without_own_rule = copy.deepcopy(acl)
    without_own_rule["rules"] = [r for r in acl["rules"] if r["name"] != "body-size-limit"]
    assert check_resource(waf_enforces, waf, without_own_rule)
    other_rule_counts = copy.deepcopy(acl)
    common = next(r for r in other_rule_counts["rules"] if r["name"] == "aws-common")
    common["statement"]["managedRuleGroupStatement"]["ruleActionOverrides"].append(
        {"name": "CrossSiteScripting_BODY", "actionToUse": {"count": {}}})
    assert any("CrossSiteScripting_BODY" in v
               for v in check_resource(waf_enforces, waf, other_rule_counts))


# ---- 13: free storage as a percentage ---------------------------------------------------


def test_free_storage_alarm_is_a_percentage_that_a_routine_autoscale_never_fires(both):
    """Storage autoscaling acts at 10 % free of the allocation (at least storage_gb);
    the alarm is a percentage of the ceiling, below that point, through metric math."""
    from components.observability import GIB

    for manifest in both:
        db = manifest.one("rds/instance:Instance")
        (alarm,) = [a for a in manifest.inputs("cloudwatch/metricAlarm:MetricAlarm")
                    if a.get("metricName") == "FreeStorageSpace"
                    or any((q.get("metric") or {}).get("metricName") == "FreeStorageSpace"
                           for q in a.get("metricQueries") or [])]
        assert "metricName" not in alarm and "period" not in alarm, alarm
        queries = {q["id"]: q for q in alarm["metricQueries"]}
        free = next(q for q in queries.values() if q.get("metric"))
        assert free["metric"]["metricName"] == "FreeStorageSpace"
        (result,) = [q for q in queries.values() if q.get("returnData")]
        ceiling = db["maxAllocatedStorage"] * GIB
        assert result["expression"].replace(" ", "") == f"100*{free['id']}/{ceiling}"
        assert alarm["comparisonOperator"] == "LessThanThreshold"
        # Below the first autoscaling point (10 % of the initial allocation).
        trigger_percent = 10 * db["allocatedStorage"] / db["maxAllocatedStorage"]
        assert 0 < alarm["threshold"] < trigger_percent, (alarm["threshold"], trigger_percent)
