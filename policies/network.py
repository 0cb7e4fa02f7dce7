"""The network: no public data stores or tasks, security groups (nothing open to the world
but the ALB's web ports, restricted egress, named ingress sources, empty default
groups), private and isolated subnets, VPC flow logs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ReportViolation, StackValidationArgs

from policies._shared import (
    as_list,
    as_map,
    is_prod,
    linked,
    lookup,
    of_type,
    resource_policy,
    stack_policy,
    strings,
    tags_of,
)

WORLD = ("0.0.0.0/0", "::/0")


# ---- no public database or cache -------------------------------------------------------

@resource_policy(
    "no-public-database-or-tasks",
    "RDS instances are not publicly accessible; ECS tasks get no public IP.",
    types=("aws:rds/instance:Instance", "aws:ecs/service:Service"),
)
def no_public_data_stores(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("publiclyAccessible") is True:
        yield "Databases must not be publicly accessible (publiclyAccessible: false)."
    if as_map(props.get("networkConfiguration")).get("assignPublicIp") is True:
        yield "ECS tasks must not get public IPs (assignPublicIp: false)."


# ---- no security group open to the world (except the ALB's 80/443 without CDN) ---------

@stack_policy(
    "no-world-open-security-groups",
    "No ingress from 0.0.0.0/0 or ::/0 except the ALB's 80/443 with no CDN.",
)
def no_world_open_security_groups(args: StackValidationArgs, report: ReportViolation) -> None:
    has_cdn = any(
        r.resource_type == "aws:cloudfront/distribution:Distribution" for r in args.resources
    )
    for r in args.resources:
        if r.resource_type == "aws:ec2/securityGroup:SecurityGroup":
            for rule in map(as_map, as_list(r.props.get("ingress"))):
                if set(rule.get("cidrBlocks") or []) & {WORLD[0]} or set(
                        rule.get("ipv6CidrBlocks") or []) & {WORLD[1]}:
                    report("Inline security-group ingress open to the world.", r.urn)
            continue
        if r.resource_type != "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
            continue
        if r.props.get("cidrIpv4") not in WORLD and r.props.get("cidrIpv6") not in WORLD:
            continue
        groups = (r.property_dependencies or {}).get("securityGroupId") or []
        is_alb = any(tags_of(g.props).get("prodstack:role") == "alb-sg" for g in groups)
        ports = {r.props.get("fromPort"), r.props.get("toPort")}
        if has_cdn:
            report("Open to the world while a CDN fronts the ALB: use CloudFront's "
                   "origin-facing prefix list.", r.urn)
        elif not is_alb or not ports <= {80, 443}:
            report("Only the ALB's 80/443 may be open to the world.", r.urn)


# ---- security groups: restricted egress, named ingress sources, empty default SG ------

HTTPS_PORT = 443
POSTGRES_PORT = 5432
ALL_PROTOCOLS = ("-1", "all")
DATA_GROUP_ROLES = ("database-sg", "cache-sg")
# An RDS Proxy's own group (components/network.py, database_proxy): a hop between the
# service and the database, admitted by the database on 5432 and reaching nothing else.
PROXY_GROUP_ROLE = "proxy-sg"


def _group_roles(resource: Any, key: str) -> set[str]:
    return {str(tags_of(dep.props).get("prodstack:role")) for dep in
            (resource.property_dependencies or {}).get(key, [])}


def _postgres_only(rule: Mapping[str, Any]) -> bool:
    return (str(rule.get("ipProtocol")) == "tcp"
            and rule.get("fromPort") == rule.get("toPort") == POSTGRES_PORT)


def _proxy_groups(args: StackValidationArgs) -> set[str]:
    """URNs of the security groups an RDS Proxy in the stack sits in."""
    return {urn for r in of_type(args, "rds/proxy:Proxy")
            for urn in linked(r, "vpcSecurityGroupIds")}


def _egress_problem(rule: Mapping[str, Any], cidrs: list[str]) -> str | None:
    protocol = str(rule.get("ipProtocol", rule.get("protocol", "")))
    if protocol in ALL_PROTOCOLS:
        return "egress must name a protocol (not -1, all protocols)."
    if rule.get("fromPort") != rule.get("toPort"):
        return f"egress must open one port, not {rule.get('fromPort')}-{rule.get('toPort')}."
    if cidrs and not (protocol == "tcp" and rule.get("fromPort") == HTTPS_PORT):
        return "egress to an address range is only for HTTPS (tcp 443) to AWS APIs."
    return None


@stack_policy(
    "security-group-egress-restricted",
    "Egress names a protocol and one port; address ranges only for HTTPS; "
                "the database and cache groups have no egress; an RDS Proxy's group "
                "reaches only the database's group on 5432.",
)
def security_group_egress(args: StackValidationArgs, report: ReportViolation) -> None:
    for r in of_type(args, "vpc/securityGroupEgressRule:SecurityGroupEgressRule"):
        cidrs = [c for c in (r.props.get("cidrIpv4"), r.props.get("cidrIpv6")) if c]
        problem = _egress_problem(r.props, cidrs)
        if problem:
            report(f"Security-group {problem}", r.urn)
        if _group_roles(r, "securityGroupId") & set(DATA_GROUP_ROLES):
            report("Database and cache security groups start no connections (no egress).",
                   r.urn)
        if PROXY_GROUP_ROLE in _group_roles(r, "securityGroupId") and (
                cidrs or not _postgres_only(r.props)
                or _group_roles(r, "referencedSecurityGroupId") != {"database-sg"}):
            report("The RDS Proxy's group reaches only the database's group, on tcp 5432.",
                   r.urn)
    for r in of_type(args, "ec2/securityGroup:SecurityGroup"):
        for rule in map(as_map, as_list(r.props.get("egress"))):
            cidrs = [*strings(rule.get("cidrBlocks")), *strings(rule.get("ipv6CidrBlocks"))]
            problem = _egress_problem(rule, cidrs)
            if problem:
                report(f"Inline security-group {problem}", r.urn)


@stack_policy(
    "security-group-ingress-named-sources",
    "Ingress names a protocol and its source group or prefix list (the ALB's "
                "web ports excepted), the data stores admit only the service's group (the "
                "database also an RDS Proxy's group on 5432), an RDS Proxy's group admits "
                "only the service's on 5432, and every VPC's default security group has no "
                "rules.",
)
def security_group_ingress(args: StackValidationArgs, report: ReportViolation) -> None:
    proxy_groups = _proxy_groups(args)
    for r in of_type(args, "vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        if str(r.props.get("ipProtocol")) in ALL_PROTOCOLS:
            report("Security-group ingress must name a protocol (not -1).", r.urn)
        into = _group_roles(r, "securityGroupId")
        source = _group_roles(r, "referencedSecurityGroupId")
        # The one other client of PostgreSQL: the group an RDS Proxy of this stack sits
        # in, on 5432 (the proxy's own shape is judged below).
        from_proxy = (into == {"database-sg"} and source == {PROXY_GROUP_ROLE}
                      and _postgres_only(r.props)
                      and bool(linked(r, "referencedSecurityGroupId") & proxy_groups))
        if into & set(DATA_GROUP_ROLES) and source != {"service-sg"} and not from_proxy:
            report("The database and cache admit only the service's security group (and "
                   "the database an RDS Proxy's group on 5432).", r.urn)
        if PROXY_GROUP_ROLE in into and (source != {"service-sg"}
                                         or not _postgres_only(r.props)):
            report("The RDS Proxy's group admits only the service's group, on tcp 5432.",
                   r.urn)
        if lookup(r.props, "referencedSecurityGroupId") or lookup(r.props, "prefixListId"):
            continue
        # An address range is only ever the world on the ALB's web ports (judged by
        # no-world-open-security-groups); anything else must name its source group.
        if "alb-sg" not in _group_roles(r, "securityGroupId") or {
                r.props.get("fromPort"), r.props.get("toPort")} - {80, 443}:
            report("Security-group ingress must name its source security group or prefix "
                   "list (only the ALB's 80/443 take an address range).", r.urn)
    vpcs = {r.urn for r in of_type(args, "ec2/vpc:Vpc")}
    adopted: set[str] = set()
    for r in of_type(args, "ec2/defaultSecurityGroup:DefaultSecurityGroup"):
        adopted |= linked(r, "vpcId")
        if as_list(r.props.get("ingress")) or as_list(r.props.get("egress")) or not (
                "ingress" in r.props and "egress" in r.props):
            report("The VPC's default security group must be adopted with no rules "
                   "(ingress: [], egress: []; FSBP EC2.2).", r.urn)
    for vpc in sorted(vpcs - adopted):
        report("VPC's default security group is not adopted and emptied.", vpc)


@resource_policy(
    "subnets-no-auto-public-ip",
    "No subnet assigns public IPs on launch.",
    types="aws:ec2/subnet:Subnet",
)
def subnets_private(_type: str, props: Mapping[str, Any]) -> Iterable[str]:
    if props.get("mapPublicIpOnLaunch") is True:
        yield "Subnets must not give instances public IPs (mapPublicIpOnLaunch; FSBP EC2.15)."


@stack_policy(
    "vpc-flow-logs-in-prod",
    "Every prod VPC has a flow log of ALL traffic.",
)
def vpc_flow_logs(args: StackValidationArgs, report: ReportViolation) -> None:
    logged = set()
    for r in of_type(args, "ec2/flowLog:FlowLog"):
        if r.props.get("trafficType") == "ALL":
            logged |= linked(r, "vpcId")
    for vpc in of_type(args, "ec2/vpc:Vpc"):
        if is_prod(vpc.props) and vpc.urn not in logged:
            report("Prod VPCs log all traffic (a flow log with trafficType ALL; FSBP EC2.6).",
                   vpc.urn)


@stack_policy(
    "data-subnets-isolated",
    "RDS and ElastiCache subnet groups use only isolated subnets, whose route "
                "tables have no route out of the VPC.",
)
def data_subnets_isolated(args: StackValidationArgs, report: ReportViolation) -> None:
    isolated = {r.urn for r in of_type(args, "ec2/subnet:Subnet")
                if tags_of(r.props).get("prodstack:tier") == "isolated"}  # fmt: skip
    for group in [*of_type(args, "rds/subnetGroup:SubnetGroup"),
                  *of_type(args, "elasticache/subnetGroup:SubnetGroup")]:
        outside = linked(group, "subnetIds") - isolated
        if outside:
            report(f"Data stores live in isolated subnets only, not {sorted(outside)}.",
                   group.urn)
    isolated_tables = set()
    for r in of_type(args, "ec2/routeTableAssociation:RouteTableAssociation"):
        if linked(r, "subnetId") & isolated:
            isolated_tables |= linked(r, "routeTableId")
    for r in of_type(args, "ec2/route:Route"):
        if linked(r, "routeTableId") & isolated_tables:
            report("Isolated (data) subnets have no route out of the VPC.", r.urn)

