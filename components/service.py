"""Service: ECS cluster, Fargate task definitions (api + migrate), service and autoscaling."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components._common import (
    LOG_RETENTION_DAYS,
    SECRET_NAME_RE,
    assume_role_policy,
    child_opts,
    documented_trust_policy,
    merge_tags,
    region_and_account,
)
from components.metrics import COLLECTOR_CONFIG_ENV, COLLECTOR_HEALTH_COMMAND, MetricsCollector

# Valid Fargate task cpu -> memory (MiB) combinations (Linux).
# Source: AWS ECS developer guide, "Task CPU and memory" (fargate-tasks-services.html);
# botocore ecs RegisterTaskDefinitionRequest.cpu/memory.
FARGATE_CPU_MEMORY = {
    "256": (512, 1024, 2048),
    "512": tuple(range(1024, 4097, 1024)),
    "1024": tuple(range(2048, 8193, 1024)),
    "2048": tuple(range(4096, 16385, 1024)),
    "4096": tuple(range(8192, 30721, 1024)),
    "8192": tuple(range(16384, 61441, 4096)),
    "16384": tuple(range(32768, 122881, 8192)),
}
CPU_ARCHITECTURES = ("X86_64", "ARM64")
# `deploy_strategy` values (the VPS profile uses the same two) and the ECS strategy each
# one means. Source: pulumi_aws ecs.ServiceDeploymentConfigurationArgs `strategy`
# (ROLLING | BLUE_GREEN | LINEAR | CANARY; default ROLLING).
DEPLOY_STRATEGIES = {"rolling": "ROLLING", "blue_green": "BLUE_GREEN"}
# The ECS service's resource name under each strategy. Changing `deploy_strategy` changes
# the name, so Pulumi creates a new service (and, through its new ``service/<cluster>/
# <name>`` resource id, a new scaling target and policies), then deletes the old one: an
# in-place update cannot make the switch. Blue/green ignores changes to `loadBalancers`,
# and Pulumi resets an ignored property to its value in the state, for an update and for a
# replacement alike, so a rolling service switched in place (or replaced through
# `replaceOnChanges`) would never be sent the alternate target group, the rules or the
# role; only a resource with no previous state gets the program's values. Sources: Pulumi
# docs, concepts/options/ignorechanges ("Ignored properties will still be used from the
# program when there is no previous value in the state"); pulumi/pulumi
# pkg/resource/deploy/step_generator.go (generateSteps: `if hasOld { processIgnoreChanges
# ... }` before the new state a replacement creates is built). Blue/green keeps the name
# it has always had; rolling's is new (a rolling stack's service is replaced once, on its
# first `pulumi up` with this name).
SERVICE_RESOURCE = {"blue_green": "service", "rolling": "service-rolling"}
# Request-count scaling reads each target group's RequestCountPerTarget ("The only valid
# statistic is Sum", dimensions TargetGroup and LoadBalancer). Sources: ELB user guide,
# load-balancer-cloudwatch-metrics.html (RequestCountPerTarget); botocore
# application-autoscaling CustomizedMetricSpecification.Metrics /
# TargetTrackingMetricDataQuery (Id: a lowercase letter first; ReturnData true only on the
# final expression) / TargetTrackingMetricStat (Metric, Stat).
REQUESTS_PER_TARGET_METRIC = ("AWS/ApplicationELB", "RequestCountPerTarget", "Sum")
# Bake time range. Source: pulumi_aws ecs.ServiceDeploymentConfigurationArgs
# `bake_time_in_minutes` ("Valid range: 0-1440 minutes").
MAX_BAKE_TIME_MINUTES = 1440
# Lets ECS rewrite the listener rules and target groups during blue/green deployments.
# Source: ECS developer guide, AmazonECSInfrastructureRolePolicyForLoadBalancers.html
# (trust ecs.amazonaws.com); AWS managed policy reference (ARN).
ECS_LOAD_BALANCER_POLICY_ARN = (
    "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"
)
ECS_INFRASTRUCTURE_PRINCIPAL = "ecs.amazonaws.com"

# What ECS Exec needs of the task role (ecs_exec: true). Source: ECS developer guide,
# ecs-exec.html, "IAM permissions required for ECS Exec".
ECS_EXEC_ACTIONS = ("ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel")
API_CONTAINER = "api"
MIGRATE_CONTAINER = "migrate"
COLLECTOR_CONTAINER = "metrics-collector"
# The image's ENTRYPOINT is ["python3", "-m", "app"] and its CMD ["serve"]; an ECS
# `command` replaces only the CMD, so the migration command is just "migrate".
MIGRATE_COMMAND = ("migrate",)
ECR_PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer")
HEALTH_COMMAND = ("CMD", "python3", "-m", "app.healthcheck")  # the image's own HEALTHCHECK


@dataclass(frozen=True)
class ServiceArgs:
    """Inputs of :class:`Service`."""

    family: str
    """Task-definition family prefix; the migration task is ``<family>-migrate``.
    Required. Example: ``"prodstack-prod"``."""

    image: pulumi.Input[str]
    """Image reference, by digest. Required. Example: ``registry.image_ref``."""

    subnet_ids: Sequence[pulumi.Input[str]]
    """Private subnets for the tasks (no public IP). Required.
    Example: ``net.private_subnet_ids``."""

    security_group_id: pulumi.Input[str]
    """Security group of the tasks. Required. Example: ``net.service_security_group_id``."""

    target_group_arn: pulumi.Input[str]
    """Target group the ``api`` container registers into. Required.
    Example: ``lb.target_group_arn``."""

    listener_arn: pulumi.Input[str]
    """Listener or listener rule forwarding to the target group; the service waits for
    it (ECS rejects a target group not yet attached to a load balancer). Required.
    Example: ``lb.forwarder_arn``."""

    load_balancer_arn_suffix: pulumi.Input[str]
    """``app/<lb>/<id>``, the ALB's CloudWatch ``LoadBalancer`` dimension, for
    request-count scaling. Required. Example: ``lb.arn_suffix``."""

    target_group_arn_suffixes: Sequence[pulumi.Input[str]]
    """``targetgroup/<tg>/<id>`` of every target group the service's tasks register in:
    request-count scaling watches all of them (blue/green moves production traffic to the
    other group on every deployment). One for ``rolling``, both for ``blue_green``.
    Required. Example: ``[lb.target_group_arn_suffix, lb.alternate_target_group_arn_suffix]``."""

    image_repository_arn: str | None = None
    """ECR repository ARN the execution role may pull ``image`` from, for an image that
    is not built into the stack's own repository. Default: ``None`` (the stack's
    repository, which AmazonECSTaskExecutionRolePolicy covers). Example:
    ``"arn:aws:ecr:eu-west-1:123456789012:repository/api"``."""

    deploy_strategy: str = "rolling"
    """How a new task definition goes live, one of :data:`DEPLOY_STRATEGIES`.
    ``rolling``: ECS starts new tasks beside the old ones and stops the old as the new
    pass health checks. ``blue_green`` (ECS native, ``strategy = "BLUE_GREEN"``): a
    full green set starts in the alternate target group, answers the test listener
    rule, takes all production traffic at once, and the blue set stays
    ``bake_time_minutes`` for an instant rollback. Both roll back on the circuit breaker
    and on ``deployment_alarm_names``. Default: ``"rolling"``. Example: ``"blue_green"``."""

    alternate_target_group_arn: pulumi.Input[str] | None = None
    """Blue/green: the second target group. Required with ``blue_green``.
    Default: ``None``. Example: ``lb.alternate_target_group_arn``."""

    production_listener_rule_arn: pulumi.Input[str] | None = None
    """Blue/green: the listener rule ECS switches production traffic with. Required with
    ``blue_green``. Default: ``None``. Example: ``lb.production_rule_arn``."""

    test_listener_rule_arn: pulumi.Input[str] | None = None
    """Blue/green: the header-matched rule ECS points at green before the switch.
    Default: ``None`` (no test route). Example: ``lb.test_rule_arn``."""

    bake_time_minutes: int = 10
    """Blue/green: minutes the blue set keeps running after production moved to green,
    0-1440; an alarm in that window switches traffic straight back. Default: ``10``.
    Example: ``30``."""

    deployment_alarm_names: Sequence[pulumi.Input[str]] = ()
    """CloudWatch alarms a deployment watches; one in ALARM rolls it back. Default:
    ``()`` (circuit breaker only). Example: ``obs.deployment_alarm_names``."""

    environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Plain environment variables. Names that look secret are rejected (use ``secrets``).
    Default: ``{}``. Example: ``{"LOG_LEVEL": "INFO"}``."""

    secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Environment variables injected by ECS from Secrets Manager: name -> ``valueFrom``
    (a secret ARN, or ``<arn>:<json-key>::``). Default: ``{}``.
    Example: ``{"API_TOKEN": token_secret.arn}``."""

    secret_arns: Sequence[pulumi.Input[str]] = ()
    """Secret ARNs the execution role may read (``secretsmanager:GetSecretValue``).
    Default: ``()``. Example: ``[db.master_secret_arn]``."""

    api_environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Plain variables only the ``api`` container gets, over ``environment``.
    Default: ``{}``. Example: ``{"DB_USER": "prodstack_app", "DB_IAM": "true"}``."""

    migrate_environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Plain variables only the ``migrate`` containers get, over ``environment``.
    Default: ``{}``. Example: ``{"DB_APP_USER": "prodstack_app"}``."""

    migrate_secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Secrets only the ``migrate`` containers get (the database owner's login), over
    ``secrets``. Default: ``{}``.
    Example: ``{"DB_PASSWORD": Output.concat(db.master_secret_arn, ":password::")}``."""

    db_connect_arn: pulumi.Input[str] | None = None
    """The one ``rds-db:connect`` resource the task role may use (IAM database
    authentication: ``arn:aws:rds-db:...:dbuser:<resource-id>/<user>``). ``None``: the
    task role grants nothing. Default: ``None``. Example: ``db.iam_connect_arn``."""

    metrics_collector: MetricsCollector | None = None
    """Run the metrics collector (``metrics-collector``, non-essential) beside ``api``
    in every service task: it scrapes ``localhost:<app_port>/metrics`` and remote-writes
    to one AMP workspace, which the task role may write to and nothing else. Its CPU and
    memory come out of the task's. ``None``: no collector. Default: ``None``.
    Example: ``metrics.collector``."""

    cpu: str = "256"
    """Task CPU units (Fargate). Default: ``"256"``. Example: ``"1024"``."""

    memory: str = "512"
    """Task memory (MiB), valid for ``cpu`` per :data:`FARGATE_CPU_MEMORY`.
    Default: ``"512"``. Example: ``"2048"``."""

    cpu_architecture: str = "X86_64"
    """``X86_64`` or ``ARM64``; must match the image platform. Default: ``"X86_64"``.
    Example: ``"ARM64"``."""

    replicas: int = 1
    """Initial desired task count, within ``[min_replicas, max_replicas]``.
    Default: ``1``. Example: ``3``."""

    min_replicas: int = 1
    """Autoscaling floor, 1 or more. Default: ``1``. Example: ``3``."""

    max_replicas: int = 2
    """Autoscaling ceiling, at least ``min_replicas``. Default: ``2``. Example: ``12``."""

    cpu_target_percent: int = 70
    """Average CPU the service scales to hold (the 70 % target, docs/targets.md), 10-90.
    Default: ``70``. Example: ``60``."""

    requests_per_target: int = 1000
    """ALB requests per task per minute the service scales to hold.
    Default: ``1000``. Example: ``500``."""

    app_port: int = 8000
    """Container port (``PORT``). Default: ``8000``. Example: ``8080``."""

    health_check_grace_seconds: int = 60
    """Seconds the ALB health check is ignored after a task starts (migrations run
    first). Default: ``60``. Example: ``120``."""

    log_retention_days: int = 30
    """Retention of the task log group (a CloudWatch value). Default: ``30``.
    Example: ``90``."""

    log_kms_key_arn: pulumi.Input[str] | None = None
    """Customer-managed key of the task log group (updated in place). Default: ``None``
    (CloudWatch Logs' own encryption). Example: ``keys.logs_key_arn``."""

    user: str = "10001"
    """Numeric user the containers run as (the image's non-root uid).
    Default: ``"10001"``. Example: ``"10001:10001"``."""

    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags applied to every taggable child. Default: ``{}``.
    Example: ``{"prodstack:environment": "prod"}``."""

    ecs_exec: bool = False
    """ECS Exec (`aws ecs execute-command`) into running tasks: the service's
    enable_execute_command and the task role's SSM channel permissions. Default: ``False``.
    Example: ``True``."""

    def __post_init__(self) -> None:
        problems = []
        memories = FARGATE_CPU_MEMORY.get(self.cpu)
        if memories is None:
            problems.append(f"cpu={self.cpu!r}: allowed {', '.join(FARGATE_CPU_MEMORY)}")
        elif not self.memory.isdigit() or int(self.memory) not in memories:
            problems.append(f"memory={self.memory!r}: not valid with cpu {self.cpu}")
        if self.cpu_architecture not in CPU_ARCHITECTURES:
            problems.append(f"cpu_architecture={self.cpu_architecture!r}: X86_64 or ARM64")
        if self.min_replicas < 1:
            problems.append(f"min_replicas={self.min_replicas}: at least 1")
        if self.max_replicas < self.min_replicas:
            problems.append(f"max_replicas={self.max_replicas}: below min {self.min_replicas}")
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            problems.append(f"replicas={self.replicas}: outside min..max")
        if not 10 <= self.cpu_target_percent <= 90:
            problems.append(f"cpu_target_percent={self.cpu_target_percent}: 10-90")
        if self.requests_per_target < 1:
            problems.append(f"requests_per_target={self.requests_per_target}: at least 1")
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            problems.append(f"log_retention_days={self.log_retention_days}: CloudWatch value")
        leaked = sorted(k for env in (self.environment, self.api_environment,
                                      self.migrate_environment)
                        for k in env if SECRET_NAME_RE.search(k))  # fmt: skip
        if leaked:
            problems.append(f"environment: {', '.join(leaked)} look secret; pass via secrets")
        if not self.user.split(":")[0].isdigit() or self.user.split(":")[0] == "0":
            problems.append(f"user={self.user!r}: a numeric non-root uid")
        if self.deploy_strategy not in DEPLOY_STRATEGIES:
            problems.append(f"deploy_strategy={self.deploy_strategy!r}: "
                            + " or ".join(DEPLOY_STRATEGIES))
        if self.deploy_strategy == "blue_green" and None in (
                self.alternate_target_group_arn, self.production_listener_rule_arn):
            problems.append("blue_green needs alternate_target_group_arn and "
                            "production_listener_rule_arn")
        groups = 2 if self.deploy_strategy == "blue_green" else 1
        if len([g for g in self.target_group_arn_suffixes if g is not None]) != groups:
            problems.append(f"target_group_arn_suffixes: {groups} with {self.deploy_strategy} "
                            "(every target group the tasks register in)")
        collector = self.metrics_collector
        # Container-level cpu and memory are carved out of the task's; the API keeps at
        # least three quarters of both. Source: ECS developer guide,
        # task_definition_parameters.html ("cpu", "memory": container values must not
        # exceed the task's).
        if (collector is not None and memories is not None and self.memory.isdigit()
                and (collector.cpu * 4 > int(self.cpu)
                     or collector.memory_mib * 4 > int(self.memory))):
            problems.append(
                f"metrics_collector: {collector.cpu} CPU / {collector.memory_mib} MiB "
                f"leaves the API less than 3/4 of the task's {self.cpu} / {self.memory}")
        if not 0 <= self.bake_time_minutes <= MAX_BAKE_TIME_MINUTES:
            problems.append(f"bake_time_minutes={self.bake_time_minutes}: "
                            f"0-{MAX_BAKE_TIME_MINUTES}")
        if problems:
            raise ValueError("ServiceArgs: " + "; ".join(problems))


class Service(pulumi.ComponentResource):
    """The API on ECS Fargate: hardened task, migration gate, rollback deploys, autoscaling.

    Creates:
        ``{name}-cluster`` (Container Insights), ``{name}-logs`` (30-day retention),
        ``{name}-execution-role`` (+ secrets read policy), ``{name}-task-role``,
        ``{name}-task`` (containers ``migrate`` then ``api``, plus ``metrics-collector``
        with ``metrics_collector``; its grants ``{name}-task-role-metrics`` and
        ``{name}-execution-role-collector-config``), ``{name}-migrate-task``
        (one-off migrations), the service (``{name}-service`` with ``blue_green``,
        ``{name}-service-rolling`` with ``rolling``: switching strategy replaces it, see
        :data:`SERVICE_RESOURCE`), ``{name}-scaling-target``, ``{name}-scale-cpu`` and
        ``{name}-scale-requests`` (requests per task over every target group).

    Migrations:
        Each task first runs the non-essential ``migrate`` container (the image's
        entrypoint ``python3 -m app`` with command ``migrate``) to completion; ``api``
        starts only on its ``SUCCESS`` (ECS ``dependsOn``). A failed migration stops the
        task before it registers with the ALB, the deployment circuit breaker trips and
        ECS rolls back to the previous task definition, which keeps serving. ``migrate``
        takes a PostgreSQL advisory lock, so tasks starting together serialise and all
        but the first find nothing to do. The separate ``<family>-migrate`` task
        definition runs the same step by hand or from CI (``aws ecs run-task``).

    Example:
        ``Service("app", ServiceArgs(family="prodstack-dev", image=reg.image_ref, ...))``

    Cost:
        Fargate x86 $0.04048/vCPU-h + $0.004445/GB-h: 0.25 vCPU/0.5 GB ~ **$9/month per
        task**; 1 vCPU/2 GB ~ $36/month per task (prod: 3 tasks ~ $108). ARM64 is ~20 %
        cheaper. Container Insights adds CloudWatch metrics cost. Knobs: size
        (``cpu``/``memory``), ``replicas``/``max_replicas``, ``cpu_architecture``.

    Secure defaults:
        Private subnets, no public IP; read-only root filesystem with a task-local
        ``/tmp``; non-root user 10001; no privilege escalation; every secret through ECS
        ``secrets``; ECS Exec off; circuit breaker with rollback; logs kept 30 days.

    Opt-outs:
        None: these are not configurable.
    """

    cluster_name: pulumi.Output[str]
    """ECS cluster name (``ClusterName`` dimension)."""
    service_name: pulumi.Output[str]
    """ECS service name (``ServiceName`` dimension)."""
    task_definition_arn: pulumi.Output[str]
    """ARN of the API task definition."""
    migrate_task_definition_arn: pulumi.Output[str]
    """ARN of the one-off migration task definition."""
    log_group_name: pulumi.Output[str]
    """CloudWatch log group of both task definitions."""
    execution_role_arn: pulumi.Output[str]
    """ARN of the role ECS starts tasks as (it reads the secrets)."""

    def __init__(
        self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("prodstack:service:Service", name, None, opts)
        self._name = name
        self._args = args
        self._region, self._account = region_and_account(self)

        self._create_cluster_and_logs()
        execution_role, task_role = self._create_roles()
        self._create_task_definitions(execution_role, task_role)
        self._create_service(self._create_blue_green_role())
        self._create_autoscaling()

        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "service_name": self.service_name,
                "task_definition_arn": self.task_definition_arn,
                "migrate_task_definition_arn": self.migrate_task_definition_arn,
                "log_group_name": self.log_group_name,
                "execution_role_arn": self.execution_role_arn,
            }
        )

    def _tags(self, role: str) -> dict[str, str]:
        return merge_tags(self._args.tags, role)

    def _create_cluster_and_logs(self) -> None:
        n = self._name
        self.cluster = aws.ecs.Cluster(
            f"{n}-cluster",
            # Values: enhanced | enabled | disabled. Source: botocore ecs ClusterSetting.
            settings=[{"name": "containerInsights", "value": "enabled"}],
            tags=self._tags("cluster"),
            opts=child_opts(self),
        )
        self.cluster_name = self.cluster.name
        self.log_group = aws.cloudwatch.LogGroup(
            f"{n}-logs",
            name=f"/ecs/{self._args.family}",
            retention_in_days=self._args.log_retention_days,
            **({"kms_key_id": self._args.log_kms_key_arn}
               if self._args.log_kms_key_arn is not None else {}),
            tags=self._tags("logs"),
            opts=child_opts(self),
        )
        self.log_group_name = self.log_group.name

    def _ecs_trust_policy(self) -> str:
        # ECS assumes both roles on behalf of tasks of this account and Region only.
        # Source: AWS ECS developer guide, task-iam-roles.html ("confused deputy":
        # aws:SourceArn arn:aws:ecs:<region>:<account>:* and aws:SourceAccount).
        return assume_role_policy(
            "ecs-tasks.amazonaws.com",
            account=self._account,
            source_arn=f"arn:aws:ecs:{self._region}:{self._account}:*",
        )

    def _create_roles(self) -> tuple[aws.iam.Role, aws.iam.Role]:
        n, args = self._name, self._args
        execution_role = aws.iam.Role(
            f"{n}-execution-role",
            assume_role_policy=self._ecs_trust_policy(),
            tags=self._tags("execution-role"),
            opts=child_opts(self),
        )
        self.execution_role_arn = execution_role.arn
        # What the execution role may do arrives in separate resources; until they exist
        # ECS cannot pull the image, write logs or read the secrets, and a task started
        # in that window fails. The task definitions and the service wait for them.
        self._execution_grants: list[pulumi.Resource] = []
        self._execution_grants.append(aws.iam.RolePolicyAttachment(
            f"{n}-execution-role-managed",
            role=execution_role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
            opts=child_opts(self),
        ))
        if args.secret_arns:
            self._execution_grants.append(aws.iam.RolePolicy(
                f"{n}-execution-role-secrets",
                role=execution_role.id,
                policy=pulumi.Output.all(*args.secret_arns).apply(
                    lambda arns: json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": "secretsmanager:GetSecretValue",
                                    "Resource": sorted(set(arns)),
                                }
                            ],
                        }
                    )
                ),
                opts=child_opts(self),
            ))
        task_role = aws.iam.Role(
            f"{n}-task-role",
            assume_role_policy=self._ecs_trust_policy(),
            tags=self._tags("task-role"),
            opts=child_opts(self),
        )
        # The app's only AWS call: signing its database login as one database user.
        # Source: RDS user guide, UsingWithRDS.IAMDBAuth.IAMPolicy (action rds-db:connect,
        # resource arn:aws:rds-db:<region>:<account>:dbuser:<DbiResourceId>/<db-user>).
        if args.db_connect_arn is not None:
            self._grant(f"{n}-task-role-db-connect", task_role, "rds-db:connect",
                        args.db_connect_arn)
        collector = args.metrics_collector
        if collector is not None:
            # The collector signs its remote writes as the task role. Source: AMP user
            # guide, AMP-and-IAM.html / security-iam-awsmanpol (aps:RemoteWrite on the
            # workspace ARN).
            self._grant(f"{n}-task-role-metrics", task_role, "aps:RemoteWrite",
                        collector.workspace_arn)
            # ECS reads the collector's configuration at task start, as the execution
            # role. Source: ECS developer guide, secrets-envvar-ssm-paramstore.html
            # (ssm:GetParameters; kms:Decrypt only for a SecureString).
            self._execution_grants.append(self._grant(
                f"{n}-execution-role-collector-config", execution_role, "ssm:GetParameters",
                collector.config_parameter_arn))
        if args.image_repository_arn:
            # A pinned image may live in another repository (or account): ECS pulls it
            # as the execution role. Source: ECR user guide, ECR_on_ECS.html and
            # repository-policy-examples.html (the pull actions
            # ecr:BatchCheckLayerAvailability, ecr:BatchGetImage,
            # ecr:GetDownloadUrlForLayer on the repository; ecr:GetAuthorizationToken is
            # account-wide and comes with AmazonECSTaskExecutionRolePolicy). Another
            # account must also allow this role in its repository policy.
            self._execution_grants.append(self._grant(
                f"{n}-execution-role-image-pull", execution_role, list(ECR_PULL_ACTIONS),
                args.image_repository_arn))
        if args.ecs_exec:
            # ECS Exec's agent opens its Session Manager channels as the task role. Source:
            # ECS developer guide, ecs-exec.html (the four ssmmessages actions, Resource
            # "*": Session Manager's message gateway has no resource types).
            aws.iam.RolePolicy(
                f"{n}-task-role-ecs-exec",
                role=task_role.id,
                policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": list(ECS_EXEC_ACTIONS), "Resource": "*"}]}),
                opts=child_opts(self),
            )  # fmt: skip
        return execution_role, task_role

    def _grant(self, name: str, role: aws.iam.Role, action: str | list[str],
               resource: pulumi.Input[str]) -> aws.iam.RolePolicy:
        """An inline policy allowing ``role`` one action on one resource."""
        return aws.iam.RolePolicy(
            name,
            role=role.id,
            policy=pulumi.Output.from_input(resource).apply(
                lambda arn: json.dumps({
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": action, "Resource": arn}],
                })
            ),
            opts=child_opts(self),
        )

    def _collector_container(self, collector: MetricsCollector) -> dict:
        """The metrics collector: non-essential (its crash never stops the API), started
        once ``api`` is healthy (so a task still migrating does not count as down), as
        hardened as the API's containers."""
        return {
            "name": COLLECTOR_CONTAINER,
            "image": collector.image,
            "essential": False,
            "user": collector.user,
            "cpu": collector.cpu,
            "memory": collector.memory_mib,
            "readonlyRootFilesystem": True,
            "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
            "dependsOn": [{"containerName": API_CONTAINER, "condition": "HEALTHY"}],
            # Plain configuration from SSM through ECS `secrets`, as the ADOT ECS guide
            # does; it holds no credential (components/templates/metrics-collector.yaml).
            "secrets": [{"name": COLLECTOR_CONFIG_ENV,
                         "valueFrom": collector.config_parameter_arn}],
            "healthCheck": {
                "command": list(COLLECTOR_HEALTH_COMMAND),
                "interval": 30,
                "timeout": 5,
                "retries": 3,
                "startPeriod": 15,
            },
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": self.log_group.name,
                    "awslogs-region": self._region,
                    "awslogs-stream-prefix": COLLECTOR_CONTAINER,
                },
            },
        }

    def _container(self, name: str, *, essential: bool, command: Sequence[str] | None) -> dict:
        args = self._args
        migrate = name == MIGRATE_CONTAINER
        environment = {**args.environment,
                       **(args.migrate_environment if migrate else args.api_environment)}
        secrets = {**args.secrets, **(args.migrate_secrets if migrate else {})}
        container: dict = {
            "name": name,
            "image": args.image,
            "essential": essential,
            "user": args.user,
            "readonlyRootFilesystem": True,
            "mountPoints": [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}],
            "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
            "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(secrets.items())],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": self.log_group.name,
                    "awslogs-region": self._region,
                    "awslogs-stream-prefix": name,
                },
            },
        }
        if command is not None:
            container["command"] = list(command)
        return container

    def _create_task_definitions(self, execution_role: aws.iam.Role, task_role: aws.iam.Role):
        n, args = self._name, self._args
        migrate = self._container(MIGRATE_CONTAINER, essential=False, command=MIGRATE_COMMAND)
        api = self._container(API_CONTAINER, essential=True, command=None)  # image CMD: serve
        api |= {
            "portMappings": [{"containerPort": args.app_port, "protocol": "tcp"}],
            "dependsOn": [{"containerName": MIGRATE_CONTAINER, "condition": "SUCCESS"}],
            "stopTimeout": 30,  # SIGTERM, then drain in-flight requests before SIGKILL
            "healthCheck": {
                # ECS ignores the image's Docker HEALTHCHECK; repeat it (/health/live).
                "command": list(HEALTH_COMMAND),
                "interval": 15,
                "timeout": 5,
                "retries": 3,
                "startPeriod": 30,
            },
        }
        common = dict(
            cpu=args.cpu,
            memory=args.memory,
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform={
                "operating_system_family": "LINUX",
                "cpu_architecture": args.cpu_architecture,
            },
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            # Task-local scratch space for /tmp; the root filesystem stays read-only.
            volumes=[{"name": "tmp"}],
        )
        self.task_definition = aws.ecs.TaskDefinition(
            f"{n}-task",
            family=args.family,
            container_definitions=pulumi.Output.json_dumps(
                [migrate, api] + ([self._collector_container(args.metrics_collector)]
                                  if args.metrics_collector is not None else [])),
            tags=self._tags("task"),
            opts=child_opts(self, depends_on=self._execution_grants),
            **common,
        )
        one_off = self._container(MIGRATE_CONTAINER, essential=True, command=MIGRATE_COMMAND)
        self.migrate_task_definition = aws.ecs.TaskDefinition(
            f"{n}-migrate-task",
            family=f"{args.family}-migrate",
            container_definitions=pulumi.Output.json_dumps([one_off]),
            tags=self._tags("migrate-task"),
            opts=child_opts(self, depends_on=self._execution_grants),
            **common,
        )
        self.task_definition_arn = self.task_definition.arn
        self.migrate_task_definition_arn = self.migrate_task_definition.arn

    def _create_blue_green_role(self) -> aws.iam.Role | None:
        if self._args.deploy_strategy != "blue_green":
            return None
        role = aws.iam.Role(
            f"{self._name}-ecs-lb-role",
            # The trust policy exactly as AWS documents it for this role: ecs.amazonaws.com,
            # sts:AssumeRole, no condition. AWS documents no aws:SourceArn/aws:SourceAccount
            # for this assumption (unlike the task roles'); a condition on a key ECS does
            # not send would fail every blue/green deployment. Source: ECS developer guide,
            # AmazonECSInfrastructureRolePolicyForLoadBalancers.html
            # (ecs-infrastructure-trust-policy.json).
            assume_role_policy=documented_trust_policy(ECS_INFRASTRUCTURE_PRINCIPAL),
            tags=self._tags("ecs-lb-role"),
            opts=child_opts(self),
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{self._name}-ecs-lb-role-managed",
            role=role.name,
            policy_arn=ECS_LOAD_BALANCER_POLICY_ARN,
            opts=child_opts(self),
        )
        self._blue_green_setup = [attachment]
        return role

    def _create_service(self, blue_green_role: aws.iam.Role | None) -> None:
        n, args = self._name, self._args
        # Make the target group input wait for the listener, so the service is created
        # only once the target group is attached to the ALB.
        target_group_arn = pulumi.Output.all(args.target_group_arn, args.listener_arn).apply(
            lambda v: v[0]
        )
        load_balancer: dict = {
            "target_group_arn": target_group_arn,
            "container_name": API_CONTAINER,
            "container_port": args.app_port,
        }
        strategy = DEPLOY_STRATEGIES[args.deploy_strategy]
        deployment_configuration: dict = {"strategy": strategy}
        ignore = ["desiredCount"]  # autoscaling owns the running count after creation
        depends_on: list[pulumi.Resource] = []
        if blue_green_role is not None:
            # Source: pulumi_aws ecs.ServiceLoadBalancerAdvancedConfigurationArgs.
            load_balancer["advanced_configuration"] = {
                "alternate_target_group_arn": args.alternate_target_group_arn,
                "production_listener_rule": args.production_listener_rule_arn,
                "test_listener_rule": args.test_listener_rule_arn,
                "role_arn": blue_green_role.arn,
            }
            # A string in the provider's schema.
            deployment_configuration["bake_time_in_minutes"] = str(args.bake_time_minutes)
            # ECS swaps which target group is primary on every deployment; re-sending the
            # original pair on a later `up` makes it deploy into the live group.
            # Source: hashicorp/terraform-provider-aws#45678.
            ignore.append("loadBalancers")
            depends_on = self._blue_green_setup
        alarms = None
        if args.deployment_alarm_names:
            # Alarm rollback and the circuit breaker both work with rolling and blue/green
            # deployments; either one failing the deployment rolls it back. Source: ECS
            # developer guide, deployment-failure-detection.html.
            alarms = {"alarm_names": list(args.deployment_alarm_names), "enable": True,
                      "rollback": True}
        self.service = aws.ecs.Service(
            f"{n}-{SERVICE_RESOURCE[args.deploy_strategy]}",
            cluster=self.cluster.arn,
            task_definition=self.task_definition.arn,
            desired_count=args.replicas,
            launch_type="FARGATE",
            platform_version="LATEST",
            network_configuration={
                "subnets": list(args.subnet_ids),
                "security_groups": [args.security_group_id],
                "assign_public_ip": False,
            },
            load_balancers=[load_balancer],
            # Native blue/green runs under the ECS controller. Source: ECS developer
            # guide, blue-green-deployment-implementation.html.
            deployment_controller={"type": "ECS"},
            deployment_configuration=deployment_configuration,
            deployment_circuit_breaker={"enable": True, "rollback": True},
            alarms=alarms,
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            health_check_grace_period_seconds=args.health_check_grace_seconds,
            enable_execute_command=args.ecs_exec,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            tags=self._tags("service"),
            opts=child_opts(self, ignore_changes=ignore,
                            depends_on=[*self._execution_grants, *depends_on]),
        )
        self.service_name = self.service.name

    def _create_autoscaling(self) -> None:
        n, args = self._name, self._args
        # Source: botocore application-autoscaling RegisterScalableTarget (ecs namespace).
        target = aws.appautoscaling.Target(
            f"{n}-scaling-target",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat(
                "service/", self.cluster.name, "/", self.service.name
            ),
            min_capacity=args.min_replicas,
            max_capacity=args.max_replicas,
            opts=child_opts(self),
        )
        cpu = {"predefined_metric_specification": {
            "predefined_metric_type": "ECSServiceAverageCPUUtilization"}}
        for role, value, metric in (("cpu", args.cpu_target_percent, cpu),
                                    ("requests", args.requests_per_target,
                                     {"customized_metric_specification": self._requests()})):
            aws.appautoscaling.Policy(
                f"{n}-scale-{role}",
                policy_type="TargetTrackingScaling",
                service_namespace=target.service_namespace,
                scalable_dimension=target.scalable_dimension,
                resource_id=target.resource_id,
                target_tracking_scaling_policy_configuration={
                    **metric,
                    "target_value": value,
                    "scale_in_cooldown": 300,
                    "scale_out_cooldown": 60,
                },
                opts=child_opts(self),
            )

    def _requests(self) -> dict:
        """Requests per task over every target group the tasks register in, added up.

        The predefined ``ALBRequestCountPerTarget`` reads one target group (its
        ``resource_label``); under blue/green production traffic moves to the other group
        on every deployment, and request-based scale-out would stop every other release.
        Production traffic goes to one group at a time (ECS shifts it all at once), so the
        sum of the groups' per-target counts is the live group's; a group with no data
        counts 0. Metric math with any CloudWatch function is allowed in a target tracking
        policy as long as it returns one time series. Sources: botocore
        application-autoscaling CustomizedMetricSpecification.Metrics and
        TargetTrackingMetricDataQuery; Application Auto Scaling user guide,
        application-auto-scaling-target-tracking-metric-math.html; pulumi_aws
        appautoscaling PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetric
        SpecificationMetricArgs (id, expression, label, metric_stat, return_data).
        """
        args = self._args
        namespace, metric_name, stat = REQUESTS_PER_TARGET_METRIC
        ids = [f"tg{i}" for i in range(len(args.target_group_arn_suffixes))]
        metrics: list[dict] = [
            {"id": i, "return_data": False, "metric_stat": {"stat": stat, "metric": {
                "namespace": namespace, "metric_name": metric_name,
                "dimensions": [{"name": "LoadBalancer", "value": args.load_balancer_arn_suffix},
                               {"name": "TargetGroup", "value": tg}]}}}
            for i, tg in zip(ids, args.target_group_arn_suffixes, strict=True)
        ]
        metrics.append({"id": "requests_per_target", "return_data": True,
                        "label": "requests per task, every target group",
                        "expression": " + ".join(f"FILL({i}, 0)" for i in ids)})
        return {"metrics": metrics}
