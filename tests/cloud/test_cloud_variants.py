"""The branches the two stack files don't take: no NAT, HTTPS without a CDN, Graviton, medium."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prodstack_cloud_harness import REPO, Manifest, check_resource, run_all, run_harness

from components._common import ECS_EXEC_TAG, ENVIRONMENT_TAG
from components.service import ECS_EXEC_ACTIONS
from policies.ecs import ecs_service_safe

ZONE = "Z0123456789EXAMPLE0"
VARIANTS = {
    # The metrics collector needs NAT (its image is on ECR Public): refused without.
    "no-nat": ("dev", "--set", "nat=none", "--set", "metrics_scrape=false"),
    "https-no-cdn": ("dev", "--set", "domain=api.example.com", "--set",
                     f"hosted_zone_id={ZONE}", "--set", "cdn=false"),
    # Also untagged: the image tag is the program's own hash of the build.
    "arm-medium": ("dev", "--set", "size=medium", "--set", "image_platform=linux/arm64",
                   "--set", "image_tag=",
                   "--set", "replicas=auto", "--set", "min_replicas=auto",
                   "--set", "max_replicas=auto", "--set", "multi_az=auto"),
    "blue-green-no-cdn": ("dev", "--set", "deploy_strategy=blue_green"),
    "ecs-exec": ("dev", "--set", "ecs_exec=true"),
}


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Manifest]:
    tmp: Path = tmp_path_factory.mktemp("cloud-variants")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(run_harness, args[0], tmp / f"{name}.json", *args[1:])
            for name, args in VARIANTS.items()
        }
        result = {name: Manifest(f.result()) for name, f in futures.items()}
    for name, m in result.items():
        assert m.data["exit_code"] == 0, (name, m.data["stderr"])
    return result


def test_variants_pass_the_policy_pack(variants: dict[str, Manifest]) -> None:
    for name, m in variants.items():
        assert run_all(m) == [], name


def test_no_nat_uses_interface_endpoints(variants: dict[str, Manifest]) -> None:
    m = variants["no-nat"]
    assert not m.all("ec2/natGateway:NatGateway") and not m.all("ec2/eip:Eip")
    endpoints = {e["serviceName"].removeprefix("com.amazonaws.eu-west-1."): e
                 for e in m.inputs("ec2/vpcEndpoint:VpcEndpoint")}
    assert set(endpoints) == {"s3", "ecr.api", "ecr.dkr", "logs", "secretsmanager"}
    for name in ("ecr.api", "ecr.dkr", "logs", "secretsmanager"):
        assert endpoints[name]["privateDnsEnabled"] is True
        assert all("private" in s for s in endpoints[name]["subnetIds"])
    rule = m.named("prodstack-net-service-to-endpoints-in")
    assert rule["property_dependencies"]["referencedSecurityGroupId"] == [
        "aws:ec2/securityGroup:SecurityGroup::prodstack-net-service-sg"]


def test_https_without_cdn(variants: dict[str, Manifest]) -> None:
    m = variants["https-no-cdn"]
    https = m.one("lb/listener:Listener", "prodstack-lb-https")
    assert https["sslPolicy"].startswith("ELBSecurityPolicy-TLS13-")
    http = m.one("lb/listener:Listener", "prodstack-lb-http")
    assert http["defaultActions"][0]["type"] == "redirect"
    ports = sorted(r["inputs"]["fromPort"] for r in m.all("SecurityGroupIngressRule")
                   if r["name"].startswith("prodstack-net-alb-in-"))
    assert ports == [80, 443]
    assert m.one("route53/record:Record", "prodstack-domain-alias")["name"] == "api.example.com"
    assert [r["name"] for r in m.all("route53/record:Record")
            if r["inputs"]["name"] == "api.example.com" and r["inputs"]["type"] == "A"] == [
        "prodstack-domain-alias"]  # one record of the public name, pointed at the ALB
    cert = m.one("acm/certificate:Certificate")
    assert cert["domainName"] == "api.example.com" and "subjectAlternativeNames" not in cert
    assert m.one("wafv2/webAcl:WebAcl")["scope"] == "REGIONAL"
    assert m.outputs["url"] == "https://api.example.com"
    assert not [w for w in m.warnings if "plain HTTP" in w]


def test_medium_on_graviton(variants: dict[str, Manifest]) -> None:
    m = variants["arm-medium"]
    assert m.one("docker:index/image:Image")["build"]["platform"] == "linux/arm64"
    for task in m.inputs("taskDefinition:TaskDefinition"):
        assert task["runtimePlatform"]["cpuArchitecture"] == "ARM64"
        assert (task["cpu"], task["memory"]) == ("512", "1024")
    db = m.one("rds/instance:Instance")
    assert db["instanceClass"] == "db.m7g.large" and db["multiAz"] is True
    assert m.one("replicationGroup:ReplicationGroup")["numCacheClusters"] == 2
    assert m.one("ecs/service:Service")["desiredCount"] == 2


def test_blue_green_without_a_cdn_routes_every_path(variants: dict[str, Manifest]) -> None:
    """Without the CDN's origin check the production rule still needs a condition: any
    path. The test rule then matches the test header alone."""
    m = variants["blue-green-no-cdn"]
    service = m.one("ecs/service:Service")
    assert service["deploymentConfiguration"]["strategy"] == "BLUE_GREEN"
    rules = {r["name"]: r["inputs"] for r in m.all("lb/listenerRule:ListenerRule")}
    assert rules["prodstack-lb-production"]["conditions"] == [
        {"pathPattern": {"values": ["/*"]}}]
    assert rules["prodstack-lb-test"]["conditions"] == [
        {"httpHeader": {"httpHeaderName": "X-Prodstack-Route", "values": ["[secret]"]}}]
    assert rules["prodstack-lb-production"]["listenerArn"].endswith(":prodstack-lb-http")


def test_untagged_image_is_tagged_by_the_hash_of_what_it_is_built_from(variants):
    """The tag covers the context Docker gets and the very arguments and platform of the
    build, so a new base image or platform never rebuilds under an old, immutable tag."""
    from components.registry import context_hash

    image = variants["arm-medium"].one("index/image:Image")
    build = image["build"]
    assert build["platform"] == "linux/arm64" and build["args"]["BASE_IMAGE"]
    tag = context_hash(REPO / "app", build_args=build["args"], platform=build["platform"])
    assert image["imageName"].endswith(":" + tag), (image["imageName"], tag)


def test_metrics_scrape_false_creates_none_of_it(variants: dict[str, Manifest]) -> None:
    m = variants["no-nat"]  # metrics_scrape: false (refused with nat: none otherwise)
    types = {r["type"] for r in m.resources}
    assert not {t for t in types if t.startswith(("aws:amp/", "aws:ssm/"))}
    assert "prodstack:metrics:Metrics" not in types
    # The topic policy stays (EventBridge and RDS events publish too), without AMP in it.
    statements = json.loads(m.one("sns/topicPolicy:TopicPolicy")["policy"])["Statement"]
    assert "aps.amazonaws.com" not in {s["Principal"]["Service"] for s in statements}
    assert list(m.containers("prodstack-dev")) == ["migrate", "api"]
    assert not [r for r in m.all("iam/rolePolicy:RolePolicy")
                if "metrics" in r["name"] or "collector" in r["name"]]
    assert "metrics_query_url" not in m.outputs


def test_ecs_exec_turns_it_on_with_only_the_session_channels(variants) -> None:
    m = variants["ecs-exec"]
    (service,) = m.inputs("ecs/service:Service")
    assert service["enableExecuteCommand"] is True
    grant = json.loads(m.named("prodstack-api-task-role-ecs-exec")["inputs"]["policy"])
    assert grant["Statement"] == [{"Effect": "Allow", "Action": list(ECS_EXEC_ACTIONS),
                                   "Resource": "*"}]  # fmt: skip
    # Off unless asked for: the dev stack file's own service keeps it off.
    (plain,) = variants["no-nat"].inputs("ecs/service:Service")
    assert plain["enableExecuteCommand"] is False
    assert not [r for r in variants["no-nat"].all("iam/rolePolicy:RolePolicy")
                if r["name"].endswith("ecs-exec")]


def test_ecs_exec_in_prod_passes_the_pack_only_when_allowed_by_name(variants) -> None:
    (service,) = variants["ecs-exec"].inputs("ecs/service:Service")
    prod = {**service, "tags": {**service["tags"], ENVIRONMENT_TAG: "prod"}}
    assert check_resource(ecs_service_safe, "aws:ecs/service:Service", prod)
    allowed = {**prod, "tags": {**prod["tags"], ECS_EXEC_TAG: "allowed-in-prod"}}
    assert check_resource(ecs_service_safe, "aws:ecs/service:Service", allowed) == []
