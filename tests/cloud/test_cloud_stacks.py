"""Invariants of the cloud profile, asserted on the resources the real program registers.

One test per secure default: weakening a default in a component or a stack file fails
the matching test here (and, for the policy-backed ones, test_cloud_policies too).
"""

from __future__ import annotations

import json

import pytest
from prodstack_cloud_harness import Manifest

from components.cache import AUTH_TOKEN_SPECIALS
from components.database import INSTANCE_MEMORY_GIB, tuned_parameters
from components.load_balancer import TLS13_POLICIES
from components.service import FARGATE_CPU_MEMORY

WORLD = "0.0.0.0/0"


def tags_env(inputs: dict) -> str | None:
    return (inputs.get("tags") or {}).get("prodstack:environment")


# ---- stack ---------------------------------------------------------------------------


def test_both_stacks_build_and_export_everything(both: list[Manifest]) -> None:
    for m in both:
        assert m.data["exit_code"] == 0
        assert set(m.outputs) >= {
            "url", "alb_dns_name", "database_endpoint", "cache_endpoint", "image",
            "cluster_name", "service_name", "dashboard_url", "migrate_task_definition",
        }
        assert all(v not in (None, "") for v in m.outputs.values()), m.outputs
    assert prodstack_url(both[0]) == "https://api.example.com"


def prodstack_url(m: Manifest) -> str:
    return m.outputs["url"]


def test_every_invoke_is_mocked_with_known_tokens(both: list[Manifest]) -> None:
    known = {
        "getAvailabilityZones", "getRegion", "getCallerIdentity", "getManagedPrefixList",
        "getAuthorizationToken",
    }
    for m in both:
        assert {i["token"].rsplit(":", 1)[-1] for i in m.invokes} <= known


def test_children_are_parented_and_prefixed(both: list[Manifest]) -> None:
    for m in both:
        components = {r["urn"]: r["name"] for r in m.resources if not r["custom"]}
        for r in m.resources:
            if r["parent"] and r["parent"] in components:
                assert r["name"].startswith(components[r["parent"]] + "-"), r["name"]
        # Everything but the API-token secret (a documented supporting resource) lives
        # in a component.
        orphans = {r["name"] for r in m.resources if r["custom"] and not r["parent"]}
        assert orphans <= {"prodstack-api-token", "prodstack-api-token-value"}, orphans


def test_component_type_tokens(prod: Manifest) -> None:
    tokens = {r["type"] for r in prod.resources if not r["custom"]}
    assert tokens == {
        "prodstack:network:Network", "prodstack:load_balancer:LoadBalancer",
        "prodstack:waf:WebAcl", "prodstack:database:Database", "prodstack:cache:Cache",
        "prodstack:registry:Registry", "prodstack:service:Service", "prodstack:cdn:Cdn",
        "prodstack:observability:Observability", "prodstack:metrics:Metrics",
        "prodstack:backup:Backup", "prodstack:keys:Keys",
    }


def test_taggable_resources_carry_the_environment(prod: Manifest) -> None:
    for r in prod.resources:
        if r["custom"] and "tags" in r["inputs"]:
            assert tags_env(r["inputs"]) == "prod", r["name"]


def test_no_plaintext_secret_in_manifest(prod: Manifest, dev: Manifest) -> None:
    from prodstack_cloud_harness import TEST_SECRETS

    token = TEST_SECRETS["prod"]["prodstack:api_token"]
    assert token not in json.dumps(prod.data)
    for m in (prod, dev):
        for version in m.inputs("secretVersion:SecretVersion"):
            assert version["secretString"] == "[secret]"
        assert m.one("replicationGroup:ReplicationGroup")["authToken"] == "[secret]"


def test_api_token_from_secret_config_in_prod_generated_in_dev(
    prod: Manifest, dev: Manifest
) -> None:
    assert not [r for r in prod.all("randomPassword:RandomPassword")
                if r["name"] == "prodstack-api-token"]
    generated = dev.one("randomPassword:RandomPassword", "prodstack-api-token")
    assert generated["length"] >= 32


# ---- network -------------------------------------------------------------------------


@pytest.mark.parametrize("stack, azs", [("prod", 3), ("dev", 2)])
def test_vpc_spans_azs_with_three_tiers(manifests: dict, stack: str, azs: int) -> None:
    m = Manifest(manifests[stack])
    subnets = m.inputs("ec2/subnet:Subnet")
    tiers = {}
    for s in subnets:
        tiers.setdefault(s["tags"]["prodstack:tier"], set()).add(s["availabilityZone"])
    assert set(tiers) == {"public", "private", "isolated"}
    assert all(len(zones) == azs for zones in tiers.values())
    assert all(s["mapPublicIpOnLaunch"] is False for s in subnets)


def test_nat_per_az_in_prod_single_in_dev(prod: Manifest, dev: Manifest) -> None:
    assert len(prod.all("ec2/natGateway:NatGateway")) == 3
    assert len(dev.all("ec2/natGateway:NatGateway")) == 1
    private_routes = [r for r in dev.inputs("ec2/route:Route") if "natGatewayId" in r]
    assert len(private_routes) == 2  # both private subnets share the single NAT


def test_isolated_subnets_have_no_route_out(both: list[Manifest]) -> None:
    for m in both:
        routes = m.all("ec2/route:Route")
        assert not [r for r in routes if "isolated" in r["name"]]
        endpoint = m.one("ec2/vpcEndpoint:VpcEndpoint")
        assert endpoint["vpcEndpointType"] == "Gateway"
        assert endpoint["serviceName"] == "com.amazonaws.eu-west-1.s3"


def test_flow_logs_in_prod(prod: Manifest, dev: Manifest) -> None:
    flow = prod.one("ec2/flowLog:FlowLog")
    assert flow["trafficType"] == "ALL"
    assert flow["logDestinationType"] == "cloud-watch-logs"
    assert not dev.all("ec2/flowLog:FlowLog")  # dev opts out explicitly


def test_default_security_group_is_locked_down(both: list[Manifest]) -> None:
    for m in both:
        sg = m.one("ec2/defaultSecurityGroup:DefaultSecurityGroup")
        assert sg.get("ingress", []) == [] and sg.get("egress", []) == []


def _rules_into(m: Manifest, group: str) -> list[dict]:
    return [
        r for r in m.all("securityGroupIngressRule:SecurityGroupIngressRule")
        if r["property_dependencies"]["securityGroupId"]
        == [f"aws:ec2/securityGroup:SecurityGroup::prodstack-net-{group}-sg"]
    ]


@pytest.mark.parametrize("group, source, port", [
    ("service", "alb", 8000), ("database", "service", 5432), ("cache", "service", 6379),
])
def test_security_group_chain_names_its_source(
    both: list[Manifest], group: str, source: str, port: int
) -> None:
    for m in both:
        rules = _rules_into(m, group)
        assert len(rules) == 1
        rule = rules[0]
        assert rule["property_dependencies"]["referencedSecurityGroupId"] == [
            f"aws:ec2/securityGroup:SecurityGroup::prodstack-net-{source}-sg"
        ]
        assert rule["inputs"]["fromPort"] == rule["inputs"]["toPort"] == port
        assert "cidrIpv4" not in rule["inputs"]


def test_only_the_alb_is_reachable_from_outside(both: list[Manifest]) -> None:
    for m in both:
        for r in m.all("securityGroupIngressRule:SecurityGroupIngressRule"):
            if "cidrIpv4" in r["inputs"] or "prefixListId" in r["inputs"]:
                assert r["name"].startswith("prodstack-net-alb-in-"), r["name"]


def test_prod_alb_ingress_only_from_cloudfront_prefix_list(prod: Manifest) -> None:
    rules = _rules_into(prod, "alb")
    assert [r["inputs"]["fromPort"] for r in rules] == [443]
    assert all("cidrIpv4" not in r["inputs"] and r["inputs"]["prefixListId"] for r in rules)
    assert prod.invoke_args("getManagedPrefixList") == [
        {"name": "com.amazonaws.global.cloudfront.origin-facing"}
    ]


def test_dev_alb_open_to_world_only_on_http(dev: Manifest) -> None:
    rules = _rules_into(dev, "alb")
    assert [(r["inputs"]["fromPort"], r["inputs"]["cidrIpv4"]) for r in rules] == [(80, WORLD)]


# ---- load balancer -------------------------------------------------------------------


def test_https_listener_uses_tls13_policy_and_http_redirects(prod: Manifest) -> None:
    https = prod.one("lb/listener:Listener", "prodstack-lb-https")
    assert https["protocol"] == "HTTPS" and https["port"] == 443
    assert https["sslPolicy"] in TLS13_POLICIES
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
    assert https["certificateArn"]
    http = prod.one("lb/listener:Listener", "prodstack-lb-http")
    assert http["defaultActions"] == [{"type": "redirect", "redirect": {
        "protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}]


def test_plain_http_only_without_domain_and_the_program_says_so(
    prod: Manifest, dev: Manifest
) -> None:
    listener = dev.one("lb/listener:Listener")
    assert listener["protocol"] == "HTTP"
    assert listener["tags"]["prodstack:plain-http"] == "no-domain"
    assert any("plain HTTP" in w for w in dev.warnings)
    assert not any("plain HTTP" in w for w in prod.warnings)


def test_alb_certificate_is_dns_validated_for_domain_and_origin(prod: Manifest) -> None:
    cert = prod.one("acm/certificate:Certificate", "prodstack-lb-cert")
    assert cert["domainName"] == "api.example.com"
    assert cert["subjectAlternativeNames"] == ["origin.api.example.com"]
    assert cert["validationMethod"] == "DNS"
    assert "region" not in cert  # same Region as the ALB
    records = [r for r in prod.all("route53/record:Record") if "lb-cert-validation" in r["name"]]
    assert len(records) == 2
    assert prod.one("certificateValidation:CertificateValidation", "prodstack-lb-cert-validated")


def test_alb_hardening(prod: Manifest, dev: Manifest) -> None:
    alb = prod.one("lb/loadBalancer:LoadBalancer")
    assert alb["dropInvalidHeaderFields"] is True
    assert alb["internal"] is False
    assert alb["enableDeletionProtection"] is True
    assert alb["accessLogs"]["enabled"] is True and alb["accessLogs"]["prefix"] == "alb"
    assert len(alb["subnets"]) == 3 and all("public" in s for s in alb["subnets"])
    assert dev.one("lb/loadBalancer:LoadBalancer")["dropInvalidHeaderFields"] is True


def test_access_log_bucket_is_private_sse_s3_and_tls_only(prod: Manifest) -> None:
    sse = prod.one(":BucketServerSideEncryptionConfiguration")
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    block = prod.one("bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(block[k] is True for k in (
        "blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    policy = json.loads(prod.one("s3/bucketPolicy:BucketPolicy")["policy"])
    principal = policy["Statement"][0]["Principal"]
    assert principal == {"AWS": "arn:aws:iam::156460612806:root"}  # eu-west-1 ELB account
    assert policy["Statement"][1]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_target_group_checks_liveness_and_drains_30s(both: list[Manifest]) -> None:
    for tg in [tg for m in both for tg in m.inputs("lb/targetGroup:TargetGroup")]:
        assert tg["healthCheck"]["path"] == "/health/live"
        assert tg["healthCheck"]["matcher"] == "200"
        assert tg["deregistrationDelay"] == 30
        assert tg["targetType"] == "ip" and tg["port"] == 8000


def test_origin_alias_points_at_alb_in_prod(prod: Manifest) -> None:
    alias = prod.one("route53/record:Record", "prodstack-lb-alias-0")
    assert alias["name"] == "origin.api.example.com" and alias["type"] == "A"


# ---- WAF -----------------------------------------------------------------------------


def _waf_rules(acl: dict) -> dict[str, dict]:
    return {r["name"]: r for r in acl["rules"]}


def test_waf_managed_groups_and_the_target_rate_limit(both: list[Manifest]) -> None:
    for m in both:
        acl = m.one("wafv2/webAcl:WebAcl")
        rules = _waf_rules(acl)
        groups = {r["statement"]["managedRuleGroupStatement"]["name"]
                  for r in rules.values() if "managedRuleGroupStatement" in r["statement"]}
        assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= groups
        for r in rules.values():
            assert ("action" in r) != ("overrideAction" in r)  # exactly one
            assert r["visibilityConfig"]["cloudwatchMetricsEnabled"] is True
        rate = rules["rate-limit-per-ip"]
        assert rate["action"] == {"block": {}}
        statement = rate["statement"]["rateBasedStatement"]
        assert statement == {"limit": 600, "evaluationWindowSec": 60, "aggregateKeyType": "IP"}
        assert len({r["priority"] for r in rules.values()}) == len(rules)


def test_waf_logs_redact_the_bearer_token(prod: Manifest, dev: Manifest) -> None:
    for m, region in ((prod, "us-east-1"), (dev, None)):
        logs = m.one("logGroup:LogGroup", "prodstack-waf-logs")
        assert logs["namePrefix"].startswith("aws-waf-logs-")
        assert logs["retentionInDays"] > 0 and logs.get("region") == region
        logging = m.one("webAclLoggingConfiguration:WebAclLoggingConfiguration")
        assert logging["redactedFields"] == [{"singleHeader": {"name": "authorization"}}]
        assert logging.get("region") == region


def test_waf_attached_to_cdn_in_prod_and_alb_in_dev(prod: Manifest, dev: Manifest) -> None:
    acl = prod.one("wafv2/webAcl:WebAcl")
    assert acl["scope"] == "CLOUDFRONT" and acl["region"] == "us-east-1"
    distribution = prod.one("cloudfront/distribution:Distribution")
    assert distribution["webAclId"].startswith("arn:aws:wafv2")
    assert not prod.all("webAclAssociation:WebAclAssociation")
    assert dev.one("wafv2/webAcl:WebAcl")["scope"] == "REGIONAL"
    association = dev.one("webAclAssociation:WebAclAssociation")
    assert association["resourceArn"].endswith("prodstack-lb-alb")


# ---- database ------------------------------------------------------------------------


def test_postgres_16_on_a_valid_class(both: list[Manifest]) -> None:
    for m in both:
        db = m.one("rds/instance:Instance")
        assert db["engine"] == "postgres"
        assert db["engineVersion"] == "16"  # the major; RDS picks the minor
        assert db["instanceClass"] in INSTANCE_MEMORY_GIB
        assert m.one("rds/parameterGroup:ParameterGroup")["family"] == "postgres16"


def test_database_isolated_and_private(both: list[Manifest]) -> None:
    for m in both:
        db = m.one("rds/instance:Instance")
        assert db["publiclyAccessible"] is False
        assert db["vpcSecurityGroupIds"] == ["prodstack-net-database-sg-id"]
        subnets = m.one("rds/subnetGroup:SubnetGroup")["subnetIds"]
        assert subnets and all("isolated" in s for s in subnets)


def test_database_storage_encrypted_gp3_autoscaling(both: list[Manifest]) -> None:
    for m in both:
        db = m.one("rds/instance:Instance")
        assert db["storageEncrypted"] is True
        assert db["storageType"] == "gp3"
        assert 20 <= db["allocatedStorage"] < 400  # gp3 without iops/throughput knobs
        assert "iops" not in db and "storageThroughput" not in db
        assert db["maxAllocatedStorage"] >= db["allocatedStorage"] * 1.1


def test_backup_retention_30_in_prod_7_in_dev(prod: Manifest, dev: Manifest) -> None:
    assert prod.one("rds/instance:Instance")["backupRetentionPeriod"] == 30
    assert dev.one("rds/instance:Instance")["backupRetentionPeriod"] == 7


def test_prod_database_multi_az_protected_with_final_snapshot(prod: Manifest) -> None:
    db = prod.one("rds/instance:Instance")
    assert db["multiAz"] is True
    assert db["deletionProtection"] is True
    assert db["skipFinalSnapshot"] is False
    snapshot = db["finalSnapshotIdentifier"]
    assert snapshot.startswith("prodstack-prod-final-") and "--" not in snapshot
    assert not snapshot.endswith("-") and snapshot[0].isalpha()


def test_dev_database_is_easy_to_destroy(dev: Manifest) -> None:
    db = dev.one("rds/instance:Instance")
    assert db["deletionProtection"] is False and db["skipFinalSnapshot"] is True
    assert db["multiAz"] is False


def test_performance_insights_and_log_exports(both: list[Manifest]) -> None:
    for m in both:
        db = m.one("rds/instance:Instance")
        assert db["performanceInsightsEnabled"] is True
        assert db["performanceInsightsRetentionPeriod"] == 7
        assert db["enabledCloudwatchLogsExports"] == ["postgresql", "upgrade",
                                                       "iam-db-auth-error"]
        groups = {g.get("name"): g for g in m.inputs("logGroup:LogGroup")}
        for log_type in ("postgresql", "upgrade", "iam-db-auth-error"):
            group = groups[f"/aws/rds/instance/{db['identifier']}/{log_type}"]
            assert group["retentionInDays"] > 0


def test_master_password_managed_by_rds(both: list[Manifest]) -> None:
    for m in both:
        db = m.one("rds/instance:Instance")
        assert db["manageMasterUserPassword"] is True
        assert "password" not in db and "passwordWo" not in db


def test_parameter_group_forces_tls_and_scales_the_reference_tuning(prod: Manifest) -> None:
    params = {p["name"]: p for p in prod.one("rds/parameterGroup:ParameterGroup")["parameters"]}
    assert params["rds.force_ssl"]["value"] == "1"
    assert all(p["applyMethod"] == "pending-reboot" for p in params.values())
    # prod is db.m7g.xlarge, 16 GiB: twice the reference 8 GB host (docs/targets.md).
    assert params["shared_buffers"]["value"] == str(4 * 1024 * 1024 // 8)  # 4 GB in 8k pages
    assert params["effective_cache_size"]["value"] == str(12 * 1024 * 1024 // 8)
    assert params["max_connections"]["value"] == "400"
    assert params["log_min_duration_statement"]["value"] == "500"


def test_the_reference_tuning_is_reproduced_exactly_at_8_gib() -> None:
    params = tuned_parameters(8, 500)
    assert params["max_connections"] == "200"
    assert int(params["shared_buffers"]) * 8 == 2 * 1024 * 1024  # 2GB
    assert int(params["effective_cache_size"]) * 8 == 6 * 1024 * 1024  # 6GB
    assert int(params["maintenance_work_mem"]) == 512 * 1024  # 512MB in kB
    assert int(params["wal_buffers"]) * 8 == 16 * 1024  # 16MB


# ---- cache ---------------------------------------------------------------------------


def test_cache_encrypted_with_auth_token_in_secrets_manager(both: list[Manifest]) -> None:
    for m in both:
        group = m.one("replicationGroup:ReplicationGroup")
        assert group["atRestEncryptionEnabled"] is True
        assert group["transitEncryptionEnabled"] is True
        assert group["transitEncryptionMode"] == "required"
        assert group["authToken"] == "[secret]"
        assert group["securityGroupIds"] == ["prodstack-net-cache-sg-id"]
        token = m.one("randomPassword:RandomPassword", "prodstack-cache-auth-token")
        assert set(token["overrideSpecial"]) <= set("!&#$^<>-")
        assert 16 <= token["length"] <= 128
        version = m.named("prodstack-cache-auth-secret-value")
        assert version["property_dependencies"]["secretString"] == [
            "random:index/randomPassword:RandomPassword::prodstack-cache-auth-token"]


def test_auth_token_specials_are_the_ones_aws_accepts() -> None:
    assert set(AUTH_TOKEN_SPECIALS) == set("!&#$^<>-")


def test_cache_evicts_lru(both: list[Manifest]) -> None:
    for m in both:
        params = m.one("elasticache/parameterGroup:ParameterGroup")
        assert params["family"] == "valkey8"
        assert {"name": "maxmemory-policy", "value": "allkeys-lru"} in params["parameters"]


def test_prod_cache_has_replica_failover_and_multi_az(prod: Manifest, dev: Manifest) -> None:
    group = prod.one("replicationGroup:ReplicationGroup")
    assert group["numCacheClusters"] == 2
    assert group["automaticFailoverEnabled"] is True and group["multiAzEnabled"] is True
    dev_group = dev.one("replicationGroup:ReplicationGroup")
    assert dev_group["numCacheClusters"] == 1 and dev_group["multiAzEnabled"] is False


def test_cache_snapshots_and_slow_log(both: list[Manifest]) -> None:
    for m in both:
        group = m.one("replicationGroup:ReplicationGroup")
        assert 1 <= group["snapshotRetentionLimit"] <= 35
        (delivery,) = group["logDeliveryConfigurations"]
        assert delivery["logType"] == "slow-log"
        assert delivery["destinationType"] == "cloudwatch-logs"
        assert m.one("logGroup:LogGroup", "prodstack-cache-slow-log")["retentionInDays"] > 0
        subnets = m.one("elasticache/subnetGroup:SubnetGroup")["subnetIds"]
        assert all("isolated" in s for s in subnets)


# ---- registry and image --------------------------------------------------------------


def test_ecr_scan_on_push_immutable_lifecycle(both: list[Manifest]) -> None:
    for m in both:
        repo = m.one("ecr/repository:Repository")
        assert repo["imageTagMutability"] == "IMMUTABLE"
        assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo["encryptionConfigurations"] == [{"encryptionType": "AES256"}]
        policy = json.loads(m.one("ecr/lifecyclePolicy:LifecyclePolicy")["policy"])
        (rule,) = policy["rules"]
        assert rule["selection"] == {
            "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 30}
        assert rule["action"] == {"type": "expire"}


def test_image_built_from_app_and_deployed_by_digest(both: list[Manifest]) -> None:
    for m in both:
        image = m.one("docker:index/image:Image")
        assert image["build"]["context"] == "<repo>/app"
        assert image["build"]["dockerfile"] == "<repo>/app/Dockerfile"
        assert image["build"]["platform"] == "linux/amd64"
        assert set(image["build"]["args"]) == {"BASE_IMAGE", "SBOM_DIGEST"}
        assert image["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim-bookworm"
        assert image["imageName"].endswith(":test-build")
        digest = m.outputs["image"]
        assert "@sha256:" in digest
        for name, container in m.containers(f"prodstack-{m.data['stack']}").items():
            if name != "metrics-collector":  # pinned by digest too (test_cloud_metrics.py)
                assert container["image"] == digest


# ---- service -------------------------------------------------------------------------


def test_cluster_has_container_insights(both: list[Manifest]) -> None:
    for m in both:
        assert m.one("ecs/cluster:Cluster")["settings"] == [
            {"name": "containerInsights", "value": "enabled"}]


@pytest.mark.parametrize("stack, cpu, memory", [("prod", "1024", "2048"), ("dev", "256", "512")])
def test_task_size_from_config_is_a_valid_fargate_combo(
    manifests: dict, stack: str, cpu: str, memory: str
) -> None:
    for task in Manifest(manifests[stack]).inputs("taskDefinition:TaskDefinition"):
        assert (task["cpu"], task["memory"]) == (cpu, memory)
        assert int(task["memory"]) in FARGATE_CPU_MEMORY[task["cpu"]]
        assert task["networkMode"] == "awsvpc"
        assert task["requiresCompatibilities"] == ["FARGATE"]


def test_containers_read_only_non_root_with_tmp_volume(both: list[Manifest]) -> None:
    for m in both:
        for task in m.inputs("taskDefinition:TaskDefinition"):
            assert task["volumes"] == [{"name": "tmp"}]
            for c in json.loads(task["containerDefinitions"]):
                assert c["readonlyRootFilesystem"] is True
                assert c["linuxParameters"]["capabilities"] == {"drop": ["ALL"]}
                if c["name"] == "metrics-collector":
                    # Its image's own non-root user; it writes no file, so no /tmp.
                    assert c["user"] == "4317" and "mountPoints" not in c
                else:
                    assert c["user"] == "10001"
                    assert c["mountPoints"] == [
                        {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}]
                group = "/ecs/" + task["family"].removesuffix("-migrate")
                assert c["logConfiguration"]["options"]["awslogs-group"] == group


def test_task_log_group_keeps_30_days(prod: Manifest) -> None:
    assert prod.one("logGroup:LogGroup", "prodstack-api-logs")["retentionInDays"] == 30


def test_every_secret_enters_through_ecs_secrets(both: list[Manifest]) -> None:
    for m in both:
        containers = m.containers(f"prodstack-{m.data['stack']}")
        db_secret = m.outputs["database_secret_arn"]
        for name, c in containers.items():
            secrets = {s["name"]: s["valueFrom"] for s in c["secrets"]}
            if name == "metrics-collector":  # its plain config, from SSM (test_cloud_metrics)
                assert [s["name"] for s in c["secrets"]] == ["AOT_CONFIG_CONTENT"]
                assert "environment" not in c
                continue
            env = {e["name"]: e["value"] for e in c["environment"]}
            if name == "migrate":  # the database owner: the RDS-managed master secret
                assert secrets["DB_USER"] == f"{db_secret}:username::"
                assert secrets["DB_PASSWORD"] == f"{db_secret}:password::"
            else:  # the API: its own role, IAM tokens, no password
                assert "DB_PASSWORD" not in secrets and "DB_USER" not in secrets
                assert env["DB_USER"] == "prodstack_app" and env["DB_IAM"] == "true"
            assert secrets["REDIS_PASSWORD"].endswith("prodstack-cache-auth-secret")
            assert secrets["API_TOKEN"].endswith("prodstack-api-token")
            assert not set(env) & {"DB_PASSWORD", "API_TOKEN", "REDIS_PASSWORD",
                                   "DATABASE_URL", "REDIS_URL"}
            assert env["REDIS_TLS"] == "true" and env["PORT"] == "8000"
            assert env["DB_HOST"] and env["DB_PORT"] == "5432" and env["DB_NAME"] == "app"
            assert env["FORWARDED_HOPS"] == ("2" if m.data["stack"] == "prod" else "1")
        role_policy = m.one("iam/rolePolicy:RolePolicy", "prodstack-api-execution-role-secrets")
        policy = json.loads(role_policy["policy"])
        (statement,) = policy["Statement"]
        assert statement["Action"] == "secretsmanager:GetSecretValue"
        assert db_secret in statement["Resource"] and len(statement["Resource"]) == 3


def test_prod_service_runs_3_private_tasks_with_rollback(prod: Manifest, dev: Manifest) -> None:
    svc = prod.one("ecs/service:Service")
    assert svc["desiredCount"] == 3
    assert svc["launchType"] == "FARGATE"
    assert svc["networkConfiguration"]["assignPublicIp"] is False
    assert all("private" in s for s in svc["networkConfiguration"]["subnets"])
    assert svc["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert svc["deploymentMinimumHealthyPercent"] == 100
    assert svc["deploymentMaximumPercent"] == 200
    assert svc["healthCheckGracePeriodSeconds"] >= 30
    assert svc["enableExecuteCommand"] is False
    assert svc["loadBalancers"][0]["containerName"] == "api"
    assert dev.one("ecs/service:Service")["desiredCount"] == 1


def test_autoscaling_on_cpu_70_and_requests_in_every_target_group(
    prod: Manifest, dev: Manifest
) -> None:
    tracking = "targetTrackingScalingPolicyConfiguration"
    for m, (low, high), groups in ((prod, (3, 12), ["prodstack-lb-tg", "prodstack-lb-tg-alt"]),
                                   (dev, (1, 2), ["prodstack-lb-tg"])):
        target = m.one("appautoscaling/target:Target")
        assert (target["minCapacity"], target["maxCapacity"]) == (low, high)
        assert target["scalableDimension"] == "ecs:service:DesiredCount"
        cpu = m.one("appautoscaling/policy:Policy", "prodstack-api-scale-cpu")[tracking]
        assert cpu["targetValue"] == 70
        assert cpu["predefinedMetricSpecification"] == {
            "predefinedMetricType": "ECSServiceAverageCPUUtilization"}
        requests = m.one("appautoscaling/policy:Policy", "prodstack-api-scale-requests")[tracking]
        assert requests["targetValue"] == 1000
        queries = requests["customizedMetricSpecification"]["metrics"]
        reads = [q for q in queries if "metricStat" in q]
        # Blue/green serves production from either group in turn: both are read, each as
        # RequestCountPerTarget with its only valid statistic, and added up (no data: 0).
        assert [q["id"] for q in reads] == [f"tg{i}" for i in range(len(groups))]
        for q, group in zip(reads, groups, strict=True):
            assert q["returnData"] is False
            assert q["metricStat"]["stat"] == "Sum"
            metric = q["metricStat"]["metric"]
            assert (metric["namespace"], metric["metricName"]) == (
                "AWS/ApplicationELB", "RequestCountPerTarget")
            dims = {d["name"]: d["value"] for d in metric["dimensions"]}
            assert dims["TargetGroup"].split("/")[1] == group
            assert dims["LoadBalancer"].startswith("app/prodstack-lb-alb/")
        (total,) = [q for q in queries if "expression" in q]
        assert total["returnData"] is True
        assert total["expression"] == " + ".join(f"FILL({q['id']}, 0)" for q in reads)


def test_migrations_run_before_the_api_takes_traffic(both: list[Manifest]) -> None:
    for m in both:
        stack = m.data["stack"]
        containers = m.containers(f"prodstack-{stack}")
        assert list(containers) == ["migrate", "api", "metrics-collector"]
        migrate, api = containers["migrate"], containers["api"]
        assert migrate["command"] == ["migrate"] and migrate["essential"] is False
        assert "portMappings" not in migrate
        assert api["dependsOn"] == [{"containerName": "migrate", "condition": "SUCCESS"}]
        assert "command" not in api  # the image's CMD: serve
        assert api["portMappings"] == [{"containerPort": 8000, "protocol": "tcp"}]
        assert api["healthCheck"]["command"] == ["CMD", "python3", "-m", "app.healthcheck"]
        one_off = m.containers(f"prodstack-{stack}-migrate")
        assert list(one_off) == ["migrate"] and one_off["migrate"]["essential"] is True
        assert one_off["migrate"]["command"] == ["migrate"]
        assert m.outputs["migrate_task_definition"].endswith("prodstack-api-migrate-task")


def test_service_waits_for_the_forwarding_listener_or_rule(prod: Manifest, dev: Manifest) -> None:
    deps = prod.named("prodstack-api-service")["property_dependencies"]["loadBalancers"]
    # prod deploys blue/green: the production rule is what forwards.
    assert "aws:lb/listenerRule:ListenerRule::prodstack-lb-production" in deps
    deps = dev.named("prodstack-api-service-rolling")["property_dependencies"]["loadBalancers"]
    assert "aws:lb/listener:Listener::prodstack-lb-http" in deps


def test_alb_behind_cdn_forwards_only_with_the_origin_secret(
    prod: Manifest, dev: Manifest
) -> None:
    https = prod.one("lb/listener:Listener", "prodstack-lb-https")
    assert https["defaultActions"] == [{"type": "fixed-response", "fixedResponse": {
        "contentType": "text/plain", "messageBody": "Forbidden", "statusCode": "403"}}]
    rule = prod.named("prodstack-lb-production")  # blue/green's production rule
    (condition,) = rule["inputs"]["conditions"]
    assert condition["httpHeader"] == {"httpHeaderName": "X-Origin-Verify", "values": ["[secret]"]}
    assert rule["inputs"]["actions"][0]["type"] == "forward"
    (origin,) = prod.one("cloudfront/distribution:Distribution")["origins"]
    assert origin["customHeaders"] == [{"name": "X-Origin-Verify", "value": "[secret]"}]
    secret = "random:index/randomPassword:RandomPassword::prodstack-origin-verify"
    assert secret in rule["property_dependencies"]["conditions"]
    distribution = prod.named("prodstack-cdn-distribution")
    assert secret in distribution["property_dependencies"]["origins"]
    # Without a CDN nothing gates on the header: only the internal-path rules exist.
    assert {r["name"] for r in dev.all("lb/listenerRule:ListenerRule")} == {
        "prodstack-lb-internal-paths", "prodstack-lb-encoded-paths"}
    assert dev.one("lb/listener:Listener")["defaultActions"][0]["type"] == "forward"


# ---- CDN -----------------------------------------------------------------------------


def test_cdn_tls_https_compression_http3(prod: Manifest) -> None:
    d = prod.one("cloudfront/distribution:Distribution")
    cert = d["viewerCertificate"]
    assert cert["minimumProtocolVersion"] == "TLSv1.2_2021"
    assert cert["sslSupportMethod"] == "sni-only"
    assert "cloudfrontDefaultCertificate" not in cert
    assert d["httpVersion"] == "http2and3"
    for b in [d["defaultCacheBehavior"], *d["orderedCacheBehaviors"]]:
        assert b["viewerProtocolPolicy"] == "redirect-to-https"
        assert b["compress"] is True


def test_cdn_never_caches_api_and_honours_origin_elsewhere(prod: Manifest) -> None:
    d = prod.one("cloudfront/distribution:Distribution")
    ordered = {b["pathPattern"]: b for b in d["orderedCacheBehaviors"]}
    assert ordered["/api/*"]["cachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
    for b in [d["defaultCacheBehavior"], *ordered.values()]:
        assert b["originRequestPolicyId"] == "b689b0a8-53d0-40ab-baf2-68738e2966ac"
    # Elsewhere the stack's own policy: the origin's Cache-Control decides (nothing is
    # cached without it; no-store and private are honoured).
    policy = prod.named("prodstack-cdn-origin-cache-control")
    assert d["defaultCacheBehavior"]["cachePolicyId"] == "prodstack-cdn-origin-cache-control-id"
    assert policy["urn"] in prod.named("prodstack-cdn-distribution")["property_dependencies"][
        "defaultCacheBehavior"]
    inputs = policy["inputs"]
    assert (inputs["minTtl"], inputs["defaultTtl"], inputs["maxTtl"]) == (0, 0, 31_536_000)


def test_cdn_keeps_the_viewers_host_out_of_the_cache_key_and_the_origin(prod: Manifest) -> None:
    # A cache key's headers go to the origin whatever the origin request policy says, so a
    # key with Host would send the viewer's Host to the ALB past AllViewerExceptHostHeader.
    for m_policy in prod.inputs("cloudfront/cachePolicy:CachePolicy"):
        key = m_policy["parametersInCacheKeyAndForwardedToOrigin"]
        assert key["headersConfig"] == {"headerBehavior": "none"}
        assert key["cookiesConfig"] == {"cookieBehavior": "none"}
        assert key["queryStringsConfig"] == {"queryStringBehavior": "all"}
    d = prod.one("cloudfront/distribution:Distribution")
    managed = {"4135ea2d-6df8-44a3-9df3-4b5a84be39ad"}  # CachingDisabled: no headers
    own = {"prodstack-cdn-origin-cache-control-id"}
    for b in [d["defaultCacheBehavior"], *d["orderedCacheBehaviors"]]:
        assert b["cachePolicyId"] in managed | own


def test_cdn_talks_https_to_origin_with_us_east_1_alias_cert(prod: Manifest) -> None:
    d = prod.one("cloudfront/distribution:Distribution")
    (origin,) = d["origins"]
    assert origin["domainName"] == "origin.api.example.com"
    assert origin["customOriginConfig"]["originProtocolPolicy"] == "https-only"
    assert origin["customOriginConfig"]["originSslProtocols"] == ["TLSv1.2"]
    assert d["aliases"] == ["api.example.com"]
    cert = prod.one("acm/certificate:Certificate", "prodstack-cdn-cert")
    assert cert["region"] == "us-east-1" and cert["domainName"] == "api.example.com"
    assert prod.one("acm/certificateValidation:CertificateValidation",
                    "prodstack-cdn-cert-validated")["region"] == "us-east-1"
    alias = prod.one("route53/record:Record", "prodstack-domain-alias")
    assert alias["name"] == "api.example.com"
    # The stack's own record, pointed at CloudFront (which reports no target health).
    assert alias["aliases"][0]["evaluateTargetHealth"] is False


def test_dev_has_no_cdn(dev: Manifest) -> None:
    assert not dev.all("cloudfront/distribution:Distribution")


# ---- observability -------------------------------------------------------------------


def _alarms(m: Manifest) -> dict[str, dict]:
    # The observability component's alarms (the drill's: tests/cloud/test_cloud_backup.py).
    return {r["name"].split("-obs-", 1)[1]: r["inputs"] for r in m.all("metricAlarm:MetricAlarm")
            if "-obs-" in r["name"]}


def test_alarms_match_the_targets(prod: Manifest) -> None:
    alarms = _alarms(prod)
    error = alarms["high-error-rate"]
    assert error["threshold"] == 1 and error["comparisonOperator"] == "GreaterThanThreshold"
    assert error["evaluationPeriods"] * 60 == 120  # target: for 2m
    expression = next(q for q in error["metricQueries"] if q.get("returnData"))
    assert "elb5xx" in expression["expression"] and "/ (FILL(requests" in expression["expression"]
    p99 = alarms["p99-latency"]
    assert p99["extendedStatistic"] == "p99" and "statistic" not in p99
    assert p99["threshold"] == 0.5 and p99["metricName"] == "TargetResponseTime"
    assert alarms["unhealthy-hosts"]["threshold"] == 0
    for query in alarms["unhealthy-hosts"]["metricQueries"]:
        if "metric" in query:
            assert set(query["metric"]["dimensions"]) == {"LoadBalancer", "TargetGroup"}
    assert alarms["ecs-cpu"]["threshold"] == 70 and alarms["ecs-memory"]["threshold"] == 80
    assert alarms["ecs-cpu"]["dimensions"] == {
        "ClusterName": "prodstack-api-cluster", "ServiceName": "prodstack-api-service"}
    assert alarms["rds-cpu"]["namespace"] == "AWS/RDS"
    storage = alarms["rds-free-storage"]
    assert storage["comparisonOperator"] == "LessThanThreshold"
    # Percent of the 500 GiB ceiling: half of autoscaling's first point (10 % of 100 GiB).
    assert storage["threshold"] == 1
    assert alarms["rds-connections"]["threshold"] == 150
    for i in (0, 1):
        memory = alarms[f"cache-memory-{i}"]
        assert memory["threshold"] == 90
        # The group's ID under kms_keys (test_cloud_keys.py), members -001 and -002.
        assert memory["dimensions"] == {"CacheClusterId": f"prodstack-prod-cmk-00{i + 1}"}
        assert alarms[f"cache-evictions-{i}"]["metricName"] == "Evictions"


def test_alarm_values_are_ones_cloudwatch_accepts(both: list[Manifest]) -> None:
    for m in both:
        for alarm in _alarms(m).values():
            period = alarm.get("period", 60)
            assert period in (10, 20, 30) or period % 60 == 0
            assert period * alarm["evaluationPeriods"] <= 604_800
            assert not ("statistic" in alarm and "extendedStatistic" in alarm)
            assert alarm["treatMissingData"] in ("breaching", "notBreaching", "ignore", "missing")
            # Every alarm notifies, but the deployment-only copy (its paging twin does).
            deployment_only = alarm.get("tags", {}).get("prodstack:alarm-use") == "deployment"
            assert bool(alarm.get("alarmActions") and alarm.get("okActions")) != deployment_only


def test_small_database_connection_alarm_respects_max_connections(dev: Manifest) -> None:
    # db.t4g.micro gets max_connections 80, so the 150 target could never fire.
    assert _alarms(dev)["rds-connections"]["threshold"] == 64


def test_alarm_topic_encrypted_email_and_dashboard(prod: Manifest, dev: Manifest) -> None:
    topic = prod.one("sns/topic:Topic")
    assert topic["kmsMasterKeyId"].startswith("arn:aws:kms")
    key = prod.one("kms/key:Key", "prodstack-prod-obs-key")
    assert key["enableKeyRotation"] is True
    statements = json.loads(key["policy"])["Statement"]
    assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in statements)
    subscription = prod.one("sns/topicSubscription:TopicSubscription")
    assert subscription == {**subscription, "protocol": "email", "endpoint": "ops@example.com"}
    assert not dev.all("sns/topicSubscription:TopicSubscription")
    body = json.loads(prod.one("cloudwatch/dashboard:Dashboard")["dashboardBody"])
    assert len(body["widgets"]) >= 5
    assert prod.outputs["dashboard_url"].endswith("#dashboards:name=prodstack-prod-obs")


@pytest.mark.parametrize("stack, groups", [("prod", ["prodstack-lb-tg", "prodstack-lb-tg-alt"]),
                                           ("dev", ["prodstack-lb-tg"])])
def test_p99_widget_plots_every_target_group(manifests: dict, stack: str,
                                             groups: list[str]) -> None:
    # Blue/green serves production from either group in turn: one line per group.
    body = json.loads(Manifest(manifests[stack]).one("cloudwatch/dashboard:Dashboard")[
        "dashboardBody"])
    (widget,) = [w for w in body["widgets"] if w["properties"]["title"] == "Target latency p99"]
    lines = widget["properties"]["metrics"]
    assert [line[line.index("TargetGroup") + 1].split("/")[1] for line in lines] == groups
    assert all(line[:2] == ["AWS/ApplicationELB", "TargetResponseTime"]
               and line[-1]["stat"] == "p99" for line in lines)


def test_log_groups_all_have_retention(both: list[Manifest]) -> None:
    for m in both:
        for group in m.inputs("logGroup:LogGroup"):
            # The stack files' log_retention_days, or security_log_retention_days.
            assert group["retentionInDays"] in (7, 30, 365)
