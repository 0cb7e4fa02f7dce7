"""The CrossGuard rules: each with a compliant and a violating resource, then over both stacks.

Rules are imported from their modules (``policies.tls``, ...); the pack's ``__main__``
(which starts a gRPC server and blocks) is never imported: the last tests run it as its
own process, as the Pulumi CLI does, and query it over gRPC.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from prodstack_cloud_harness import REPO, Manifest, check_resource, check_stack, run_all
from pulumi_policy import EnforcementLevel

from components.load_balancer import DEFAULT_TLS13_POLICY, TLS13_POLICIES
from policies import all_policies
from policies.data import prod_protection
from policies.ecs import no_secrets_in_environment
from policies.keys import s3_buckets_encrypted
from policies.network import no_world_open_security_groups
from policies.tls import ALB_TLS_POLICIES, alb_tls, cloudfront_tls, rds_force_ssl

PROD = {"prodstack:environment": "prod"}
DEV = {"prodstack:environment": "dev"}


def test_every_policy_is_mandatory_and_uniquely_named() -> None:
    names = [p.name for p in all_policies()]
    assert len(names) == len(set(names))
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in all_policies())


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_policy_pack_passes_on_each_stack(manifests: dict, stack: str) -> None:
    assert run_all(Manifest(manifests[stack])) == []


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_every_policy_runs_to_the_end_on_each_stacks_plan(manifests: dict, stack: str) -> None:
    """The plan holds values known only after apply (ARNs, IDs, digests) and secrets it
    does not show; no rule is stopped by one (an advisory would say which)."""
    from prodstack.cloud_plan import to_plan
    from prodstack.planfile import has_secret, has_unknown

    plan = to_plan(manifests[stack])
    assert has_unknown(plan["resources"]) and has_secret(plan["resources"])
    advisories: list[str] = []
    assert run_all(plan, advisories=advisories) == []
    assert advisories == []


# ---- one compliant and one violating resource per resource rule ----------------------

def _from(manifest: Manifest, type_suffix: str, name: str | None = None) -> tuple[str, dict]:
    r = next(r for r in manifest.all(type_suffix) if name is None or r["name"] == name)
    return r["type"], copy.deepcopy(r["inputs"])


def _mutate(props: dict, path: str, value: Any) -> dict:
    props = copy.deepcopy(props)
    *parents, last = path.split(".")
    target = props
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is _DELETE:
        target.pop(last, None)
    else:
        target[last] = value
    return props


_DELETE = object()

RESOURCE_CASES = [
    # (policy, stack, resource type suffix, name, path to weaken, weakened value)
    ("encryption-everywhere", "prod", "rds/instance:Instance", None, "storageEncrypted", False),
    ("encryption-everywhere", "prod", "replicationGroup:ReplicationGroup", None,
     "atRestEncryptionEnabled", False),
    ("encryption-everywhere", "prod", "replicationGroup:ReplicationGroup", None,
     "transitEncryptionEnabled", False),
    ("encryption-everywhere", "prod", "replicationGroup:ReplicationGroup", None,
     "authToken", _DELETE),
    ("encryption-everywhere", "prod", "ecr/repository:Repository", None,
     "encryptionConfigurations", _DELETE),
    ("encryption-everywhere", "prod", "sns/topic:Topic", None, "kmsMasterKeyId", _DELETE),
    ("no-public-database-or-tasks", "prod", "rds/instance:Instance", None,
     "publiclyAccessible", True),
    ("no-public-database-or-tasks", "prod", "ecs/service:Service", None,
     "networkConfiguration.assignPublicIp", True),
    ("alb-listener-tls", "prod", "lb/listener:Listener", "prodstack-lb-https",
     "sslPolicy", "ELBSecurityPolicy-2016-08"),
    ("alb-listener-tls", "prod", "lb/listener:Listener", "prodstack-lb-https",
     "sslPolicy", _DELETE),
    ("alb-listener-tls", "prod", "lb/listener:Listener", "prodstack-lb-http",
     "defaultActions.0.type", "forward"),
    ("cloudfront-tls", "prod", "cloudfront/distribution:Distribution", None,
     "viewerCertificate.minimumProtocolVersion", "TLSv1.1_2016"),
    ("cloudfront-tls", "prod", "cloudfront/distribution:Distribution", None,
     "defaultCacheBehavior.viewerProtocolPolicy", "allow-all"),
    ("cloudfront-tls", "prod", "cloudfront/distribution:Distribution", None,
     "origins.0.customOriginConfig.originProtocolPolicy", "http-only"),
    ("rds-force-ssl", "prod", "rds/parameterGroup:ParameterGroup", None,
     "parameters.0.value", "0"),
    ("prod-deletion-protection-and-backups", "prod", "rds/instance:Instance", None,
     "deletionProtection", False),
    ("prod-deletion-protection-and-backups", "prod", "rds/instance:Instance", None,
     "skipFinalSnapshot", True),
    ("prod-deletion-protection-and-backups", "prod", "rds/instance:Instance", None,
     "backupRetentionPeriod", 3),
    ("prod-deletion-protection-and-backups", "prod", "lb/loadBalancer:LoadBalancer", None,
     "enableDeletionProtection", False),
    ("log-retention-set", "prod", "logGroup:LogGroup", None, "retentionInDays", _DELETE),
    ("log-retention-set", "prod", "logGroup:LogGroup", None, "retentionInDays", 42),
]


@pytest.mark.parametrize(
    "policy_name, stack, type_suffix, name, path, value", RESOURCE_CASES,
    ids=[f"{c[0]}:{c[4]}={c[5] if c[5] is not _DELETE else 'unset'}" for c in RESOURCE_CASES],
)
def test_resource_rule_compliant_and_violating(
    manifests: dict, policy_name: str, stack: str, type_suffix: str, name: str | None,
    path: str, value: Any,
) -> None:
    policy = next(p for p in all_policies() if p.name == policy_name)
    type_, props = _from(Manifest(manifests[stack]), type_suffix, name)
    assert check_resource(policy, type_, props) == []
    assert check_resource(policy, type_, _mutate(props, path, value)) != []


def test_plain_http_listener_allowed_only_tagged_outside_prod(dev: Manifest) -> None:
    type_, props = _from(dev, "lb/listener:Listener")
    assert check_resource(alb_tls, type_, props) == []
    untagged = _mutate(props, "tags", DEV)
    assert check_resource(alb_tls, type_, untagged) != []
    in_prod = _mutate(props, "tags", {**props["tags"], **PROD})
    assert check_resource(alb_tls, type_, in_prod) != []


def test_default_cloudfront_certificate_refused_in_prod() -> None:
    props = {"viewerCertificate": {"cloudfrontDefaultCertificate": True},
             "defaultCacheBehavior": {"viewerProtocolPolicy": "redirect-to-https"}}
    type_ = "aws:cloudfront/distribution:Distribution"
    assert check_resource(cloudfront_tls, type_, {**props, "tags": DEV}) == []
    assert check_resource(cloudfront_tls, type_, {**props, "tags": PROD}) != []


def test_dev_database_needs_backups_but_not_deletion_protection(dev: Manifest) -> None:
    type_, props = _from(dev, "rds/instance:Instance")
    assert props["deletionProtection"] is False
    assert check_resource(prod_protection, type_, props) == []
    assert check_resource(prod_protection, type_,
                          _mutate(props, "backupRetentionPeriod", 0)) != []


@pytest.mark.parametrize("name, value", [
    ("DB_PASSWORD", "hunter2"),
    ("API_TOKEN", "abc"),
    ("DATABASE_URL", "postgresql://app:s3cret@db.internal:5432/app"),
    ("AWS_KEY_ID", "AKIAABCDEFGHIJKLMNOP"),
])
def test_no_secrets_in_task_environment(prod: Manifest, name: str, value: str) -> None:
    type_, props = _from(prod, "taskDefinition:TaskDefinition")
    assert check_resource(no_secrets_in_environment, type_, props) == []
    containers = json.loads(props["containerDefinitions"])
    containers[0]["environment"].append({"name": name, "value": value})
    leaked = {**props, "containerDefinitions": json.dumps(containers)}
    assert check_resource(no_secrets_in_environment, type_, leaked) != []


# ---- stack rules ---------------------------------------------------------------------

def test_world_open_ingress_only_alb_web_ports_without_cdn(prod: Manifest, dev: Manifest) -> None:
    policy = no_world_open_security_groups
    assert check_stack(policy, dev.resources) == []  # ALB :80 from the world, no CDN
    # The same ALB rule is a violation once a CDN fronts the stack...
    distribution = prod.all("cloudfront/distribution:Distribution")
    assert check_stack(policy, dev.resources + distribution) != []
    # ...and opening any other port, or any other group, to the world is one anyway.
    for rule_name, port in (("prodstack-net-alb-in-80", 22),
                            ("prodstack-net-service-to-database-in", 5432)):
        items = copy.deepcopy(dev.resources)
        rule = next(r for r in items if r["name"] == rule_name)
        rule["inputs"].update(cidrIpv4="0.0.0.0/0", fromPort=port, toPort=port)
        assert check_stack(policy, items) != []
    # Inline rules on a security group count too.
    items = copy.deepcopy(prod.resources)
    group = next(r for r in items if r["type"].endswith("ec2/securityGroup:SecurityGroup"))
    group["inputs"]["ingress"] = [{"cidrBlocks": ["0.0.0.0/0"], "fromPort": 443}]
    assert check_stack(policy, items) != []
    assert check_stack(policy, prod.resources) == []


def test_buckets_need_encryption_configuration(prod: Manifest) -> None:
    policy = s3_buckets_encrypted
    assert check_stack(policy, prod.resources) == []
    without = [r for r in prod.resources
               if not r["type"].endswith(":BucketServerSideEncryptionConfiguration")]
    assert check_stack(policy, without) != []
    weak = copy.deepcopy(prod.resources)
    sse = next(r for r in weak if r["type"].endswith(":BucketServerSideEncryptionConfiguration"))
    sse["inputs"]["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] = "none"
    assert check_stack(policy, weak) != []


# ---- the ALB TLS allow-list ----------------------------------------------------------

@pytest.mark.parametrize("allow_list", [ALB_TLS_POLICIES, TLS13_POLICIES],
                         ids=["policy", "component"])
def test_tls13_allow_list_has_no_protocol_below_tls12(allow_list: tuple[str, ...]) -> None:
    """AWS names TLS 1.3 policies `TLS13-1-X`: TLS 1.3 down to TLS 1.X (describe-ssl-policies,
    "Protocols" column). Only 1-2 and 1-3 belong on either allow-list."""
    assert allow_list
    for name in allow_list:
        assert re.match(r"^ELBSecurityPolicy-TLS13-1-[23]-", name), name


def test_the_components_default_tls_policy_passes_the_policys_own_list() -> None:
    """The policy keeps its own list; the component's default must be on it, or every
    stack left at the default would be refused."""
    assert DEFAULT_TLS13_POLICY in ALB_TLS_POLICIES
    assert set(TLS13_POLICIES) <= set(ALB_TLS_POLICIES)


@pytest.mark.parametrize("policy_name, allowed", [
    *((name, True) for name in ALB_TLS_POLICIES),
    ("ELBSecurityPolicy-TLS13-1-0-2021-06", False),  # TLS 1.0 and 1.1 still on
    ("ELBSecurityPolicy-TLS13-1-1-2021-06", False),  # TLS 1.1 still on
    ("ELBSecurityPolicy-TLS-1-2-2017-01", False),  # no TLS 1.3
    ("ELBSecurityPolicy-2016-08", False),  # the API default
])
def test_https_listener_policy_is_on_the_allow_list(
    prod: Manifest, policy_name: str, allowed: bool
) -> None:
    type_, props = _from(prod, "lb/listener:Listener", "prodstack-lb-https")
    violations = check_resource(alb_tls, type_, _mutate(props, "sslPolicy", policy_name))
    assert (violations == []) is allowed, violations


# ---- the pack as `pulumi preview --policy-pack policies` runs it ---------------------

@pytest.fixture(scope="module")
def analyzer() -> Iterator[Any]:
    """``policies/__main__.py`` serving the pack over gRPC, as the Pulumi CLI starts it."""
    import grpc
    from pulumi.runtime.proto import analyzer_pb2_grpc

    proc = subprocess.Popen([sys.executable, str(REPO / "policies" / "__main__.py")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = (proc.stdout.readline() if proc.stdout else "").strip()
        assert port.isdigit(), proc.stderr.read() if proc.stderr else port
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _struct(values: dict) -> Any:
    from google.protobuf import struct_pb2

    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _analyze(analyzer: Any, items: list[dict]) -> list[tuple[str, str]]:
    """(policy name, urn) of every diagnostic the served pack returns for ``items``. The
    recording's secret markers reach the engine as its unknowns (`engine_values`): the
    engine never sees a marker, only the value or, at preview, not even that."""
    from pulumi.runtime.proto import analyzer_pb2

    from prodstack.policy_check import engine_values

    items = [{**r, "inputs": engine_values(r["inputs"])} for r in items]

    found = []
    for r in items:
        response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(
            type=r["type"], properties=_struct(r["inputs"]), urn=r["urn"], name=r["name"]),
            timeout=30)
        found += [(d.policyName, r["urn"]) for d in response.diagnostics]
    stack = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[
        analyzer_pb2.AnalyzerResource(
            type=r["type"], properties=_struct(r["inputs"]), urn=r["urn"], name=r["name"],
            propertyDependencies={
                key: analyzer_pb2.AnalyzerPropertyDependencies(urns=urns)
                for key, urns in r["property_dependencies"].items()})
        for r in items]), timeout=60)
    return found + [(d.policyName, d.urn) for d in stack.diagnostics]


def test_served_pack_lists_every_rule_as_mandatory(analyzer: Any) -> None:
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import analyzer_pb2

    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == "prodstack"
    assert [p.name for p in info.policies] == [p.name for p in all_policies()]
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}


def test_served_pack_passes_prod_and_names_the_rule_a_weakening_breaks(
    analyzer: Any, prod: Manifest
) -> None:
    """Through the engine's own proxies (lists are not `list` there), end to end."""
    assert _analyze(analyzer, prod.resources) == []
    weak = copy.deepcopy(prod.resources)
    acl = next(r for r in weak if r["name"] == "prodstack-waf-acl")
    next(x for x in acl["inputs"]["rules"] if x["name"] == "aws-common")["overrideAction"] = {
        "count": {}}
    ownership = next(r for r in weak if r["name"] == "prodstack-lb-logs-ownership")
    ownership["inputs"]["rule"]["objectOwnership"] = "ObjectWriter"
    found = _analyze(analyzer, weak)
    assert ("waf-managed-rules-enforced", acl["urn"]) in found
    assert ("log-buckets-hardened", "aws:s3/bucket:Bucket::prodstack-lb-logs") in found
    assert {name for name, _ in found} == {"waf-managed-rules-enforced", "log-buckets-hardened"}


def test_served_pack_reports_an_unknown_value_as_policy_check_does(analyzer: Any) -> None:
    """The engine's own analyzer and `prodstack.policy_check` agree: a rule an unknown
    value stops is an advisory "can't run policy ... during preview", not a violation."""
    from pulumi.runtime.proto import analyzer_pb2
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    type_ = "aws:rds/parameterGroup:ParameterGroup"
    props = {"family": UNKNOWN_STRING_VALUE, "parameters": []}
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(
        type=type_, properties=_struct(props), urn=f"urn:{type_}::x", name="x"), timeout=30)
    served = [(d.policyName, d.enforcementLevel, d.message) for d in response.diagnostics]
    assert [(name, level) for name, level, _ in served] == [
        ("rds-force-ssl", analyzer_pb2.ADVISORY)]
    advisories: list[str] = []
    assert check_resource(rds_force_ssl, type_, props, advisories) == []
    assert advisories == [re.sub(r" from policy pack '[^']*'", "", served[0][2])]


def test_docs_name_every_rule_and_only_rules_that_exist() -> None:
    text = (REPO / "docs" / "cloud.md").read_text()
    names = {p.name for p in all_policies()}
    assert {n for n in names if f"`{n}`" not in text} == set()
    table = text[text.index("| Rule | What must stay true |"):text.index("## AWS Foundational")]
    named = set(re.findall(r"^\| `([a-z0-9-]+)`(?:, `([a-z0-9-]+)`)?", table, re.M))
    assert {n for pair in named for n in pair if n} <= names
    cited = re.findall(r"rules? ((?:`[a-z0-9-]+`(?:, )?)+)", text)
    assert {n for group in cited for n in re.findall(r"`([a-z0-9-]+)`", group)} <= names
