"""rds_proxy: true puts RDS Proxy between the API and PostgreSQL: TLS required and verified
against the system roots, IAM authentication end to end (no secret), a security group of
its own, the app's statement cache off, and the migrate task still on the instance.

One harness run of prod with the proxy (the session's ``prod_proxy``); its weakenings are
in test_cloud_mutations.py.
"""

from __future__ import annotations

import json

import pytest
from prodstack_cloud_harness import Manifest, run_all

from stacks.config import connection_budget, load
from stacks.program import PROXY_CA_BUNDLE

PROXY = "rds/proxy:Proxy"
TARGET = "aws:rds/proxyTarget:ProxyTarget::prodstack-db-proxy-target"
INGRESS = "vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "vpc/securityGroupEgressRule:SecurityGroupEgressRule"


def env(m: Manifest, container: str) -> dict[str, str]:
    return {e["name"]: e["value"]
            for e in m.containers("prodstack-prod")[container]["environment"]}  # fmt: skip


def policy(m: Manifest, name: str) -> dict:
    return json.loads(m.one("iam/rolePolicy:RolePolicy", name)["policy"])


def computed(m: Manifest, urn: str, attribute: str) -> str:
    """The value the recorder's mocks gave ``attribute`` of resource ``urn``."""
    (value,) = [v for v, where in m.data["computed"].items() if where == f"{urn}.{attribute}"]
    return value


def test_proxy_requires_tls_and_iam_and_holds_no_secret(prod_proxy: Manifest) -> None:
    proxy = prod_proxy.one(PROXY)
    assert proxy["requireTls"] is True
    assert proxy["defaultAuthScheme"] == "IAM_AUTH"
    assert proxy["engineFamily"] == "POSTGRESQL"
    assert "auths" not in proxy  # no Secrets Manager password behind it
    assert proxy["debugLogging"] is False  # would log SQL text and parameters
    assert proxy["vpcSubnetIds"] == [f"prodstack-net-isolated-{i}-id" for i in range(3)]
    assert proxy["vpcSecurityGroupIds"] == ["prodstack-net-proxy-sg-id"]
    pool = prod_proxy.one("rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup")
    assert pool["connectionPoolConfig"]["maxConnectionsPercent"] == 90


def test_proxy_role_connects_to_the_instance_and_reads_nothing(prod_proxy: Manifest) -> None:
    role = prod_proxy.one("iam/role:Role", "prodstack-db-proxy-role")
    (trust,) = json.loads(role["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "rds.amazonaws.com"}
    grants = [r for r in prod_proxy.all("iam/rolePolicy:RolePolicy")
              if r["inputs"]["role"] == "prodstack-db-proxy-role-id"]  # fmt: skip
    assert [g["name"] for g in grants] == ["prodstack-db-proxy-role-connect"]
    assert not [a for a in prod_proxy.all("iam/rolePolicyAttachment:RolePolicyAttachment")
                if a["inputs"]["role"] == "prodstack-db-proxy-role-id"]  # fmt: skip
    (grant,) = policy(prod_proxy, "prodstack-db-proxy-role-connect")["Statement"]
    # End-to-end IAM: the proxy logs in to the instance (db-<DbiResourceId>) by token.
    resource_id = computed(prod_proxy, "aws:rds/instance:Instance::prodstack-db-instance",
                           "resourceId")
    assert resource_id.startswith("db-")
    assert grant == {
        "Effect": "Allow", "Action": "rds-db:connect",
        "Resource": f"arn:aws:rds-db:eu-west-1:123456789012:dbuser:{resource_id}/prodstack_app",
    }


def test_api_connects_through_the_proxy_verified_by_the_system_roots(
    prod_proxy: Manifest,
) -> None:
    api = env(prod_proxy, "api")
    assert api["DB_HOST"].startswith("prodstack-db-proxy-proxy.proxy-")
    assert api["DB_SSLMODE"] == "verify-full"
    # ACM (Amazon Trust Services) roots live in the system store, not the RDS bundle.
    assert api["DB_SSLROOTCERT"] == PROXY_CA_BUNDLE == "/etc/ssl/certs/ca-certificates.crt"
    assert api["DB_STATEMENT_CACHE_SIZE"] == "0"  # named statements pin on a proxy
    assert api["DB_IAM"] == "true"
    # The task role signs tokens for the proxy (prx-<id>), and for nothing else.
    (grant,) = policy(prod_proxy, "prodstack-api-task-role-db-connect")["Statement"]
    proxy_arn = computed(prod_proxy, "aws:rds/proxy:Proxy::prodstack-db-proxy-proxy", "arn")
    proxy_id = proxy_arn.rsplit(":", 1)[1]  # arn:aws:rds:<region>:<account>:db-proxy:prx-...
    assert proxy_id.startswith("prx-")
    assert grant == {
        "Effect": "Allow", "Action": "rds-db:connect",
        "Resource": f"arn:aws:rds-db:eu-west-1:123456789012:dbuser:{proxy_id}/prodstack_app",
    }


def test_migrate_stays_on_the_instance_with_its_own_root(
    prod_proxy: Manifest, prod: Manifest
) -> None:
    """The owner's password login would be refused by the IAM-only proxy."""
    migrate, api = env(prod_proxy, "migrate"), env(prod_proxy, "api")
    assert migrate["DB_HOST"] == env(prod, "migrate")["DB_HOST"]
    assert migrate["DB_HOST"].endswith(".rds.amazonaws.com") and ".proxy-" not in migrate[
        "DB_HOST"]
    assert migrate.get("DB_SSLROOTCERT") != api["DB_SSLROOTCERT"]
    assert migrate.get("DB_SSLROOTCERT") == env(prod, "migrate").get("DB_SSLROOTCERT")
    assert "DB_STATEMENT_CACHE_SIZE" not in migrate


def test_proxy_has_its_own_group_between_service_and_database(prod_proxy: Manifest) -> None:
    def shape(t: str) -> set[tuple]:
        return {(r["securityGroupId"], r.get("referencedSecurityGroupId"), r.get("cidrIpv4"),
                 r["ipProtocol"], r["fromPort"], r["toPort"])
                for r in prod_proxy.inputs(t)
                if "proxy-sg" in r["securityGroupId"] + str(r.get("referencedSecurityGroupId"))}

    svc, proxy, db = ("prodstack-net-service-sg-id", "prodstack-net-proxy-sg-id",
                      "prodstack-net-database-sg-id")
    assert shape(INGRESS) == {(proxy, svc, None, "tcp", 5432, 5432),
                              (db, proxy, None, "tcp", 5432, 5432)}
    assert shape(EGRESS) == {(svc, proxy, None, "tcp", 5432, 5432),
                             (proxy, db, None, "tcp", 5432, 5432)}
    # The database's group still starts nothing, and nothing admits itself.
    assert not [r for r in prod_proxy.inputs(EGRESS) if r["securityGroupId"] == db]
    assert not [r for t in (INGRESS, EGRESS) for r in prod_proxy.inputs(t)
                if r.get("referencedSecurityGroupId") == r["securityGroupId"]]


def test_first_up_registers_the_target_after_the_instance_and_serves_after_it(
    prod_proxy: Manifest,
) -> None:
    """The target takes the instance's identifier output (created, so available, first);
    the API's task definition takes the endpoint, which resolves after the target."""
    target = prod_proxy.named("prodstack-db-proxy-target")
    deps = target["property_dependencies"]
    assert deps["dbInstanceIdentifier"] == ["aws:rds/instance:Instance::prodstack-db-instance"]
    assert deps["dbProxyName"] == ["aws:rds/proxy:Proxy::prodstack-db-proxy-proxy"]
    task = prod_proxy.named("prodstack-api-task")
    assert TARGET in task["property_dependencies"]["containerDefinitions"]


def test_without_the_proxy_nothing_changes(prod: Manifest, dev: Manifest) -> None:
    for m in (prod, dev):
        assert not m.all(PROXY)
        assert not [r for r in m.all("ec2/securityGroup:SecurityGroup")
                    if r["name"].endswith("proxy-sg")]  # fmt: skip
    api = env(prod, "api")
    assert api["DB_HOST"].endswith(".rds.amazonaws.com") and ".proxy-" not in api["DB_HOST"]
    assert "DB_STATEMENT_CACHE_SIZE" not in api
    assert api.get("DB_SSLROOTCERT") != PROXY_CA_BUNDLE
    (grant,) = policy(prod, "prodstack-api-task-role-db-connect")["Statement"]
    assert ":dbuser:db-" in grant["Resource"]


def test_proxied_stack_passes_the_policy_pack(prod_proxy: Manifest) -> None:
    assert run_all(prod_proxy) == []


# ---- the connection budget behind the proxy -------------------------------------------

BUSY = {"size": "small", "max_replicas": "4", "replicas": "1", "min_replicas": "1"}


def test_behind_the_proxy_the_budget_is_the_proxys_share() -> None:
    """81 task connections overrun db.t4g.micro's 75; behind the proxy they end at the
    proxy, which opens 90 % of max_connections (72) + the migrate task: 73 <= 75."""
    from stacks.config import ConfigError

    with pytest.raises(ConfigError, match="db_pool_max"):
        load(BUSY, region="eu-west-1", stack="dev")
    cfg = load(BUSY | {"rds_proxy": "true"}, region="eu-west-1", stack="dev")
    assert cfg.rds_proxy is True
    budget = connection_budget(cfg.db_instance_class, max_replicas=4, web_concurrency=1,
                               db_pool_max=10, proxy_percent=90)
    assert (budget["max_connections"], budget["available"]) == (80, 75)
    assert (budget["clients"], budget["proxy_share"], budget["peak"]) == (80, 72, 73)


def test_a_proxy_share_that_leaves_no_room_is_refused_with_the_numbers() -> None:
    budget = connection_budget("db.t4g.micro", max_replicas=1, web_concurrency=1,
                               db_pool_max=1, proxy_percent=100)
    assert budget["peak"] == 81 > budget["available"] == 75
    assert "80 = 100 % max_connections_percent of 80" in budget["fix"]
    assert "migrate" in budget["fix"]


def test_the_config_check_uses_the_components_share(monkeypatch) -> None:
    """stacks/config.py reads the proxy's share from components/db_proxy.py: raise it and
    the same stack is refused, naming rds_proxy."""
    from stacks import config
    from stacks.config import ConfigError

    monkeypatch.setattr(config, "PROXY_MAX_CONNECTIONS_PERCENT", 100)
    with pytest.raises(ConfigError, match=r"rds_proxy.*100 % max_connections_percent"):
        load(BUSY | {"rds_proxy": "true"}, region="eu-west-1", stack="dev")


# ---- what it costs ----------------------------------------------------------------------

def test_prodstack_cost_bills_the_proxy_per_vcpu_of_the_instance(
    prod_proxy: Manifest, prod: Manifest
) -> None:
    """db.m7g.xlarge has 4 vCPUs: 4 x 730 h x $0.0165 (eu-west-1, prices.toml)."""
    from prodstack import cost
    from prodstack.cloud_plan import to_plan

    usage = cost.load_usage(None, "large")
    with_proxy = cost.estimate(to_plan(prod_proxy.data), usage)
    (line,) = [li for li in with_proxy["lines"] if li["item"].startswith("RDS Proxy")]
    assert line["item"] == "RDS Proxy (4 vCPUs of db.m7g.xlarge)"
    assert line["monthly"] == pytest.approx(4 * 730 * 0.0165, abs=0.01)  # 48.18
    without = cost.estimate(to_plan(prod.data), usage)
    assert not [li for li in without["lines"] if li["item"].startswith("RDS Proxy")]
    added = with_proxy["fixed_monthly"] - without["fixed_monthly"]
    assert added == pytest.approx(line["monthly"], abs=0.01)


# ---- the proxy shape is accepted because a proxy sits in it, not for everyone -----------

def _without(resources: list[dict], name: str) -> list[dict]:
    return [r for r in resources if r["name"] != name]


def test_database_admits_the_proxy_group_only_while_a_proxy_sits_in_it(
    prod_proxy: Manifest,
) -> None:
    """Drop the proxy and keep its group: the database's rule for that group is then an
    ordinary foreign source, and the ingress rule names it."""
    from prodstack_cloud_harness import run_policy

    from policies.network import security_group_ingress

    assert run_policy(security_group_ingress, prod_proxy.resources) == []
    orphan = _without(prod_proxy.resources, "prodstack-db-proxy-proxy")
    violations = run_policy(security_group_ingress, orphan)
    assert [v for v in violations if "prodstack-net-proxy-to-database-in" in v]
    assert all("proxy-to-database-in" in v for v in violations), violations
