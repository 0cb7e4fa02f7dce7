"""The prodstack composition: config first, then components, then exports.

Composition only: every resource lives in a component, except the API-token secret
(a supporting resource, under its banner below).
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_random as random

from app.core.config import INT_SETTINGS as APP_INT_SETTINGS
from components._common import (
    ECS_EXEC_TAG,
    ENVIRONMENT_TAG,
    TEARDOWN_TAG,
    alias_record,
    stored_secret,
)
from components.backup import Backup, BackupArgs
from components.cache import Cache, CacheArgs
from components.cdn import Cdn, CdnArgs
from components.database import Database, DatabaseArgs
from components.db_proxy import DatabaseProxy, DatabaseProxyArgs
from components.keys import Keys, KeysArgs
from components.load_balancer import LoadBalancer, LoadBalancerArgs
from components.metrics import Metrics, MetricsArgs
from components.network import Network, NetworkArgs
from components.observability import (
    DEPLOYMENT_ALARM_ROLES,
    Observability,
    ObservabilityArgs,
    alarm_name,
)
from components.registry import Registry, RegistryArgs
from components.service import Service, ServiceArgs
from components.waf import BODY_INSPECTION_LIMITS, WebAcl, WebAclArgs
from stacks import rds_ca
from stacks.config import StackConfig, app_context, from_pulumi

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_DIR = REPO_ROOT / "app"
APP_PORT = 8000
# Debian's CA bundle inside the image (package ca-certificates), which holds the roots
# the RDS Proxy endpoint's ACM certificate chains to. Source: amazontrust.com/repository
# (the five Amazon Trust Services roots; "we recommend that all five of the above roots
# be included in the trust store").
PROXY_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PROXY_CA_ROOTS = (
    "Amazon Root CA 1", "Amazon Root CA 2", "Amazon Root CA 3", "Amazon Root CA 4",
    "Starfield Services Root Certificate Authority - G2",
)


def build(cfg: StackConfig) -> dict[str, pulumi.Input]:
    """Create the whole stack from a validated config; returns the stack outputs."""
    # ---- locals ------------------------------------------------------------------
    name = "prodstack"
    physical = f"prodstack-{cfg.stack}".lower()[:40].rstrip("-")
    tags = {ENVIRONMENT_TAG: cfg.environment, "prodstack:stack": cfg.stack}
    dev_teardown = not cfg.deletion_protection  # dev: let `pulumi destroy` finish
    if cfg.teardown:
        # The named exception the policy pack accepts for lifted deletion protection.
        tags[TEARDOWN_TAG] = "requested"
        pulumi.log.warn(
            "teardown: true lifts deletion protection on the database and the load "
            "balancer so `pulumi destroy` can finish; the final snapshot is still taken. "
            "Set it back to false to keep the stack."
        )

    waf_scope = "CLOUDFRONT" if cfg.cdn else "REGIONAL"
    # The app's body limit, lowered to what the WAF in front inspects (8 KB on an ALB):
    # a body the app accepts is inspected whole, and the WAF blocks exactly what the app
    # would refuse.
    max_body_bytes = APP_INT_SETTINGS["MAX_BODY_BYTES"][0]
    if cfg.waf:
        max_body_bytes = min(max_body_bytes, BODY_INSPECTION_LIMITS[waf_scope])

    if cfg.domain:
        alb_ports: tuple[int, ...] = (443,) if cfg.cdn else (80, 443)
    else:
        alb_ports = (80,)

    # ---- components --------------------------------------------------------------
    network = Network(f"{name}-net", NetworkArgs(
        cidr_block=cfg.vpc_cidr,
        az_count=cfg.az_count,
        nat=cfg.nat,
        flow_logs=cfg.flow_logs,
        log_retention_days=cfg.security_log_retention_days,  # flow logs only
        app_port=APP_PORT,
        alb_ingress_source="cloudfront" if cfg.cdn else "world",
        alb_ports=alb_ports,
        database_proxy=cfg.rds_proxy,
        tags=tags,
    ))

    # CloudFront proves itself to the ALB with a shared secret header (the CloudFront
    # prefix list admits every AWS customer's distributions). One generated value per
    # `origin_secret_version`: CloudFront sends the current one, and the ALB accepts the
    # previous one too until `origin_secret_retired` reaches it (docs/cloud.md, "The origin
    # secret: rotation").
    origin_secret = previous_origin_secret = None
    if cfg.cdn:
        origin_secret = _origin_secret(name, cfg.origin_secret_version)
        previous = cfg.origin_secret_version - 1
        if previous > cfg.origin_secret_retired:
            previous_origin_secret = _origin_secret(name, previous)

    # Customer-managed keys (kms_keys): the secrets key names the role that reads the
    # secrets, which the service creates further down.
    keys = None
    secret_readers, resolve_secret_readers = pulumi.deferred_output()
    if cfg.kms_keys:
        waf_logs = ("aws-waf-logs-prodstack-*",) if cfg.waf else ()
        keys = Keys(f"{name}-keys", KeysArgs(
            log_groups=(
                f"/ecs/{physical}",
                # The instance's exports, and a point-in-time restore's (<identifier>-r<time>).
                f"/aws/rds/instance/{physical}/*", f"/aws/rds/instance/{physical}-r*/*",
                *(() if cfg.cdn else waf_logs)),
            edge_log_groups=waf_logs if cfg.cdn else (),
            secret_readers=secret_readers,
            tags=tags,
        ))

    # Blue/green's test route: only a request carrying this secret reaches the green set
    # before the switch (behind the CDN, the origin secret as well).
    blue_green = cfg.deploy_strategy == "blue_green"
    test_route_secret = (
        pulumi.Output.secret(
            random.RandomPassword(f"{name}-test-route", length=40, special=False).result
        )
        if blue_green else None
    )

    lb = LoadBalancer(f"{name}-lb", LoadBalancerArgs(
        vpc_id=network.vpc_id,
        subnet_ids=network.public_subnet_ids,
        security_group_id=network.alb_security_group_id,
        domain=cfg.domain,
        certificate_arn=cfg.certificate_arn,
        hosted_zone_id=cfg.hosted_zone_id,
        origin_domain=cfg.origin_domain,
        origin_verify_secret=origin_secret,
        origin_verify_previous_secret=previous_origin_secret,
        # The public name's record is the stack's own (below); the ALB's is the origin's.
        alias_names=(cfg.origin_domain,) if cfg.cdn and cfg.domain and cfg.hosted_zone_id else (),
        app_port=APP_PORT,
        deletion_protection=cfg.protected,
        access_logs=cfg.alb_access_logs,
        blue_green=blue_green,
        test_route_secret=test_route_secret,
        tags=tags,
    ))

    waf = None
    if cfg.waf:
        waf = WebAcl(f"{name}-waf", WebAclArgs(
            scope=waf_scope,
            rate_limit=cfg.edge_rate_limit_per_minute,
            max_body_bytes=max_body_bytes,
            evaluation_window_seconds=60,
            associate_arn=None if cfg.cdn else lb.arn,
            log_retention_days=cfg.security_log_retention_days,
            log_kms_key_arn=(None if keys is None
                             else keys.edge_logs_key_arn if cfg.cdn else keys.logs_key_arn),
            tags=tags,
        ))

    db = Database(f"{name}-db", DatabaseArgs(
        subnet_ids=network.isolated_subnet_ids,
        security_group_id=network.database_security_group_id,
        identifier=physical,
        instance_class=cfg.db_instance_class,
        storage_gb=cfg.storage_gb,
        max_storage_gb=cfg.max_storage_gb,
        multi_az=cfg.multi_az,
        backup_retention_days=cfg.backup_retention_days,
        deletion_protection=cfg.protected,
        final_snapshot=cfg.final_snapshot,
        log_retention_days=cfg.log_retention_days,
        security_log_retention_days=cfg.security_log_retention_days,
        restore_to_time=cfg.restore_to_time,
        restore_source=cfg.restore_source,
        log_kms_key_arn=keys.logs_key_arn if keys else None,
        performance_insights_kms_key_arn=keys.data_key_arn if keys else None,
        tags=tags,
    ))

    # The API's way to PostgreSQL: the instance, or RDS Proxy in front of it. The migrate
    # task always goes straight to the instance: it logs in as the owner with the master
    # password, which the proxy's IAM-only authentication would refuse.
    api_database: dict[str, pulumi.Input[str]] = {}
    db_connect_arn = db.iam_connect_arn
    if cfg.rds_proxy:
        assert network.proxy_security_group_id is not None
        proxy = DatabaseProxy(f"{name}-db-proxy", DatabaseProxyArgs(
            subnet_ids=network.isolated_subnet_ids,
            security_group_id=network.proxy_security_group_id,
            db_instance_identifier=db.identifier,
            db_resource_id=db.resource_id,
            database_user=db.app_username,
            tags=tags,
        ))
        db_connect_arn = proxy.connect_arn  # prx-<id>: the token is for the proxy
        api_database = {
            "DB_HOST": proxy.endpoint,
            # The proxy presents an ACM certificate (Amazon Trust Services roots), not
            # one from the RDS CA: verify it against the image's system store. asyncpg
            # reads sslrootcert as a file and has no libpq-style `system` value, so it
            # is Debian's bundle (python:3.11-slim-bookworm, the default base_image,
            # installs ca-certificates; another base must too). Source: AWS
            # prescriptive guidance, amazon-rds-proxy/best-practices.html ("RDS Proxy
            # uses certificates from AWS Certificate Manager (ACM)").
            "DB_SSLMODE": "verify-full",
            "DB_SSLROOTCERT": PROXY_CA_BUNDLE,
            # Named prepared statements are session state that pins a client to one
            # database connection. Source: RDS user guide, rds-proxy-pinning.html.
            "DB_STATEMENT_CACHE_SIZE": "0",
        }

    cache = Cache(f"{name}-cache", CacheArgs(
        subnet_ids=network.isolated_subnet_ids,
        security_group_id=network.cache_security_group_id,
        # A group's key is chosen at its creation only: switching kms_keys replaces the
        # group. Under another ID, the new group is created beside the old one and the
        # service is pointed at it before the old one is deleted (docs/cloud.md).
        replication_group_id=f"{physical[:36].rstrip('-')}-cmk" if keys else physical,
        kms_key_arn=keys.data_key_arn if keys else None,
        secret_kms_key_arn=keys.secrets_key_arn if keys else None,
        node_type=cfg.cache_node_type,
        replicas=1 if cfg.multi_az else 0,
        log_retention_days=cfg.log_retention_days,
        secret_recovery_window_days=0 if dev_teardown else 7,
        tags=tags,
    ))

    registry = Registry(f"{name}-registry", RegistryArgs(
        context=str(app_context(cfg.app_context, REPO_ROOT)),
        tag=cfg.image_tag,  # empty: a hash of the build context, arguments and platform
        platform=cfg.image_platform,
        base_image=cfg.base_image,
        image=cfg.image,  # set: deploy that existing image, build nothing
        force_delete=not cfg.protected,  # images can be rebuilt; destroy needs it empty
        tags=tags,
    ))

    # ---- supporting resources: the API token secret --------------------------------
    if cfg.api_token:
        api_token: pulumi.Input[str] = pulumi.Output.secret(cfg.api_token)
    else:
        api_token = random.RandomPassword(f"{name}-api-token", length=48, special=False).result
    api_token_secret = stored_secret(
        f"{name}-api-token",
        value=api_token,
        description="prodstack API bearer token (API_TOKEN)",
        recovery_window_days=0 if dev_teardown else 7,
        tags=tags,
        kms_key_arn=keys.secrets_key_arn if keys else None,
    )

    # The API's Prometheus metrics, scraped inside each task (the ALB refuses /metrics).
    metrics = None
    if cfg.metrics_scrape:
        metrics = Metrics(f"{name}-metrics", MetricsArgs(
            alias=physical,
            target_port=APP_PORT,
            host_label=physical,
            retention_days=cfg.metrics_retention_days,
            tags=tags,
        ))

    service = Service(f"{name}-api", ServiceArgs(
        family=physical,
        ecs_exec=cfg.ecs_exec,
        image=registry.image_ref,
        image_repository_arn=registry.pinned.repository_arn if registry.pinned else None,
        subnet_ids=network.private_subnet_ids,
        security_group_id=network.service_security_group_id,
        target_group_arn=lb.target_group_arn,
        listener_arn=lb.forwarder_arn,
        load_balancer_arn_suffix=lb.arn_suffix,
        target_group_arn_suffixes=[lb.target_group_arn_suffix] + (
            [lb.alternate_target_group_arn_suffix]
            if lb.alternate_target_group_arn_suffix is not None else []),
        deploy_strategy=cfg.deploy_strategy,
        alternate_target_group_arn=lb.alternate_target_group_arn,
        production_listener_rule_arn=lb.production_rule_arn,
        test_listener_rule_arn=lb.test_rule_arn,
        # Named before the alarms exist: the alarms need the service's name.
        deployment_alarm_names=[alarm_name(physical, r) for r in DEPLOYMENT_ALARM_ROLES],
        environment={
            "PORT": str(APP_PORT),
            "LOG_LEVEL": cfg.log_level,
            "RATE_LIMIT_PER_MINUTE": str(cfg.rate_limit_per_minute),
            "MAX_BODY_BYTES": str(max_body_bytes),
            # Within the connection budget stacks/config.py checked.
            "WEB_CONCURRENCY": str(cfg.web_concurrency),
            "DB_POOL_MAX": str(cfg.db_pool_max),
            # Proxies that append to X-Forwarded-For: the ALB, and CloudFront before it.
            # The app's per-client rate limit reads the client this many from the right.
            "FORWARDED_HOPS": "2" if cfg.cdn else "1",
            "DB_HOST": db.address,
            "DB_PORT": "5432",
            "DB_NAME": db.database_name,
            # verify-full: `require` encrypts but accepts any server certificate.
            "DB_SSLMODE": "verify-full",
            "DB_SSLROOTCERT": rds_ca.BUNDLE_IN_IMAGE,
            "REDIS_HOST": cache.primary_endpoint,
            "REDIS_PORT": str(cache.port),
            "REDIS_TLS": "true",
        },
        # The API signs in as its own least-privilege role with IAM tokens (no password
        # to rotate); only migrate, which creates that role, uses the RDS-managed master
        # secret, read fresh at each task start (RDS rotates it every 7 days).
        api_environment={
            "DB_USER": db.app_username,
            "DB_IAM": "true",
            "AWS_REGION": cfg.region,
            **api_database,
        },
        migrate_environment={"DB_APP_USER": db.app_username, "DB_APP_IAM": "true"},
        migrate_secrets={
            # ECS injects JSON keys of the RDS-managed secret: "<arn>:<key>::".
            # Source: AWS ECS developer guide, specifying-sensitive-data-secrets.html.
            "DB_USER": pulumi.Output.concat(db.master_secret_arn, ":username::"),
            "DB_PASSWORD": pulumi.Output.concat(db.master_secret_arn, ":password::"),
        },
        db_connect_arn=db_connect_arn,
        metrics_collector=metrics.collector if metrics is not None else None,
        secrets={
            "REDIS_PASSWORD": cache.auth_secret_arn,
            "API_TOKEN": api_token_secret.arn,
        },
        secret_arns=[db.master_secret_arn, cache.auth_secret_arn, api_token_secret.arn],
        cpu=cfg.task_cpu,
        memory=cfg.task_memory,
        cpu_architecture="ARM64" if cfg.image_platform == "linux/arm64" else "X86_64",
        replicas=cfg.replicas,
        min_replicas=cfg.min_replicas,
        max_replicas=cfg.max_replicas,
        cpu_target_percent=cfg.cpu_target_percent,
        requests_per_target=cfg.requests_per_target,
        app_port=APP_PORT,
        log_retention_days=cfg.log_retention_days,
        log_kms_key_arn=keys.logs_key_arn if keys else None,
        # ECS Exec in prod is the named exception the policy pack accepts, visible as a tag.
        tags={**tags, ECS_EXEC_TAG: "allowed-in-prod"} if cfg.ecs_exec_in_prod else tags,
    ))

    resolve_secret_readers(service.execution_role_arn.apply(lambda arn: [arn]))

    cdn = None
    if cfg.cdn:
        cdn = Cdn(f"{name}-cdn", CdnArgs(
            origin_domain=cfg.origin_domain or lb.dns_name,
            origin_https=bool(cfg.domain),
            aliases=(cfg.domain,) if cfg.domain else (),
            certificate_arn=cfg.cdn_certificate_arn,
            hosted_zone_id=cfg.hosted_zone_id,
            alias_records=False,  # the public name's record is the stack's own (below)
            # The ALB's certificate covers the domain too: one record per validation name.
            validation_records=lb.validation_records,
            origin_verify_secret=origin_secret,
            web_acl_arn=waf.arn if waf else None,
            access_log_retention_days=cfg.security_log_retention_days,
            # CloudFront starts sending a new origin secret only once the ALB accepts it.
            origin_checks=lb.origin_check_rules,
            tags=tags,
        ))

    if cfg.domain and cfg.hosted_zone_id:
        # One record holds the public name, whatever serves it: adding or removing the CDN
        # changes its alias target in place. A record per server (the CDN's, the ALB's)
        # would collide: Pulumi creates before it deletes, so the ALB's record of the name
        # is created while the removed CDN's still holds it, and Route 53 refuses the
        # create. delete_before_replace would not help: it orders a resource's own
        # replacement, not another resource's deletion. Source: Pulumi docs, resource
        # option deleteBeforeReplace ("By default ... Pulumi creates new instances of
        # resources before deleting old ones"); resource option aliases (the deployed
        # record, under its old name and parent, is kept and updated in place).
        alias_record(
            None, f"{name}-domain-alias", zone_id=cfg.hosted_zone_id, hostname=cfg.domain,
            target_dns_name=cdn.distribution.domain_name if cdn else lb.alb.dns_name,
            target_zone_id=cdn.distribution.hosted_zone_id if cdn else lb.alb.zone_id,
            evaluate_target_health=cdn is None,
            aliases=[pulumi.Alias(name=f"{name}-cdn-alias-0", parent=cdn) if cdn is not None
                     else pulumi.Alias(name=f"{name}-lb-alias-0", parent=lb)],
        )

    observability = Observability(f"{name}-{cfg.stack}-obs", ObservabilityArgs(
        load_balancer_arn_suffix=lb.arn_suffix,
        target_group_arn_suffix=lb.target_group_arn_suffix,
        alternate_target_group_arn_suffix=lb.alternate_target_group_arn_suffix,
        alarm_name_prefix=physical,
        min_replicas=cfg.min_replicas,
        cluster_name=service.cluster_name,
        service_name=service.service_name,
        db_identifier=db.identifier,
        db_storage_gb=db.storage_gb,
        db_max_storage_gb=db.max_storage_gb,
        db_max_connections=db.max_connections,
        cache_member_ids=cache.member_cluster_ids,
        alarm_email=cfg.alert_email,
        prometheus_workspace_arn=metrics.workspace_arn if metrics is not None else None,
        prometheus_workspace_id=metrics.workspace_id if metrics is not None else None,
        cpu_percent=cfg.cpu_target_percent,
        tags=tags,
    ))

    # AWS Backup's tiers and restore drill beside RDS's own point-in-time backups.
    backup = Backup(f"{name}-backup", BackupArgs(
        vault_name=physical,
        db_instance_arn=db.arn,
        alarm_topic_arn=observability.topic_arn,
        daily_retention_days=cfg.backup_daily_retention_days,
        weekly_retention_days=cfg.backup_weekly_retention_days,
        monthly_retention_days=cfg.backup_monthly_retention_days,
        vault_lock=cfg.backup_vault_lock,
        copy_region=cfg.backup_copy_region,
        restore_drill=cfg.backup_restore_drill,
        # dev: recovery points are throwaway and `pulumi destroy` must finish.
        force_destroy=dev_teardown and cfg.backup_vault_lock != "compliance",
        tags=tags,
    ))

    # ---- exports -----------------------------------------------------------------
    if cdn is not None:
        url: pulumi.Input[str] = cdn.url
    elif cfg.domain:
        url = f"https://{cfg.domain}"
    else:
        url = pulumi.Output.concat("http://", lb.dns_name)
    outputs: dict[str, pulumi.Input] = {
        "url": url,  # public entry point
        "alb_dns_name": lb.dns_name,  # AWS name of the load balancer
        "database_endpoint": pulumi.Output.concat(db.address, ":5432"),
        "database_secret_arn": db.master_secret_arn,  # RDS-managed master secret
        "cache_endpoint": pulumi.Output.concat(cache.primary_endpoint, ":6379"),
        "image": registry.image_ref,  # deployed image, by digest
        "cluster_name": service.cluster_name,
        "service_name": service.service_name,
        "migrate_task_definition": service.migrate_task_definition_arn,
        # What the operator verbs (prodstack status/logs/exec) and `aws ecs run-task` need.
        "api_task_definition": service.task_definition_arn,
        "log_group_name": service.log_group_name,
        "service_subnet_ids": network.private_subnet_ids,
        "service_security_group_id": network.service_security_group_id,
        "target_group_arns": [lb.target_group_arn] + (
            [lb.alternate_target_group_arn] if lb.alternate_target_group_arn is not None else []),
        "alarm_names": observability.physical_alarm_names,
        "dashboard_url": observability.dashboard_url,
        "alarm_topic_arn": observability.topic_arn,
        "backup_vault": backup.vault_name,  # AWS Backup tiers (daily, weekly, monthly)
    }
    if metrics is not None:
        outputs["metrics_query_url"] = metrics.query_url  # PromQL over the API's metrics
    if test_route_secret is not None:
        # The X-Prodstack-Route value that reaches green before the switch (secret).
        outputs["test_route_value"] = test_route_secret
    return outputs


def _origin_secret(name: str, version: int) -> pulumi.Output[str]:
    """The origin secret of ``version`` (version 1 keeps the name it was deployed under)."""
    suffix = "" if version == 1 else f"-v{version}"
    return pulumi.Output.secret(random.RandomPassword(
        f"{name}-origin-verify{suffix}", length=40, special=False).result)


def main() -> None:
    """Program entrypoint: validate all config before registering any resource."""
    cfg = from_pulumi()
    for key, value in build(cfg).items():
        pulumi.export(key, value)
