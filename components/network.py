"""Network: VPC, three subnet tiers, NAT strategy, flow logs and the security-group chain."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components._common import (
    SECURITY_LOG_CLASS,
    SECURITY_LOG_TAG,
    assume_role_policy,
    child_opts,
    merge_tags,
    region_and_account,
)

NAT_STRATEGIES = ("none", "single", "per_az")
ALB_INGRESS_SOURCES = ("world", "cloudfront")

# Name of CloudFront's origin-facing managed prefix list (IPv4); weight 55 against the
# security group's rule quota, so we add it for one port only.
# Source: AWS VPC user guide "AWS-managed prefix lists" (working-with-aws-managed-prefix-lists)
# and CloudFront developer guide LocationsOfEdgeServers#managed-prefix-list.
CLOUDFRONT_PREFIX_LIST_NAME = "com.amazonaws.global.cloudfront.origin-facing"

# Interface endpoints a Fargate task needs when there is no NAT (ECR pull, logs, secrets).
# Source: AWS ECS developer guide "Amazon ECS interface VPC endpoints" (vpc-endpoints.html).
_NO_NAT_INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "logs", "secretsmanager")

POSTGRES_PORT = 5432
REDIS_PORT = 6379


@dataclass(frozen=True)
class NetworkArgs:
    """Inputs of :class:`Network`."""

    cidr_block: str = "10.0.0.0/16"
    """IPv4 range of the VPC, private (RFC 1918), /16 to /20 so each subnet is a /24 or
    larger. Replaces the VPC. Default: ``"10.0.0.0/16"``. Example: ``"10.20.0.0/16"``."""

    az_count: int = 2
    """Availability zones to span, 2 or 3. Default: ``2`` (prod uses 3). Example: ``3``."""

    nat: str = "single"
    """Egress for the private subnets: ``none`` (no NAT; VPC interface endpoints for ECR,
    logs and Secrets Manager instead), ``single`` (one NAT gateway, cheapest that gives
    internet egress) or ``per_az`` (one per AZ, survives an AZ outage).
    Default: ``"single"``. Example: ``"per_az"``."""

    flow_logs: bool = True
    """Send VPC flow logs (all traffic) to CloudWatch Logs. Default: ``True``.
    Example: ``False`` (dev opt-out, saves ingestion cost)."""

    log_retention_days: int = 365
    """Retention of the flow-log group (security logs: an intrusion is often found late),
    a CloudWatch-accepted value (1, 3, 5, 7, 14, 30, 60, 90, ...). Default: ``365``.
    Example: ``731``."""

    app_port: int = 8000
    """Port the API containers listen on; the ALB -> service rule opens only this port.
    Default: ``8000``. Example: ``8080``."""

    alb_ingress_source: str = "world"
    """Who may reach the load balancer: ``world`` (0.0.0.0/0, only for ``alb_ports``,
    allowed only when no CDN fronts the ALB) or ``cloudfront`` (CloudFront's
    origin-facing managed prefix list). Default: ``"world"``. Example: ``"cloudfront"``."""

    alb_ports: tuple[int, ...] = (80, 443)
    """Listener ports opened on the ALB security group, each 80 or 443. With
    ``cloudfront`` only one port is allowed (the prefix list weighs 55 rules).
    Default: ``(80, 443)``. Example: ``(443,)``."""

    database_proxy: bool = False
    """Add a security group of its own for an RDS Proxy (``proxy_security_group_id``):
    it admits the service on 5432 and reaches only the database's group on 5432; the
    database also admits it. The service keeps its direct way to the database (the
    migrate task logs in as the owner, which the proxy's IAM-only auth would refuse).
    Default: ``False``. Example: ``True``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every taggable child. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        if self.nat not in NAT_STRATEGIES:
            problems.append(f"nat={self.nat!r}: allowed {', '.join(NAT_STRATEGIES)}")
        if self.az_count not in (2, 3):
            problems.append(f"az_count={self.az_count}: allowed 2 or 3")
        if self.alb_ingress_source not in ALB_INGRESS_SOURCES:
            problems.append(
                f"alb_ingress_source={self.alb_ingress_source!r}: allowed world, cloudfront"
            )
        if not self.alb_ports or any(p not in (80, 443) for p in self.alb_ports):
            problems.append(f"alb_ports={self.alb_ports}: allowed 80 and/or 443")
        if self.alb_ingress_source == "cloudfront" and len(self.alb_ports) != 1:
            problems.append("alb_ports: exactly one port when alb_ingress_source=cloudfront")
        try:
            subnet_cidrs(self.cidr_block, self.az_count)
        except ValueError as exc:
            problems.append(f"cidr_block={self.cidr_block!r}: {exc}")
        if problems:
            raise ValueError("NetworkArgs: " + "; ".join(problems))


def subnet_cidrs(cidr_block: str, az_count: int) -> dict[str, list[str]]:
    """Carve the VPC range into ``public``, ``private`` and ``isolated`` subnets.

    The range is cut into 16 equal blocks (prefix + 4); tier *t* in AZ *i* takes block
    ``4*t + i``, so adding a third AZ later never renumbers an existing subnet.
    Raises ``ValueError`` for a malformed, public, or too small range.
    """
    net = ipaddress.ip_network(cidr_block, strict=True)
    if net.version != 4 or not net.is_private:
        raise ValueError("must be a private IPv4 range (10/8, 172.16/12 or 192.168/16)")
    # AWS VPC limits: /16 (largest) to /28 (smallest). Source: AWS VPC user guide,
    # "VPC CIDR blocks" (vpc-cidr-blocks.html).
    if net.prefixlen < 16:
        raise ValueError("AWS allows /16 at most for a VPC")
    if net.prefixlen > 20:
        raise ValueError("too small: need /20 or larger so each of 12 subnets is a /24")
    blocks = list(net.subnets(new_prefix=net.prefixlen + 4))
    return {
        tier: [str(blocks[4 * t + i]) for i in range(az_count)]
        for t, tier in enumerate(("public", "private", "isolated"))
    }


class Network(pulumi.ComponentResource):
    """A VPC with public, private (app) and isolated (data) subnets and a locked-down SG chain.

    Creates:
        ``{name}-vpc``, ``{name}-igw``, per AZ ``{name}-public-<i>`` / ``{name}-private-<i>`` /
        ``{name}-isolated-<i>`` subnets and route tables, NAT gateways + EIPs per ``nat``,
        ``{name}-s3-endpoint`` (gateway, free), interface endpoints when ``nat="none"``,
        ``{name}-default-sg`` (the VPC default SG with every rule removed), flow logs
        (``{name}-flow-logs`` + log group + role), and four security groups
        ``{name}-alb-sg`` -> ``{name}-service-sg`` -> ``{name}-database-sg`` /
        ``{name}-cache-sg`` whose every ingress rule names its source group; with
        ``database_proxy`` also ``{name}-proxy-sg`` between the service and the database.

    Example:
        ``Network("app", NetworkArgs(az_count=3, nat="per_az"))``

    Cost:
        A NAT gateway is about $0.045/h + $0.045/GB, so ``single`` is **~$33/month** and
        ``per_az`` with 3 AZs **~$99/month** before data. ``none`` replaces NAT with 4
        interface endpoints x AZs at $0.01/h each (~$58/month for 2 AZs). Flow logs cost
        CloudWatch ingestion ($0.50/GB). Knobs: ``nat``, ``az_count``, ``flow_logs``.

    Secure defaults:
        Subnets never map public IPs; data subnets have no route out; the default SG has
        no rules; the ALB is reachable only on its listener ports; the service only from
        the ALB; PostgreSQL and Redis only from the service (and PostgreSQL from the
        proxy's group, which the service alone reaches); flow logs on.

    Opt-outs:
        ``flow_logs=False`` (dev). ``alb_ingress_source="world"`` is for stacks without CDN.
    """

    vpc_id: pulumi.Output[str]
    """ID of the VPC."""
    public_subnet_ids: list[pulumi.Output[str]]
    """Public subnets (ALB, NAT), one per AZ."""
    private_subnet_ids: list[pulumi.Output[str]]
    """Private app subnets (Fargate tasks), one per AZ, egress via NAT or endpoints."""
    isolated_subnet_ids: list[pulumi.Output[str]]
    """Isolated data subnets (RDS, ElastiCache), one per AZ, no route out of the VPC."""
    alb_security_group_id: pulumi.Output[str]
    """Security group of the load balancer."""
    service_security_group_id: pulumi.Output[str]
    """Security group of the ECS tasks."""
    database_security_group_id: pulumi.Output[str]
    """Security group of the RDS instance."""
    cache_security_group_id: pulumi.Output[str]
    """Security group of the ElastiCache replication group."""
    proxy_security_group_id: pulumi.Output[str] | None
    """Security group of the RDS Proxy (``None`` without ``database_proxy``)."""

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:network:Network", name, None, opts)
        self._name = name
        self._args = args
        cidrs = subnet_cidrs(args.cidr_block, args.az_count)
        azs = aws.get_availability_zones(
            state="available", opts=pulumi.InvokeOptions(parent=self)
        ).names[: args.az_count]

        self._create_vpc()
        self._create_subnets(azs, cidrs)
        self._create_routing()
        self._create_security_groups()
        if args.flow_logs:
            self._create_flow_logs()

        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
                "isolated_subnet_ids": self.isolated_subnet_ids,
                "alb_security_group_id": self.alb_security_group_id,
                "service_security_group_id": self.service_security_group_id,
                "database_security_group_id": self.database_security_group_id,
                "cache_security_group_id": self.cache_security_group_id,
                "proxy_security_group_id": self.proxy_security_group_id,
            }
        )

    # -- children -----------------------------------------------------------------

    def _tags(self, role: str) -> dict[str, str]:
        return merge_tags(self._args.tags, role) | {"Name": f"{self._name}-{role}"}

    def _create_vpc(self) -> None:
        n = self._name
        self.vpc = aws.ec2.Vpc(
            f"{n}-vpc",
            cidr_block=self._args.cidr_block,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=self._tags("vpc"),
            opts=child_opts(self),
        )
        self.vpc_id = self.vpc.id
        # Adopting the default SG with empty rule lists removes AWS's allow-all rules.
        aws.ec2.DefaultSecurityGroup(
            f"{n}-default-sg",
            vpc_id=self.vpc.id,
            ingress=[],
            egress=[],
            tags=self._tags("default-sg"),
            opts=child_opts(self),
        )
        self.igw = aws.ec2.InternetGateway(
            f"{n}-igw", vpc_id=self.vpc.id, tags=self._tags("igw"), opts=child_opts(self)
        )

    def _create_subnets(self, azs: list[str], cidrs: dict[str, list[str]]) -> None:
        self.subnets: dict[str, list[aws.ec2.Subnet]] = {}
        for tier, blocks in cidrs.items():
            self.subnets[tier] = [
                aws.ec2.Subnet(
                    f"{self._name}-{tier}-{i}",
                    vpc_id=self.vpc.id,
                    cidr_block=block,
                    availability_zone=azs[i],
                    map_public_ip_on_launch=False,
                    tags=self._tags(f"{tier}-{i}") | {"prodstack:tier": tier},
                    opts=child_opts(self),
                )
                for i, block in enumerate(blocks)
            ]
        self.public_subnet_ids = [s.id for s in self.subnets["public"]]
        self.private_subnet_ids = [s.id for s in self.subnets["private"]]
        self.isolated_subnet_ids = [s.id for s in self.subnets["isolated"]]

    def _route_table(self, role: str, subnets: list[aws.ec2.Subnet]) -> aws.ec2.RouteTable:
        table = aws.ec2.RouteTable(
            f"{self._name}-{role}-rt",
            vpc_id=self.vpc.id,
            tags=self._tags(f"{role}-rt"),
            opts=child_opts(self),
        )
        for subnet in subnets:
            aws.ec2.RouteTableAssociation(
                f"{self._name}-{role}-rta-{self.subnets_index(subnet)}",
                route_table_id=table.id,
                subnet_id=subnet.id,
                opts=child_opts(self),
            )
        return table

    def subnets_index(self, subnet: aws.ec2.Subnet) -> str:
        """``<tier>-<i>`` of one of this network's subnets (stable logical-name suffix)."""
        for tier, subnets in self.subnets.items():
            if subnet in subnets:
                return f"{tier}-{subnets.index(subnet)}"
        raise KeyError(subnet)

    def _create_routing(self) -> None:
        n, args = self._name, self._args
        public_rt = self._route_table("public", self.subnets["public"])
        aws.ec2.Route(
            f"{n}-public-default-route",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=self.igw.id,
            opts=child_opts(self),
        )
        nat_count = {"none": 0, "single": 1, "per_az": args.az_count}[args.nat]
        nats = []
        for i in range(nat_count):
            eip = aws.ec2.Eip(
                f"{n}-nat-eip-{i}", domain="vpc", tags=self._tags(f"nat-eip-{i}"),
                opts=child_opts(self),
            )
            nats.append(
                aws.ec2.NatGateway(
                    f"{n}-nat-{i}",
                    allocation_id=eip.id,
                    subnet_id=self.subnets["public"][i].id,
                    tags=self._tags(f"nat-{i}"),
                    opts=child_opts(self, depends_on=[self.igw]),
                )
            )
        private_tables = []
        for i, subnet in enumerate(self.subnets["private"]):
            table = self._route_table(f"private-{i}", [subnet])
            private_tables.append(table)
            if nats:
                aws.ec2.Route(
                    f"{n}-private-{i}-default-route",
                    route_table_id=table.id,
                    destination_cidr_block="0.0.0.0/0",
                    nat_gateway_id=nats[i % len(nats)].id,
                    opts=child_opts(self),
                )
        # Isolated (data) subnets: local routes only, nothing leaves the VPC.
        self._route_table("isolated", self.subnets["isolated"])

        region = aws.get_region(opts=pulumi.InvokeOptions(parent=self)).region
        # Gateway endpoint for S3 is free; ECR image layers are served from S3.
        aws.ec2.VpcEndpoint(
            f"{n}-s3-endpoint",
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[t.id for t in private_tables],
            tags=self._tags("s3-endpoint"),
            opts=child_opts(self),
        )
        self._private_tables = private_tables
        self._region = region

    def _create_security_groups(self) -> None:
        n, args = self._name, self._args
        groups = {}
        roles = [
            ("alb", "load balancer"),
            ("service", "API tasks"),
            ("database", "PostgreSQL"),
            ("cache", "Redis"),
        ]
        if args.database_proxy:
            roles.append(("proxy", "RDS Proxy"))
        for role, what in roles:
            groups[role] = aws.ec2.SecurityGroup(
                f"{n}-{role}-sg",
                vpc_id=self.vpc.id,
                description=f"prodstack {what}",
                revoke_rules_on_delete=True,
                tags=self._tags(f"{role}-sg"),
                opts=child_opts(self),
            )
        self.alb_security_group_id = groups["alb"].id
        self.service_security_group_id = groups["service"].id
        self.database_security_group_id = groups["database"].id
        self.cache_security_group_id = groups["cache"].id
        self.proxy_security_group_id = groups["proxy"].id if "proxy" in groups else None

        if args.alb_ingress_source == "cloudfront":
            prefix_list = aws.ec2.get_managed_prefix_list(
                name=CLOUDFRONT_PREFIX_LIST_NAME, opts=pulumi.InvokeOptions(parent=self)
            )
            source = {"prefix_list_id": prefix_list.id}
        else:
            source = {"cidr_ipv4": "0.0.0.0/0"}
        for port in args.alb_ports:
            aws.vpc.SecurityGroupIngressRule(
                f"{n}-alb-in-{port}",
                security_group_id=groups["alb"].id,
                description=f"HTTP(S) {port} from {args.alb_ingress_source}",
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                **source,
                opts=child_opts(self),
            )
        chain = (
            # (rule role, from group, to group, port, description)
            ("alb-to-service", "alb", "service", args.app_port, "ALB to API tasks"),
            ("service-to-database", "service", "database", POSTGRES_PORT, "API to PostgreSQL"),
            ("service-to-cache", "service", "cache", REDIS_PORT, "API to Redis"),
        )
        if args.database_proxy:
            # The proxy is a hop of its own, in the database's VPC (RDS user guide,
            # rds-proxy-network-prereqs.html): the API reaches it on the PostgreSQL port
            # its endpoint listens on, and it reaches the instance on the same port.
            chain += (
                ("service-to-proxy", "service", "proxy", POSTGRES_PORT, "API to RDS Proxy"),
                ("proxy-to-database", "proxy", "database", POSTGRES_PORT,
                 "RDS Proxy to PostgreSQL"),
            )
        for role, src, dst, port, desc in chain:
            aws.vpc.SecurityGroupEgressRule(
                f"{n}-{role}-out",
                security_group_id=groups[src].id,
                referenced_security_group_id=groups[dst].id,
                ip_protocol="tcp", from_port=port, to_port=port, description=desc,
                opts=child_opts(self),
            )
            aws.vpc.SecurityGroupIngressRule(
                f"{n}-{role}-in",
                security_group_id=groups[dst].id,
                referenced_security_group_id=groups[src].id,
                ip_protocol="tcp", from_port=port, to_port=port, description=desc,
                opts=child_opts(self),
            )
        # Tasks call AWS APIs (ECR, Secrets Manager, CloudWatch Logs) over HTTPS.
        aws.vpc.SecurityGroupEgressRule(
            f"{n}-service-https-out",
            security_group_id=groups["service"].id,
            cidr_ipv4="0.0.0.0/0",
            ip_protocol="tcp", from_port=443, to_port=443,
            description="HTTPS to AWS APIs",
            opts=child_opts(self),
        )
        if args.nat == "none":
            self._create_interface_endpoints(groups["service"])

    def _create_interface_endpoints(self, service_sg: aws.ec2.SecurityGroup) -> None:
        n = self._name
        endpoint_sg = aws.ec2.SecurityGroup(
            f"{n}-endpoints-sg",
            vpc_id=self.vpc.id,
            description="prodstack VPC interface endpoints",
            revoke_rules_on_delete=True,
            tags=self._tags("endpoints-sg"),
            opts=child_opts(self),
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{n}-service-to-endpoints-in",
            security_group_id=endpoint_sg.id,
            referenced_security_group_id=service_sg.id,
            ip_protocol="tcp", from_port=443, to_port=443,
            description="API tasks to AWS endpoints",
            opts=child_opts(self),
        )
        for svc in _NO_NAT_INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{n}-{svc.replace('.', '-')}-endpoint",
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{self._region}.{svc}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=self.private_subnet_ids,
                security_group_ids=[endpoint_sg.id],
                tags=self._tags(f"{svc}-endpoint"),
                opts=child_opts(self),
            )

    def _create_flow_logs(self) -> None:
        n, args = self._name, self._args
        group = aws.cloudwatch.LogGroup(
            f"{n}-flow-logs-group",
            retention_in_days=args.log_retention_days,
            tags=self._tags("flow-logs-group") | {SECURITY_LOG_TAG: SECURITY_LOG_CLASS},
            opts=child_opts(self),
        )
        region, account = region_and_account(self)
        role = aws.iam.Role(
            f"{n}-flow-logs-role",
            # Only flow logs of this account and Region may use the role. Source: Amazon
            # VPC user guide, flow-logs-iam-role.html (confused deputy prevention:
            # aws:SourceAccount and aws:SourceArn arn:aws:ec2:<region>:<account>:vpc-flow-log/*).
            assume_role_policy=assume_role_policy(
                "vpc-flow-logs.amazonaws.com",
                account=account,
                source_arn=f"arn:aws:ec2:{region}:{account}:vpc-flow-log/*",
            ),
            tags=self._tags("flow-logs-role"),
            opts=child_opts(self),
        )
        aws.iam.RolePolicy(
            f"{n}-flow-logs-policy",
            role=role.id,
            policy=group.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "logs:CreateLogStream",
                                    "logs:PutLogEvents",
                                    "logs:DescribeLogGroups",
                                    "logs:DescribeLogStreams",
                                ],
                                "Resource": [arn, f"{arn}:*"],
                            }
                        ],
                    }
                )
            ),
            opts=child_opts(self),
        )
        aws.ec2.FlowLog(
            f"{n}-flow-logs",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags=self._tags("flow-logs"),
            opts=child_opts(self),
        )
