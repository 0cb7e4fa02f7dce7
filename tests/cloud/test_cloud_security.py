"""Security defaults (AWS Foundational Security Best Practices and beyond), one named test each.

Each test reads what the real program registers under mocks, so weakening the default in
a component or a stack file turns the test of that name red (not only a snapshot).
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase

import pytest
from prodstack_cloud_harness import REPO, Manifest

from components.cdn import ACCESS_LOG_TYPE
from components.database import ENHANCED_MONITORING_POLICY_ARN, DatabaseArgs
from components.load_balancer import ENCODED_PATHS, INTERNAL_PATHS
from prodstack.cloud_plan import ACCOUNT

NGINX_SITE = REPO / "pyinfra" / "templates" / "nginx-site.j2.conf"


def _statements(policy: str) -> list[dict]:
    return json.loads(policy)["Statement"]


def _service_principal(statement: dict) -> str | None:
    principal = statement.get("Principal")
    return principal.get("Service") if isinstance(principal, dict) else None


# Services whose documentation does not say they send aws:SourceArn when they assume a
# role: the ARN is tested IfExists (a missing key must not stop backups), the account
# always (components/backup.py).
SOURCE_ARN_IF_EXISTS = {"backup.amazonaws.com"}


def _assert_confused_deputy_guard(statement: dict, where: str) -> None:
    condition = statement.get("Condition") or {}
    assert condition.get("StringEquals", {}).get("aws:SourceAccount") == ACCOUNT, where
    operator = ("ArnLikeIfExists" if statement["Principal"].get("Service")
                in SOURCE_ARN_IF_EXISTS else "ArnLike")
    source_arn = condition.get(operator, {}).get("aws:SourceArn", "")
    # Scoped to this account's resources, never a bare wildcard.
    assert re.fullmatch(rf"arn:aws:[a-z0-9-]+:[a-z0-9-]+:{ACCOUNT}:.+", source_arn), where


# ---- confused deputy -----------------------------------------------------------------


# Roles whose trust AWS documents with no condition and no word of aws:SourceArn or
# aws:SourceAccount (policies/iam.py DOCUMENTED_TRUST cites the pages): ECS's role for
# blue/green load balancing, and RDS Proxy's role.
DOCUMENTED_TRUST = {"prodstack-api-ecs-lb-role": "ecs.amazonaws.com",
                    "prodstack-db-proxy-role": "rds.amazonaws.com"}


def test_service_role_trust_policies_name_source_account_and_arn(both: list[Manifest]) -> None:
    for m in both:
        roles = [r for r in m.all("iam/role:Role") if r["name"] not in DOCUMENTED_TRUST]
        assert roles
        for role in roles:
            for statement in _statements(role["inputs"]["assumeRolePolicy"]):
                if _service_principal(statement):
                    _assert_confused_deputy_guard(statement, role["name"])


def test_documented_roles_keep_aws_trust_policy_without_conditions(
    prod: Manifest, prod_proxy: Manifest
) -> None:
    # A condition on a key the service does not send fails every assumption: every
    # blue/green deployment (ECS), every proxied connection (RDS Proxy).
    seen = set()
    for m in (prod, prod_proxy):
        for role in m.all("iam/role:Role"):
            if role["name"] not in DOCUMENTED_TRUST:
                continue
            seen.add(role["name"])
            assert _statements(role["inputs"]["assumeRolePolicy"]) == [{
                "Effect": "Allow", "Principal": {"Service": DOCUMENTED_TRUST[role["name"]]},
                "Action": "sts:AssumeRole"}], role["name"]
    assert seen == set(DOCUMENTED_TRUST)


def test_kms_key_service_grants_name_source_account_and_arn(both: list[Manifest]) -> None:
    for m in both:
        keys = m.all("kms/key:Key")
        # The alarm topic's key grants services; the backup vault's grants none. The logs
        # keys (kms_keys: prod) grant CloudWatch Logs, pinned the way AWS documents for it:
        # this account's log groups in the encryption context (test_cloud_keys.py).
        granting = [k["name"] for k in keys if any(
            _service_principal(s) for s in _statements(k["inputs"]["policy"]))]
        logs_keys = {"prod": ["prodstack-keys-logs", "prodstack-keys-edge-logs"], "dev": []}
        assert sorted(granting) == sorted(
            [f"prodstack-{m.data['stack']}-obs-key", *logs_keys[m.data["stack"]]])
        for name in logs_keys[m.data["stack"]]:
            (grant,) = [s for s in _statements(m.one("kms/key:Key", name)["policy"])
                        if _service_principal(s)]
            arns = grant["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
            assert arns and all(re.fullmatch(
                rf"arn:aws:logs:[a-z0-9-]+:{ACCOUNT}:log-group:[^*].*", a) for a in arns), name
        key = next(k for k in keys if k["name"].endswith("-obs-key"))
        service_grants = [s for s in _statements(key["inputs"]["policy"])
                          if _service_principal(s)]  # fmt: skip
        assert service_grants
        for statement in service_grants:
            _assert_confused_deputy_guard(statement, key["name"])
            # This account's alarms, its Prometheus workspaces (their alerts), its
            # EventBridge rules and its RDS resources (data-tier events).
            scope = {"cloudwatch.amazonaws.com": ":alarm:", "aps.amazonaws.com": ":workspace/",
                     "events.amazonaws.com": ":rule/", "events.rds.amazonaws.com": ":"}
            service = statement["Principal"]["Service"]
            assert scope[service] in statement["Condition"]["ArnLike"]["aws:SourceArn"]


# ---- RDS: Enhanced Monitoring (RDS.6) and IAM authentication (RDS.10) --------------------


def test_rds_enhanced_monitoring_with_its_role(both: list[Manifest]) -> None:
    for m in both:
        db = m.named("prodstack-db-instance")
        assert db["inputs"]["monitoringInterval"] == 60
        role = m.named("prodstack-db-monitoring-role")
        assert db["inputs"]["monitoringRoleArn"]
        assert db["property_dependencies"]["monitoringRoleArn"] == [
            "aws:iam/role:Role::prodstack-db-monitoring-role"]
        (trust,) = _statements(role["inputs"]["assumeRolePolicy"])
        assert trust["Principal"] == {"Service": "monitoring.rds.amazonaws.com"}
        source = trust["Condition"]["ArnLike"]["aws:SourceArn"]
        assert source.endswith(f":db:{db['inputs']['identifier']}")
        attachment = m.named("prodstack-db-monitoring-role-managed")["inputs"]
        assert attachment["policyArn"] == ENHANCED_MONITORING_POLICY_ARN
        # The instance waits for the policy, or its first metrics are refused.
        options = m.data["resource_options"][db["urn"]]
        assert ("aws:iam/rolePolicyAttachment:RolePolicyAttachment::"
                "prodstack-db-monitoring-role-managed") in options["dependencies"]


def test_rds_iam_database_authentication_on(both: list[Manifest]) -> None:
    for m in both:
        db = m.one("rds/instance:Instance")
        assert db["iamDatabaseAuthenticationEnabled"] is True
        assert "iam-db-auth-error" in db["enabledCloudwatchLogsExports"]


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"monitoring_interval_seconds": 7}, "monitoring_interval_seconds=7"),
        ({"app_username": "prodstack"}, "app_username='prodstack'"),
        ({"app_username": "App-User"}, "app_username='App-User'"),
    ],
)
def test_database_args_refuse_bad_security_values(overrides: dict, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        DatabaseArgs(subnet_ids=[], security_group_id="sg", identifier="prodstack-x",
                     **overrides)  # fmt: skip


# ---- internal paths not reachable through the ALB ------------------------------------


def _alb_blocks(path: str, patterns: tuple[str, ...]) -> bool:
    # ALB path patterns: case-sensitive, `*` any run, `?` one character
    # (rule-condition-types.html); fnmatchcase has the same two wildcards.
    return any(fnmatchcase(path, p) for p in patterns)


@pytest.mark.parametrize(
    "path, blocked",
    [
        ("/metrics", True), ("/metrics/", True), ("/health", True), ("/openapi.json", True),
        ("/%6Detrics", True), ("/health%2F", True), ("/openapi%2Ejson", True),
        ("/health/live", False), ("/health/ready", False), ("/api/alerts", False),
        ("/api/alerts/0190d7a5-4e1c-7c1a-9d2e-0123456789ab", False),
    ],
)
def test_internal_path_patterns(path: str, blocked: bool) -> None:
    assert _alb_blocks(path, INTERNAL_PATHS + ENCODED_PATHS) is blocked


def test_internal_paths_answer_403_before_any_forward(both: list[Manifest]) -> None:
    for m, serving in zip(both, ("prodstack-lb-https", "prodstack-lb-http"), strict=True):
        listener_urn = f"aws:lb/listener:Listener::{serving}"
        by_name = {r["name"]: r for r in m.all("lb/listenerRule:ListenerRule")}
        for name in ("prodstack-lb-internal-paths", "prodstack-lb-encoded-paths"):
            assert by_name[name]["property_dependencies"]["listenerArn"] == [listener_urn]
        rules = {name: r["inputs"] for name, r in by_name.items()}
        blocks = [rules["prodstack-lb-internal-paths"], rules["prodstack-lb-encoded-paths"]]
        assert blocks[0]["conditions"] == [{"pathPattern": {"values": list(INTERNAL_PATHS)}}]
        assert blocks[1]["conditions"] == [{"pathPattern": {"values": list(ENCODED_PATHS)}}]
        forwards = [r for r in rules.values() if r["actions"][0]["type"] == "forward"]
        for block in blocks:
            (action,) = block["actions"]
            assert action["type"] == "fixed-response"
            assert action["fixedResponse"]["statusCode"] == "403"
            assert all(block["priority"] < f["priority"] for f in forwards)
        # ALB limits: 3 values per condition, 5 wildcards per rule.
        for block in blocks:
            (values,) = [c["pathPattern"]["values"] for c in block["conditions"]]
            assert len(values) <= 3 and "".join(values).count("*") <= 5


def test_every_internal_route_of_the_app_is_blocked() -> None:
    from app.api.routes import health
    from app.api.routes import metrics as metrics_routes

    public = {"/health/live", "/health/ready"}
    internal = {r.path for r in [*health.routes, *metrics_routes.routes]} - public
    internal.add("/openapi.json")
    assert internal == {"/health", "/metrics", "/openapi.json"}
    for path in internal:
        assert _alb_blocks(path, INTERNAL_PATHS), path
    for path in public:
        assert not _alb_blocks(path, INTERNAL_PATHS + ENCODED_PATHS), path


# ---- CloudFront: security headers and standard logging v2 (CloudFront.5) --------------


def _nginx_headers() -> dict[str, str]:
    text = NGINX_SITE.read_text()
    return {
        name.lower(): value.strip('"')
        for name, value in re.findall(r'add_header\s+(\S+)\s+("[^"]*"|\S+)\s+always;', text)
    }


def test_cloudfront_security_headers_match_the_vps_nginx(prod: Manifest) -> None:
    nginx = _nginx_headers()
    policy = prod.named("prodstack-cdn-security-headers")["inputs"]["securityHeadersConfig"]
    hsts = policy["strictTransportSecurity"]
    sent = f"max-age={hsts['accessControlMaxAgeSec']}"
    if hsts.get("includeSubdomains"):
        sent += "; includeSubDomains"
    if hsts.get("preload"):
        sent += "; preload"
    assert sent == nginx["strict-transport-security"]
    assert policy["frameOptions"]["frameOption"] == nginx["x-frame-options"]
    assert policy["referrerPolicy"]["referrerPolicy"] == nginx["referrer-policy"]
    assert nginx["x-content-type-options"] == "nosniff" and "contentTypeOptions" in policy
    # The edge's values win over whatever the origin sends.
    assert all(header["override"] is True for header in policy.values())


def test_every_cloudfront_behaviour_sends_the_security_headers(prod: Manifest) -> None:
    distribution = prod.named("prodstack-cdn-distribution")
    behaviours = [distribution["inputs"]["defaultCacheBehavior"],
                  *distribution["inputs"]["orderedCacheBehaviors"]]  # fmt: skip
    policy_urn = "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy::" \
                 "prodstack-cdn-security-headers"  # fmt: skip
    assert all(b.get("responseHeadersPolicyId") for b in behaviours)
    deps = distribution["property_dependencies"]
    assert policy_urn in deps["defaultCacheBehavior"]
    assert policy_urn in deps["orderedCacheBehaviors"]


def test_cloudfront_standard_logging_v2_in_us_east_1(prod: Manifest) -> None:
    source = prod.named("prodstack-cdn-log-source")
    destination = prod.named("prodstack-cdn-log-destination")
    delivery = prod.named("prodstack-cdn-log-delivery")
    group = prod.named("prodstack-cdn-access-logs")
    for r in (source, destination, delivery, group):
        # CloudFront's delivery source exists only in us-east-1, and a CloudWatch Logs
        # destination must be in the source's Region (CloudFront developer guide,
        # standard-logging.html).
        assert r["inputs"]["region"] == "us-east-1", r["name"]
    assert source["inputs"]["logType"] == ACCESS_LOG_TYPE
    dist_urn = "aws:cloudfront/distribution:Distribution::prodstack-cdn-distribution"
    assert dist_urn in source["property_dependencies"]["resourceArn"]
    group_urn = "aws:cloudwatch/logGroup:LogGroup::prodstack-cdn-access-logs"
    assert group_urn in destination["property_dependencies"]["deliveryDestinationConfiguration"]
    assert group["inputs"]["retentionInDays"] > 0
    assert "aws:cloudwatch/logDeliverySource:LogDeliverySource::prodstack-cdn-log-source" in (
        delivery["property_dependencies"]["deliverySourceName"])
    assert ("aws:cloudwatch/logDeliveryDestination:LogDeliveryDestination::"
            "prodstack-cdn-log-destination") in delivery["property_dependencies"][
                "deliveryDestinationArn"]  # fmt: skip


# ---- docs/cloud.md's FSBP table names real checks --------------------------------------


def test_fsbp_table_names_existing_tests() -> None:
    """Every `file.py::test_name` (and `::test_name` after it) the table cites exists."""
    doc = (REPO / "docs" / "cloud.md").read_text()
    table = doc[doc.index("## AWS Foundational Security Best Practices"):]
    table = table[:table.index("\n## ", 1)]
    cited: list[tuple[str, str]] = []
    for line in table.splitlines():
        current = None
        for file, name in re.findall(r"`(?:(test_\w+\.py))?::(test_\w+)`", line):
            current = file or current
            cited.append((current, name))
    assert len(cited) >= 8
    for file, name in cited:
        source = (REPO / "tests" / "cloud" / file).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{file}::{name}"
    for control in ("RDS.6", "RDS.10", "CloudFront.5", "CloudFront.1", "SecretsManager.1",
                    "SecretsManager.4"):  # fmt: skip
        assert f"| {control}" in table or f", {control}" in table, control


# ---- the API's own least-privilege role, IAM authentication --------------------------


def test_api_signs_in_as_its_own_role_and_only_migrate_holds_the_master_secret(
    both: list[Manifest],
) -> None:
    for m in both:
        db_secret = m.outputs["database_secret_arn"]
        for family in (f"prodstack-{m.data['stack']}", f"prodstack-{m.data['stack']}-migrate"):
            for name, c in m.containers(family).items():
                secrets = {s["name"]: s["valueFrom"] for s in c["secrets"]}
                if name == "metrics-collector":  # its config only (test_cloud_metrics.py)
                    assert not any(db_secret in v for v in secrets.values())
                    continue
                env = {e["name"]: e["value"] for e in c["environment"]}
                if name == "migrate":
                    assert secrets["DB_PASSWORD"] == f"{db_secret}:password::"
                    assert env["DB_APP_USER"] == "prodstack_app"
                    assert env["DB_APP_IAM"] == "true"
                else:
                    assert not any(db_secret in v for v in secrets.values())
                    assert env["DB_USER"] == "prodstack_app" and env["DB_IAM"] == "true"
                    assert env["AWS_REGION"] == "eu-west-1"


def test_task_role_may_connect_as_exactly_the_app_user(both: list[Manifest]) -> None:
    for m in both:
        grants = [r for r in m.all("iam/rolePolicy:RolePolicy")
                  if r["name"] == "prodstack-api-task-role-db-connect"]  # fmt: skip
        (grant,) = grants
        (statement,) = json.loads(grant["inputs"]["policy"])["Statement"]
        assert statement["Effect"] == "Allow" and statement["Action"] == "rds-db:connect"
        assert re.fullmatch(
            rf"arn:aws:rds-db:eu-west-1:{ACCOUNT}:dbuser:db-[A-Z0-9]+/prodstack_app",
            statement["Resource"],
        ), statement["Resource"]
        # Nothing else is granted to the task role but the metrics collector's remote
        # write to its one workspace (test_cloud_metrics.py checks that grant).
        task_role_policies = [r for r in m.all("iam/rolePolicy:RolePolicy")
                              if "task-role" in r["name"]]  # fmt: skip
        assert [r["name"] for r in task_role_policies if r not in grants] == [
            "prodstack-api-task-role-metrics"]
        assert not [r for r in m.all("iam/rolePolicyAttachment:RolePolicyAttachment")
                    if "task-role" in r["name"]]  # fmt: skip


# ---- security logs and the access-log bucket (Checkov's findings) ---------------------

SECURITY_LOG_GROUPS = ("prodstack-waf-logs", "prodstack-net-flow-logs-group",
                       "prodstack-db-log-iam-db-auth-error", "prodstack-cdn-access-logs")


def test_security_logs_are_kept_apart_from_the_application_logs(
    prod: Manifest, dev: Manifest
) -> None:
    # An intrusion found months later still has its WAF, VPC flow, IAM login failure and
    # CloudFront traces: prod keeps them a year, the application logs a month.
    for m, security, application in ((prod, 365, 30), (dev, 30, 7)):
        kept = {g["name"]: g["inputs"] for g in m.all("cloudwatch/logGroup:LogGroup")}
        tagged = {n for n, g in kept.items()
                  if g.get("tags", {}).get("prodstack:log-class") == "security"}
        assert tagged == set(SECURITY_LOG_GROUPS) & set(kept), m.data["stack"]
        assert tagged >= {"prodstack-waf-logs", "prodstack-db-log-iam-db-auth-error"}
        for name, group in kept.items():
            want = security if name in tagged else application
            assert group["retentionInDays"] == want, (m.data["stack"], name)
    # prod has every one of them: flow logs and the CDN are on.
    assert {g["name"] for g in prod.all("cloudwatch/logGroup:LogGroup")} >= set(
        SECURITY_LOG_GROUPS)


def test_alb_access_log_bucket_is_versioned_and_expires_noncurrent_versions(
    prod: Manifest,
) -> None:
    bucket = prod.named("prodstack-lb-logs")
    versioning = prod.named("prodstack-lb-logs-versioning")
    assert versioning["inputs"]["versioningConfiguration"] == {"status": "Enabled"}
    assert versioning["property_dependencies"]["bucket"] == [bucket["urn"]]
    lifecycle = prod.named("prodstack-lb-logs-lifecycle")
    (rule,) = lifecycle["inputs"]["rules"]
    assert rule["status"] == "Enabled" and rule["filter"] == {"prefix": ""}
    assert rule["expiration"] == {"days": 90}
    # A deleted or expired log stays recoverable 30 days, then goes for good.
    assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
    assert versioning["urn"] in prod.data["resource_options"][lifecycle["urn"]]["dependencies"]
