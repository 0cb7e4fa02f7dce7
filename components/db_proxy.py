"""Database proxy: RDS Proxy in front of the PostgreSQL instance, TLS and IAM only."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components._common import child_opts, documented_trust_policy, merge_tags, region_and_account

# Source: pulumi_aws rds.Proxy `engine_family` (MYSQL | POSTGRESQL | SQLSERVER) and
# `default_auth_scheme` ("Default authentication scheme that the proxy uses for client
# connections to the proxy and connections from the proxy to the underlying database.
# Valid values are `NONE` and `IAM_AUTH`"; `auths` is "Required when
# `default_auth_scheme` is `NONE` or unspecified", so IAM_AUTH needs no secret).
ENGINE_FAMILY = "POSTGRESQL"
AUTH_SCHEME = "IAM_AUTH"
# Share of the instance's max_connections the proxy may open; the rest stays for the
# migrate task, which logs in directly as the owner, and for operators. stacks/config.py
# checks the connection budget with it. Source: RDS API reference,
# API_ConnectionPoolConfiguration.html (MaxConnectionsPercent "expressed as a percentage
# of the max_connections setting for the RDS DB instance", 1-100, default 100) and RDS
# user guide, rds-proxy-connections.html.
MAX_CONNECTIONS_PERCENT = 90


@dataclass(frozen=True)
class DatabaseProxyArgs:
    """Inputs of :class:`DatabaseProxy`."""

    subnet_ids: Sequence[pulumi.Input[str]]
    """Subnets of the proxy's endpoints, in at least 2 AZs (the database's isolated ones).
    Required. Example: ``net.isolated_subnet_ids``."""

    security_group_id: pulumi.Input[str]
    """The proxy's own security group: it admits the API tasks on 5432 and reaches only
    the database's group on 5432. Required. Example: ``net.proxy_security_group_id``."""

    db_instance_identifier: pulumi.Input[str]
    """RDS instance the proxy serves. Required. Example: ``db.identifier``."""

    db_resource_id: pulumi.Input[str]
    """``db-...`` resource ID of that instance, for the proxy's ``rds-db:connect`` grant.
    Required. Example: ``db.resource_id``."""

    database_user: str
    """PostgreSQL role the app logs in as; it needs ``rds_iam`` granted. Required.
    Example: ``"prodstack_app"``."""

    idle_client_timeout_seconds: int = 1800
    """Seconds an idle client connection stays open, 1-28800 (the pool's idle connections
    are recycled after 300 s anyway). Default: ``1800`` (the AWS default).
    Example: ``900``."""

    max_connections_percent: int = MAX_CONNECTIONS_PERCENT
    """Share of the instance's ``max_connections`` the proxy may open, 1-100; the rest
    stays for migrations and operators. Default: ``90``
    (:data:`MAX_CONNECTIONS_PERCENT`, what the stack's connection budget assumes).
    Example: ``75``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every taggable child. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    def __post_init__(self) -> None:
        problems = []
        # Source: pulumi_aws rds.ProxyDefaultTargetGroupConnectionPoolConfigArgs
        # `max_connections_percent` (1-100) and rds.Proxy `idle_client_timeout`; RDS user
        # guide rds-proxy-connections.html (idle client timeout up to 8 hours).
        if not 1 <= self.max_connections_percent <= 100:
            problems.append(f"max_connections_percent={self.max_connections_percent}: 1-100")
        if not 1 <= self.idle_client_timeout_seconds <= 28_800:
            problems.append(
                f"idle_client_timeout_seconds={self.idle_client_timeout_seconds}: 1-28800")
        if not self.database_user:
            problems.append("database_user: required")
        if problems:
            raise ValueError("DatabaseProxyArgs: " + "; ".join(problems))


class DatabaseProxy(pulumi.ComponentResource):
    """RDS Proxy for PostgreSQL: pools the tasks' connections onto fewer database ones.

    Creates:
        ``{name}-role`` (trusted by ``rds.amazonaws.com``, ``rds-db:connect`` as
        ``database_user`` on the instance only, and reads no secret), ``{name}-proxy``
        (TLS required, end-to-end IAM authentication), ``{name}-targets`` (the default
        target group's pool settings) and ``{name}-target`` (the instance). The target
        takes the instance's identifier output, so a first ``pulumi up`` registers it
        only once the instance is available, and :attr:`endpoint` resolves only after
        the registration: whatever connects through it is created after.

    Example:
        ``DatabaseProxy("app-proxy", DatabaseProxyArgs(subnet_ids=net.isolated_subnet_ids,
        security_group_id=net.proxy_security_group_id, db_instance_identifier=db.identifier,
        db_resource_id=db.resource_id, database_user="prodstack"))``

    Cost:
        $0.015 per vCPU-hour of the instance, at least 2 vCPUs: db.m7g.xlarge (4 vCPU)
        **~$43.80/month**, db.t4g.micro (2 vCPU, the minimum) ~$21.90/month (730 h).
        Knob: the instance class.

    Secure defaults:
        TLS required; IAM authentication from the client and to the database, so no
        password exists to leak or rotate; endpoints in the database's isolated subnets,
        in a security group of their own that only the API reaches; the role may connect
        as one user to one instance; debug logging (SQL text) off.

    Opt-outs:
        None.
    """

    endpoint: pulumi.Output[str]
    """Host name the app connects to instead of the instance's; known once the instance
    is registered as the proxy's target."""
    arn: pulumi.Output[str]
    """ARN of the proxy (its last part, ``prx-...``, is the resource ID in
    ``rds-db:connect`` grants for clients)."""
    connect_arn: pulumi.Output[str]
    """``arn:aws:rds-db:<region>:<account>:dbuser:prx-.../<user>``: what a client's role
    needs ``rds-db:connect`` on."""

    def __init__(
        self, name: str, args: DatabaseProxyArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:db_proxy:DatabaseProxy", name, None, opts)
        self._name = name
        self._args = args
        self._region, self._account = region_and_account(self)

        role = self._create_role()
        self._create_proxy(role)
        self.register_outputs(
            {"endpoint": self.endpoint, "arn": self.arn, "connect_arn": self.connect_arn}
        )

    def _tags(self, role: str) -> dict[str, str]:
        return merge_tags(self._args.tags, role)

    def _dbuser_arn(self, resource_id: str) -> str:
        # arn:aws:rds-db:<region>:<account>:dbuser:<resource id>/<db user>: the instance's
        # db-<DbiResourceId> for the proxy's own login, the proxy's prx-<id> for a client
        # ("If you are connecting to a database through RDS Proxy, specify the proxy
        # resource ID, such as prx-ABCDEFGHIJKL01234"). Source: RDS user guide,
        # UsingWithRDS.IAMDBAuth.IAMPolicy.html; rds-proxy-iam-setup.html ("When using
        # end-to-end IAM authentication, RDS Proxy connects to your database using IAM
        # authentication instead of retrieving credentials from Secrets Manager. This
        # requires configuring your IAM role with rds-db:connect permissions").
        return (f"arn:aws:rds-db:{self._region}:{self._account}:dbuser:"
                f"{resource_id}/{self._args.database_user}")

    def _create_role(self) -> aws.iam.Role:
        n, args = self._name, self._args
        role = aws.iam.Role(
            f"{n}-role",
            # The trust policy as AWS documents it for a proxy's role: rds.amazonaws.com,
            # sts:AssumeRole, no condition (the console's "RDS - Add Role to Database" use
            # case). RDS's confused-deputy page asks for aws:SourceArn/aws:SourceAccount in
            # resource policies and documents neither key for a proxy assuming its role; a
            # condition on a key RDS does not send would leave the proxy unable to connect.
            # Source: RDS user guide, rds-proxy-iam-setup.html;
            # cross-service-confused-deputy-prevention.html.
            assume_role_policy=documented_trust_policy("rds.amazonaws.com"),
            tags=self._tags("role"),
            opts=child_opts(self),
        )
        self._grant = aws.iam.RolePolicy(
            f"{n}-role-connect",
            role=role.id,
            policy=pulumi.Output.from_input(args.db_resource_id).apply(
                lambda rid: json.dumps({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": "rds-db:connect",
                    "Resource": self._dbuser_arn(rid),
                }]})
            ),
            opts=child_opts(self),
        )
        return role

    def _create_proxy(self, role: aws.iam.Role) -> None:
        n, args = self._name, self._args
        proxy = aws.rds.Proxy(
            f"{n}-proxy",
            engine_family=ENGINE_FAMILY,
            default_auth_scheme=AUTH_SCHEME,
            require_tls=True,
            role_arn=role.arn,
            vpc_subnet_ids=list(args.subnet_ids),
            vpc_security_group_ids=[args.security_group_id],
            idle_client_timeout=args.idle_client_timeout_seconds,
            debug_logging=False,  # it would log SQL text, parameters included
            tags=self._tags("proxy"),
            opts=child_opts(self, depends_on=[self._grant]),
        )
        targets = aws.rds.ProxyDefaultTargetGroup(
            f"{n}-targets",
            db_proxy_name=proxy.name,
            connection_pool_config={
                "max_connections_percent": args.max_connections_percent,
                # A client waits this long for a database connection when the pool is
                # full (API default 120 s, 1-3600; API_ConnectionPoolConfiguration.html):
                # 5 s, the app's command timeout, so a starved request fails as fast as a
                # slow query instead of queueing for two minutes.
                "connection_borrow_timeout": 5,
            },
            opts=child_opts(self),
        )
        # db_instance_identifier is the instance's own output: the engine registers the
        # target after the instance is created (the provider waits for `available`).
        target = aws.rds.ProxyTarget(
            f"{n}-target",
            db_proxy_name=proxy.name,
            target_group_name=targets.name,
            db_instance_identifier=args.db_instance_identifier,
            opts=child_opts(self),
        )
        # The endpoint carries the target's dependency: a client gets it only once the
        # proxy has somewhere to send its connections.
        self.endpoint = pulumi.Output.all(proxy.endpoint, target.id).apply(lambda v: v[0])
        self.arn = proxy.arn
        self.connect_arn = proxy.arn.apply(lambda arn: self._dbuser_arn(arn.split(":")[-1]))
