"""The cloud operator verbs end to end against moto's server over HTTP: `prodstack status |
logs | exec --stack prod`, run as a user runs them (the CLI in a subprocess, boto3 reaching
moto through AWS_ENDPOINT_URL), on resources named as the prod plan names them.

moto 5.2.5 lacks two things the verbs use, so those paths are tested with botocore's
Stubber against the ECS service model instead:
- ECS ListServiceDeployments / DescribeServiceDeployments (a deployment's lifecycle stage,
  such as BAKE_TIME): not implemented; over moto, status says the stage is unknown.
- ECS RunTask for Fargate with awsvpc fails inside moto (shared/notes/environment.md).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from prodstack.ops.cloud import Cloud
from tests.support.moto import moto_server

REPO = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"  # Pulumi.prod.yaml's aws:region
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}  # fmt: skip


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("plan") / "prod.json"
    subprocess.run([sys.executable, "-m", "prodstack", "plan", "--stack", "prod", "-o", str(out),
                    "--format", "json"], cwd=REPO, check=True, capture_output=True)  # fmt: skip
    return json.loads(out.read_text())


def _client(env: dict, service: str):
    return boto3.client(service, region_name=REGION, endpoint_url=env["AWS_ENDPOINT_URL"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


def _resources(plan: dict, type_: str) -> list[dict]:
    return [r for r in plan["resources"] if r["type"] == type_]


TASK_ID = "0123456789abcdef0123456789abcdef"
REQUEST_ID = "req-7f3a"


@pytest.fixture(scope="module")
def seeded(aws_env, plan, tmp_path_factory) -> Path:
    """The plan's cluster, service, task definition, log group, target groups and alarms in
    moto, and the outputs file `pulumi stack output --json` would print for them."""
    outputs = plan["outputs"]
    ec2, elb, ecs = (_client(aws_env, s) for s in ("ec2", "elbv2", "ecs"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="svc", Description="svc", VpcId=vpc)["GroupId"]
    target_groups = []
    for tg in _resources(plan, "aws:lb/targetGroup:TargetGroup"):
        created = elb.create_target_group(Name=tg["name"], Protocol="HTTP", Port=8000,
                                          VpcId=vpc, TargetType="ip")  # fmt: skip
        target_groups.append(created["TargetGroups"][0]["TargetGroupArn"])
    elb.register_targets(TargetGroupArn=target_groups[0],
                         Targets=[{"Id": "10.0.1.5", "Port": 8000},
                                  {"Id": "10.0.1.6", "Port": 8000}])  # fmt: skip
    ecr = _client(aws_env, "ecr")
    repo = ecr.create_repository(repositoryName="prodstack")["repository"]["repositoryUri"]
    manifest = json.dumps({"schemaVersion": 2, "config": {}, "layers": [],
                           "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
    digest = ecr.put_image(repositoryName="prodstack", imageManifest=manifest,
                           imageTag="1a2b3c4d5e6f")["image"]["imageId"]["imageDigest"]  # fmt: skip
    (api_td,) = [r for r in _resources(plan, "aws:ecs/taskDefinition:TaskDefinition")
                 if not r["inputs"]["family"].endswith("-migrate")]  # fmt: skip
    log_group = outputs["log_group_name"]
    containers = [
        {"name": name, "image": f"{repo}@{digest}", "memory": 512, "essential": name == "api",
         "logConfiguration": {"logDriver": "awslogs", "options": {
             "awslogs-group": log_group, "awslogs-region": REGION,
             "awslogs-stream-prefix": name}}}
        for name in ("migrate", "api")
    ]  # fmt: skip
    task_definition = ecs.register_task_definition(
        family=api_td["inputs"]["family"], containerDefinitions=containers,
        requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="512", memory="1024",
    )["taskDefinition"]["taskDefinitionArn"]  # fmt: skip
    (service,) = _resources(plan, "aws:ecs/service:Service")
    ecs.create_cluster(clusterName=outputs["cluster_name"])
    ecs.create_service(cluster=outputs["cluster_name"], serviceName=outputs["service_name"],
                       taskDefinition=task_definition, launchType="FARGATE",
                       desiredCount=int(service["inputs"]["desiredCount"]))  # fmt: skip
    logs = _client(aws_env, "logs")
    logs.create_log_group(logGroupName=log_group)
    now = int(time.time() * 1000)
    lines = {
        f"api/api/{TASK_ID}": [
            json.dumps({"msg": "request", "request_id": REQUEST_ID, "route": "/api/v1/alerts",
                        "status": 201}),
            json.dumps({"msg": "request", "request_id": "req-other", "route": "/health",
                        "status": 200}),
        ],
        f"migrate/migrate/{TASK_ID}": ['{"msg": "migrations applied", "level": "info"}'],
        f"metrics-collector/metrics-collector/{TASK_ID}": ["collector noise"],
    }  # fmt: skip
    for i, (stream, messages) in enumerate(lines.items()):
        logs.create_log_stream(logGroupName=log_group, logStreamName=stream)
        logs.put_log_events(logGroupName=log_group, logStreamName=stream, logEvents=[
            {"timestamp": now - 60_000 + 1000 * (i * 10 + j), "message": m}
            for j, m in enumerate(messages)])  # fmt: skip
    cloudwatch = _client(aws_env, "cloudwatch")
    for name in outputs["alarm_names"]:
        cloudwatch.put_metric_alarm(
            AlarmName=name, MetricName="m", Namespace="prodstack", Statistic="Average",
            Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold",
        )  # fmt: skip
    firing = outputs["alarm_names"][0]
    cloudwatch.set_alarm_state(AlarmName=firing, StateValue="ALARM", StateReason="5xx above 1%")
    applied = {**{k: v for k, v in outputs.items() if "(known after apply" not in json.dumps(v)},
               "api_task_definition": task_definition, "service_subnet_ids": [subnet],
               "service_security_group_id": group, "target_group_arns": target_groups,
               "image": f"{repo}@{digest}"}  # fmt: skip
    path = tmp_path_factory.mktemp("outputs") / "outputs.json"
    path.write_text(json.dumps(applied))
    return path


def prodstack(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prodstack", *args], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def test_status_reads_the_service_targets_image_and_alarms(aws_env, seeded, plan):
    result = prodstack(aws_env, "status", "--stack", "prod", "--outputs", str(seeded),
                       "--format", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    (service,) = _resources(plan, "aws:ecs/service:Service")
    assert status["desired"] == int(service["inputs"]["desiredCount"])
    assert [d["status"] for d in status["deployments"]] == ["PRIMARY"]
    assert status["image"]["version"] == "1a2b3c4d5e6f"
    assert status["image"]["digest"].startswith("sha256:")
    groups = {g["name"]: g["targets"] for g in status["target_groups"]}
    assert len(groups) == 2 and {"healthy": 2} in groups.values()
    assert [a["name"] for a in status["alarms_in_alarm"]] == [plan["outputs"]["alarm_names"][0]]
    # moto has no ListServiceDeployments: the stage is reported unknown, not invented.
    assert status["in_progress"] is None and "in_progress_error" in status
    markdown = prodstack(aws_env, "status", "--stack", "prod", "--outputs", str(seeded)).stdout
    assert "- alarms in ALARM: 1" in markdown and "version 1a2b3c4d5e6f" in markdown


def test_logs_filter_by_request_id_and_prefix_the_task(aws_env, seeded):
    result = prodstack(aws_env, "logs", "--stack", "prod", "--outputs", str(seeded),
                       "--since", "10m", "--request-id", REQUEST_ID)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    source, _when, text = line.split(" ", 2)
    assert source == f"{TASK_ID[:12]}/api"
    assert json.loads(text)["request_id"] == REQUEST_ID


def test_logs_merge_api_and_migrate_in_time_order_without_other_containers(aws_env, seeded):
    result = prodstack(aws_env, "logs", "--stack", "prod", "--outputs", str(seeded),
                       "--since", "10m", "--format", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["source"].split("/")[1] for e in entries] == ["api", "api", "migrate"]
    assert [e["time"] for e in entries] == sorted(e["time"] for e in entries)
    grep = prodstack(aws_env, "logs", "--stack", "prod", "--outputs", str(seeded), "--since",
                     "10m", "--grep", "migrations applied")  # fmt: skip
    assert [line.split(" ", 2)[0] for line in grep.stdout.splitlines()] == \
        [f"{TASK_ID[:12]}/migrate"]  # fmt: skip


def test_a_missing_cluster_is_exit_2_with_one_line(aws_env, seeded, tmp_path):
    outputs = json.loads(seeded.read_text()) | {"cluster_name": "prodstack-nowhere"}
    (tmp_path / "o.json").write_text(json.dumps(outputs))
    for verb in ("status", "exec"):
        extra = ["--", "migrate"] if verb == "exec" else []
        result = prodstack(aws_env, verb, "--stack", "prod", "--outputs",
                           str(tmp_path / "o.json"), *extra)  # fmt: skip
        assert result.returncode == 2, (verb, result.stderr)
        assert result.stdout == ""
        (line,) = result.stderr.strip().splitlines()
        assert "cluster prodstack-nowhere does not exist" in line, line


def test_exec_runs_a_task_streams_its_logs_and_returns_its_exit_code(aws_env, seeded):
    """RunTask (Fargate, awsvpc) fails inside moto 5.2.5, so ECS is stubbed against the
    service model; the task's logs come from moto's CloudWatch Logs over HTTP."""
    outputs = json.loads(seeded.read_text())
    cloud = Cloud.for_stack("prod", outputs_file=seeded)
    ecs = boto3.client("ecs", region_name=REGION)
    task_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{outputs['cluster_name']}/{TASK_ID}"
    with Stubber(ecs) as stub:
        stub.add_response("describe_clusters", {"clusters": [
            {"clusterName": outputs["cluster_name"], "status": "ACTIVE"}]},
            {"clusters": [outputs["cluster_name"]]})  # fmt: skip
        stub.add_response("run_task", {"tasks": [{"taskArn": task_arn}], "failures": []}, {
            "cluster": outputs["cluster_name"], "taskDefinition": outputs["api_task_definition"],
            "launchType": "FARGATE", "count": 1, "startedBy": "prodstack-exec",
            "networkConfiguration": {"awsvpcConfiguration": {
                "subnets": outputs["service_subnet_ids"],
                "securityGroups": [outputs["service_security_group_id"]],
                "assignPublicIp": "DISABLED"}},
            "overrides": {"containerOverrides": [{"name": "api", "command": ["migrate"]}]},
        })  # fmt: skip
        stub.add_response("describe_tasks", {"tasks": [{"taskArn": task_arn,
                                                        "lastStatus": "RUNNING"}]})
        stub.add_response("describe_tasks", {"tasks": [{
            "taskArn": task_arn, "lastStatus": "STOPPED",
            "containers": [{"name": "migrate", "exitCode": 0}, {"name": "api", "exitCode": 3}],
        }]})  # fmt: skip
        real = cloud.client
        cloud.client = lambda service: ecs if service == "ecs" else real(service)  # type: ignore[method-assign]
        os.environ.update(aws_env)
        out = io.StringIO()
        try:
            code = cloud.run_task(["migrate"], out=out, poll_seconds=0)
        finally:
            for key in aws_env:
                os.environ.pop(key, None)
        stub.assert_no_pending_responses()
    assert code == 3
    assert REQUEST_ID in out.getvalue()  # the api container's stream of that task


def test_status_shows_a_blue_green_deployment_stage():
    """ECS's service deployments (moto lacks them), stubbed against the service model."""
    cloud = Cloud("prod", {"cluster_name": "c", "service_name": "s"}, "test", REGION)
    ecs = boto3.client("ecs", region_name=REGION, aws_access_key_id="x",
                       aws_secret_access_key="x")  # fmt: skip
    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service-deployment/c/s/abc"
    started = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    with Stubber(ecs) as stub:
        stub.add_response("list_service_deployments", {"serviceDeployments": [
            {"serviceDeploymentArn": arn, "status": "IN_PROGRESS"}]},
            {"service": "s", "cluster": "c", "status": ["PENDING", "IN_PROGRESS"]})  # fmt: skip
        stub.add_response("describe_service_deployments", {"serviceDeployments": [
            {"serviceDeploymentArn": arn, "status": "IN_PROGRESS", "lifecycleStage": "BAKE_TIME",
             "startedAt": started, "targetServiceRevision": {"arn": "rev-2"}}]},
            {"serviceDeploymentArns": [arn]})  # fmt: skip
        stages = cloud._in_progress(ecs)
    assert stages == [{"arn": arn, "status": "IN_PROGRESS", "stage": "BAKE_TIME",
                       "started_at": "2026-12-07T06:00:00Z", "target_revision": "rev-2"}]


def test_lock_on_the_cloud_says_pulumi_holds_it():
    result = subprocess.run(
        [sys.executable, "-m", "prodstack", "lock", "acquire", "-m", "x", "--stack", "prod"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Pulumi's own stack lock" in result.stdout
