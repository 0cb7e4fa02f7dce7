"""Customer-managed KMS keys (``kms_keys``) and the origin secret's rotation, on the real
program: what each key encrypts, who each key policy lets use it, and what the ALB accepts
and CloudFront sends at each step of a rotation."""

from __future__ import annotations

import json

import pytest
from prodstack_cloud_harness import Manifest, run_all, run_harness

from prodstack.cloud_plan import ACCOUNT

KEY = "aws:kms/key:Key::prodstack-keys-"
REGION = "eu-west-1"


def _policy(m: Manifest, name: str) -> list[dict]:
    return json.loads(m.one("kms/key:Key", name)["policy"])["Statement"]


def _key_of(m: Manifest, name: str, field: str = "kmsKeyId") -> list[str]:
    """The key resources ``name``'s ``field`` comes from."""
    return m.named(name)["property_dependencies"].get(field, [])


# ---- what the keys encrypt --------------------------------------------------------------


def test_prod_encrypts_logs_secrets_cache_and_insights_with_its_own_keys(prod: Manifest) -> None:
    assert {k["name"] for k in prod.all("kms/key:Key") if k["name"].startswith("prodstack-keys")} \
        == {"prodstack-keys-logs", "prodstack-keys-edge-logs", "prodstack-keys-secrets",
            "prodstack-keys-data"}
    expected = {
        # The API's and PostgreSQL's logs in the stack's Region; the CloudFront-scoped
        # WAF logs in us-east-1, with the key there (a log group uses a key of its Region).
        "prodstack-api-logs": f"{KEY}logs",
        "prodstack-db-log-postgresql": f"{KEY}logs",
        "prodstack-db-log-upgrade": f"{KEY}logs",
        "prodstack-db-log-iam-db-auth-error": f"{KEY}logs",
        "prodstack-waf-logs": f"{KEY}edge-logs",
        "prodstack-api-token": f"{KEY}secrets",
        "prodstack-cache-auth-secret": f"{KEY}secrets",
        "prodstack-cache-group": f"{KEY}data",
    }
    for name, key in expected.items():
        assert _key_of(prod, name) == [key], name
    assert _key_of(prod, "prodstack-db-instance", "performanceInsightsKmsKeyId") == [f"{KEY}data"]
    assert prod.one("kms/key:Key", "prodstack-keys-edge-logs")["region"] == "us-east-1"
    assert prod.one("cloudwatch/logGroup:LogGroup", "prodstack-waf-logs")["region"] == "us-east-1"
    assert "region" not in prod.one("kms/key:Key", "prodstack-keys-logs")
    for key in ("logs", "edge-logs", "secrets", "data"):
        inputs = prod.one("kms/key:Key", f"prodstack-keys-{key}")
        assert inputs["enableKeyRotation"] is True and inputs["deletionWindowInDays"] == 30


def test_dev_keeps_the_aws_managed_keys(dev: Manifest) -> None:
    assert not [k for k in dev.all("kms/key:Key") if k["name"].startswith("prodstack-keys")]
    for kind in ("cloudwatch/logGroup:LogGroup", "secretsmanager/secret:Secret",
                 "elasticache/replicationGroup:ReplicationGroup"):
        assert all("kmsKeyId" not in i for i in dev.inputs(kind)), kind
    assert "performanceInsightsKmsKeyId" not in dev.one("rds/instance:Instance")
    assert dev.one("elasticache/replicationGroup:ReplicationGroup")[
        "replicationGroupId"] == "prodstack-dev"


def test_turning_keys_on_moves_the_cache_to_a_new_id_beside_the_old_one(
    prod: Manifest, dev: Manifest
) -> None:
    # kmsKeyId is force-new on a replication group: the group is replaced, and under the
    # same ID the new one could not be created while the old one exists.
    assert prod.one("elasticache/replicationGroup:ReplicationGroup")[
        "replicationGroupId"] == "prodstack-prod-cmk"
    options = prod.data["resource_options"][prod.named("prodstack-cache-group")["urn"]]
    assert options["delete_before_replace"] is False
    # The alarms follow the new member clusters.
    alarm = prod.one("cloudwatch/metricAlarm:MetricAlarm", "prodstack-prod-obs-cache-memory-0")
    assert alarm["dimensions"] == {"CacheClusterId": "prodstack-prod-cmk-001"}


def test_performance_insights_keeps_the_key_its_instance_was_created_with(
    prod: Manifest,
) -> None:
    # AWS refuses to change the key of an instance that has one ("You can't change your
    # Performance Insights KMS key"): an existing instance is never sent the new key.
    db = prod.named("prodstack-db-instance")
    assert prod.data["resource_options"][db["urn"]]["ignore_changes"] == [
        "performanceInsightsKmsKeyId"]
    assert db["inputs"]["performanceInsightsEnabled"] is True


# ---- who may use each key ---------------------------------------------------------------


def test_every_key_is_administered_by_the_account(prod: Manifest) -> None:
    for key in ("logs", "edge-logs", "secrets", "data"):
        admin = _policy(prod, f"prodstack-keys-{key}")[0]
        assert admin == {"Sid": "AccountAdmin", "Effect": "Allow",
                         "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                         "Action": "kms:*", "Resource": "*"}, key


def test_logs_keys_serve_only_this_stacks_log_groups(prod: Manifest) -> None:
    for key, region, groups in (
        ("logs", REGION, ["/ecs/prodstack-prod", "/aws/rds/instance/prodstack-prod/*",
                          "/aws/rds/instance/prodstack-prod-r*/*"]),
        ("edge-logs", "us-east-1", ["aws-waf-logs-prodstack-*"]),
    ):
        statements = _policy(prod, f"prodstack-keys-{key}")
        assert [s["Sid"] for s in statements] == ["AccountAdmin", "CloudWatchLogs"]
        logs = statements[1]
        assert logs["Principal"] == {"Service": f"logs.{region}.amazonaws.com"}
        assert logs["Condition"] == {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": [
            f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{g}" for g in groups]}}
    # Every log group the key encrypts is one its policy names.
    names = {n: prod.one("cloudwatch/logGroup:LogGroup", n).get("name")
             for n in ("prodstack-api-logs", "prodstack-db-log-postgresql")}
    assert names == {"prodstack-api-logs": "/ecs/prodstack-prod",
                     "prodstack-db-log-postgresql": "/aws/rds/instance/prodstack-prod/postgresql"}
    assert prod.one("cloudwatch/logGroup:LogGroup", "prodstack-waf-logs")[
        "namePrefix"] == "aws-waf-logs-prodstack-"


def test_secrets_key_lets_only_the_execution_role_decrypt_through_secrets_manager(
    prod: Manifest,
) -> None:
    statements = _policy(prod, "prodstack-keys-secrets")
    assert [s["Sid"] for s in statements] == ["AccountAdmin", "SecretReaders"]
    readers = statements[1]
    assert readers["Action"] == ["kms:Decrypt"]
    assert readers["Condition"] == {"StringEquals": {
        "kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}}
    # The principal is the ECS execution role, the one role that reads the secrets.
    role = prod.named("prodstack-api-execution-role")
    assert role["urn"] in prod.named("prodstack-keys-secrets")["property_dependencies"]["policy"]
    # The data key serves ElastiCache and RDS through the grants they create: no one else.
    assert [s["Sid"] for s in _policy(prod, "prodstack-keys-data")] == ["AccountAdmin"]


# ---- rotating the origin secret ---------------------------------------------------------

RULES = ("prodstack-lb-production", "prodstack-lb-test")
SECRET = "random:index/randomPassword:RandomPassword::prodstack-origin-verify"


def _accepted(m: Manifest, rule: str) -> tuple[list[str], set[str]]:
    """The X-Origin-Verify values ``rule`` accepts, and the secrets they come from."""
    record = m.named(rule)
    (values,) = [c["httpHeader"]["values"] for c in record["inputs"]["conditions"]
                 if c["httpHeader"]["httpHeaderName"] == "X-Origin-Verify"]
    sources = {d for d in record["property_dependencies"]["conditions"]
               if d.startswith(SECRET)}
    return values, sources


def _sent(m: Manifest) -> set[str]:
    deps = m.named("prodstack-cdn-distribution")["property_dependencies"]["origins"]
    return {d for d in deps if d.startswith(SECRET)}


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    out = tmp_path_factory.mktemp("rotation") / "rotating.json"
    m = Manifest(run_harness("prod", out, "--set", "origin_secret_version=2"))
    assert m.data["exit_code"] == 0, m.data["stderr"]
    return m


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    out = tmp_path_factory.mktemp("rotation") / "rotated.json"
    m = Manifest(run_harness("prod", out, "--set", "origin_secret_version=2",
                             "--set", "origin_secret_retired=1"))
    assert m.data["exit_code"] == 0, m.data["stderr"]
    return m


def test_origin_secret_rotation_accepts_both_values_until_the_old_one_is_retired(
    prod: Manifest, rotating: Manifest, rotated: Manifest,
) -> None:
    # Before: one value, the one CloudFront sends (deployed under its original name).
    for rule in RULES:
        assert _accepted(prod, rule) == (["[secret]"], {SECRET})
    assert _sent(prod) == {SECRET}
    # Step 1 (origin_secret_version: 2): CloudFront sends the new value; the ALB takes
    # either, so edges still sending the old one while the distribution deploys pass.
    for rule in RULES:
        assert _accepted(rotating, rule) == (["[secret]", "[secret]"],
                                             {SECRET, f"{SECRET}-v2"})
    assert _sent(rotating) == {f"{SECRET}-v2"}
    assert rotating.one("randomPassword:RandomPassword", "prodstack-origin-verify-v2") == {
        "length": 40, "special": False}
    # Step 2 (origin_secret_retired: 1): only the new value; the old one is deleted.
    for rule in RULES:
        assert _accepted(rotated, rule) == (["[secret]"], {f"{SECRET}-v2"})
    assert _sent(rotated) == {f"{SECRET}-v2"}
    assert "prodstack-origin-verify" not in {
        r["name"] for r in rotated.all("randomPassword:RandomPassword")}


def test_cloudfront_changes_its_header_only_after_the_alb_accepts_it(rotating: Manifest) -> None:
    deps = rotating.data["resource_options"][
        rotating.named("prodstack-cdn-distribution")["urn"]]["dependencies"]
    for rule in RULES:
        assert rotating.named(rule)["urn"] in deps


def test_rotation_passes_every_policy(rotating: Manifest, rotated: Manifest) -> None:
    assert run_all(rotating) == []
    assert run_all(rotated) == []



def test_without_a_cdn_the_waf_logs_use_the_regional_logs_key(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A REGIONAL web ACL logs in the stack's Region: its group joins the logs key there,
    # and no key is made in us-east-1.
    out = tmp_path_factory.mktemp("dev-keys") / "dev-keys.json"
    m = Manifest(run_harness("dev", out, "--set", "kms_keys=true"))
    assert m.data["exit_code"] == 0, m.data["stderr"]
    assert "prodstack-keys-edge-logs" not in {k["name"] for k in m.all("kms/key:Key")}
    assert _key_of(m, "prodstack-waf-logs") == [f"{KEY}logs"]
    assert "region" not in m.one("cloudwatch/logGroup:LogGroup", "prodstack-waf-logs")
    (logs,) = [s for s in _policy(m, "prodstack-keys-logs") if s["Sid"] == "CloudWatchLogs"]
    assert (f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:aws-waf-logs-prodstack-*"
            in logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"])
    assert m.one("elasticache/replicationGroup:ReplicationGroup")[
        "replicationGroupId"] == "prodstack-dev-cmk"
    assert run_all(m) == []
