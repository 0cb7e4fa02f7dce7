"""The operator verbs on the cloud profile, with boto3 (credentials from the standard chain).

The stack's names come from `pulumi stack output --json` when the Pulumi CLI is installed,
or from `--outputs FILE` (that command's output, saved). Without either, from the plan:
only what is named before `pulumi up` (the log group, the alarms); the cluster and the
service are auto-named by Pulumi, so status and exec need real outputs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prodstack import REPO
from prodstack.errors import UsageError
from prodstack.ops.ssh import HostError

# The containers of the API task definition (components/service.py): their log streams
# are <container>/<container>/<task id> (awslogs-stream-prefix = the container's name).
API_CONTAINER = "api"
LOG_CONTAINERS = ("api", "migrate")
# Outputs a verb needs, and which verbs need them.
NEEDS = {
    "status": ("cluster_name", "service_name"),
    "logs": ("log_group_name",),
    "exec": ("cluster_name", "api_task_definition", "service_subnet_ids",
             "service_security_group_id", "log_group_name"),
}  # fmt: skip
UNKNOWN = "(known after apply"


def load_outputs(stack: str, outputs_file: Path | None) -> tuple[dict[str, Any], str]:
    """The stack's outputs, and where they came from."""
    if outputs_file is not None:
        try:
            outputs = json.loads(Path(outputs_file).read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"--outputs {outputs_file}: cannot read it as JSON ({error})") \
                from None  # fmt: skip
        if not isinstance(outputs, dict):
            raise UsageError(f"--outputs {outputs_file}: expected the JSON object "
                             "`pulumi stack output --json` prints")  # fmt: skip
        return outputs, f"--outputs {outputs_file}"
    if shutil.which("pulumi"):
        proc = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack],
                              cwd=REPO, capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            line = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            raise UsageError(f"`pulumi stack output --json --stack {stack}`: {line}")
        return json.loads(proc.stdout or "{}"), "pulumi stack output"
    return _outputs_from_plan(stack), "the plan (no Pulumi CLI and no --outputs)"


def _outputs_from_plan(stack: str) -> dict[str, Any]:
    """What the plan knows before apply: outputs that are not marked unknown, and of the
    cluster and service names only those set explicitly (Pulumi auto-names them)."""
    import argparse

    from prodstack.planning import plan_in_subprocess

    print(f"prodstack: no Pulumi CLI and no --outputs: reading names from the plan of {stack}",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="prodstack-ops-") as tmp:
        args = argparse.Namespace(profile="cloud", stack=stack, config=[], data=[])
        plan = plan_in_subprocess(args, REPO, Path(tmp) / "plan.json")
    named = {r["type"]: bool((r.get("inputs") or {}).get("name")) for r in plan["resources"]
             if r["type"] in ("aws:ecs/cluster:Cluster", "aws:ecs/service:Service")}  # fmt: skip
    outputs = {}
    for key, value in plan["outputs"].items():
        if UNKNOWN in json.dumps(value):
            continue
        if key == "cluster_name" and not named.get("aws:ecs/cluster:Cluster"):
            continue
        if key == "service_name" and not named.get("aws:ecs/service:Service"):
            continue
        outputs[key] = value
    return outputs


def stack_region(stack: str) -> str | None:
    """`aws:region` of Pulumi.STACK.yaml, if set."""
    import yaml

    path = REPO / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise UsageError(f"--stack {stack}: no Pulumi.{stack}.yaml in {REPO}")
    config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    return config.get("aws:region")


@dataclass
class Cloud:
    stack: str
    outputs: dict[str, Any]
    source: str
    region: str | None

    @classmethod
    def for_stack(cls, stack: str, *, outputs_file: Path | None = None,
                  region: str | None = None) -> Cloud:  # fmt: skip
        region = region or stack_region(stack)
        outputs, source = load_outputs(stack, outputs_file)
        return cls(stack, outputs, source, region)

    def need(self, verb: str) -> dict[str, Any]:
        missing = [key for key in NEEDS[verb] if not self.outputs.get(key)]
        if missing:
            raise UsageError(
                f"{verb} --stack {self.stack}: {', '.join(missing)} not in {self.source}; "
                "they are known after `pulumi up`: give --outputs FILE (`pulumi stack output "
                "--json > FILE`) or install the Pulumi CLI"
            )
        return self.outputs

    def client(self, service: str):
        import boto3

        return boto3.client(service, region_name=self.region)

    # --- status --------------------------------------------------------------------------

    def _cluster(self, ecs) -> None:
        """Exit 2 with one line when the stack's cluster is not there (not deployed, another
        account or Region, or a stale outputs file)."""
        name = self.outputs["cluster_name"]
        found = ecs.describe_clusters(clusters=[name]).get("clusters", [])
        if not any(c.get("status") == "ACTIVE" for c in found):
            raise UsageError(f"--stack {self.stack}: cluster {name} does not exist in "
                             f"{self.region} (from {self.source})")  # fmt: skip

    def _service(self, ecs) -> dict[str, Any]:
        out = self.outputs
        self._cluster(ecs)
        answer = ecs.describe_services(cluster=out["cluster_name"],
                                       services=[out["service_name"]])  # fmt: skip
        services = [s for s in answer.get("services", []) if s.get("status") != "INACTIVE"]
        if not services:
            reasons = "; ".join(f.get("reason", "") for f in answer.get("failures", []))
            if "cluster" in reasons.lower():
                raise UsageError(f"--stack {self.stack}: cluster {out['cluster_name']} does not "
                                 f"exist in {self.region} (from {self.source})")
            raise UsageError(f"--stack {self.stack}: service {out['service_name']} not found "
                             f"in cluster {out['cluster_name']} ({reasons or 'no such service'})")
        return services[0]

    def status(self) -> dict[str, Any]:
        out = self.need("status")
        ecs = self.client("ecs")
        service = self._service(ecs)
        deployments = [{
            "id": d.get("id"), "status": d.get("status"), "rollout": d.get("rolloutState"),
            "task_definition": d.get("taskDefinition"), "desired": d.get("desiredCount"),
            "running": d.get("runningCount"), "pending": d.get("pendingCount"),
            "created_at": _stamp(d.get("createdAt")),
        } for d in service.get("deployments", [])]  # fmt: skip
        result: dict[str, Any] = {
            "profile": "cloud", "stack": self.stack, "region": self.region,
            "cluster": out["cluster_name"], "service": out["service_name"],
            "running": service.get("runningCount"), "desired": service.get("desiredCount"),
            "pending": service.get("pendingCount"), "deployments": deployments,
        }  # fmt: skip
        from botocore.exceptions import ClientError

        try:
            result["in_progress"] = self._in_progress(ecs)
        except ClientError as error:  # no permission, or an endpoint without the API
            result["in_progress"] = None
            result["in_progress_error"] = str(error)
        result["image"] = self._image(ecs, service.get("taskDefinition"))
        result["target_groups"] = self._targets(out.get("target_group_arns") or [])
        result["alarms_in_alarm"] = self._alarms(out.get("alarm_names") or [])
        return result

    def _in_progress(self, ecs) -> list[dict[str, Any]]:
        """ECS's own service deployments in progress, with their lifecycle stage (blue/green:
        SCALE_UP, TEST_TRAFFIC_SHIFT, PRODUCTION_TRAFFIC_SHIFT, BAKE_TIME, ...)."""
        out = self.outputs
        listed = ecs.list_service_deployments(
            service=out["service_name"], cluster=out["cluster_name"],
            status=["PENDING", "IN_PROGRESS"],
        )  # fmt: skip
        arns = [d["serviceDeploymentArn"] for d in listed.get("serviceDeployments", [])]
        if not arns:
            return []
        described = ecs.describe_service_deployments(serviceDeploymentArns=arns)
        return [{"arn": d.get("serviceDeploymentArn"), "status": d.get("status"),
                 "stage": d.get("lifecycleStage"), "started_at": _stamp(d.get("startedAt")),
                 "target_revision": (d.get("targetServiceRevision") or {}).get("arn")}
                for d in described.get("serviceDeployments", [])]  # fmt: skip

    def _image(self, ecs, task_definition: str | None) -> dict[str, Any] | None:
        if not task_definition:
            return None
        definition = ecs.describe_task_definition(taskDefinition=task_definition)
        containers = definition["taskDefinition"].get("containerDefinitions", [])
        api = next((c for c in containers if c.get("name") == API_CONTAINER), None)
        if api is None:
            return None
        image = api.get("image", "")
        repository, _, digest = image.partition("@")
        version = None
        if digest and ".dkr.ecr." in repository:
            from botocore.exceptions import ClientError

            try:
                found = self.client("ecr").describe_images(
                    repositoryName=repository.split("/", 1)[1],
                    imageIds=[{"imageDigest": digest}],
                )["imageDetails"]
                tags = found[0].get("imageTags") or [] if found else []
                version = tags[0] if tags else None
            except ClientError:
                version = None
        return {"image": image, "digest": digest or None, "version": version,
                "task_definition": task_definition}  # fmt: skip

    def _targets(self, arns: list[str]) -> list[dict[str, Any]]:
        elb = self.client("elbv2")
        groups = []
        for arn in arns:
            health = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
            states: dict[str, int] = {}
            for target in health:
                state = target["TargetHealth"]["State"]
                states[state] = states.get(state, 0) + 1
            groups.append({"arn": arn, "name": arn.rsplit("/", 2)[-2] if "/" in arn else arn,
                           "targets": states})  # fmt: skip
        return groups

    def _alarms(self, names: list[str]) -> list[dict[str, Any]]:
        if not names:
            return []
        cloudwatch = self.client("cloudwatch")
        firing = []
        for start in range(0, len(names), 100):  # DescribeAlarms takes at most 100 names
            answer = cloudwatch.describe_alarms(AlarmNames=names[start:start + 100],
                                                StateValue="ALARM")  # fmt: skip
            # The state is checked here too: moto's DescribeAlarms ignores StateValue when
            # given AlarmNames.
            firing += [{"name": a["AlarmName"], "reason": a.get("StateReason"),
                        "since": _stamp(a.get("StateUpdatedTimestamp"))}
                       for a in answer.get("MetricAlarms", [])
                       if a.get("StateValue") == "ALARM"]  # fmt: skip
        return firing

    # --- logs ----------------------------------------------------------------------------

    def _filter(self, grep: str | None, request_id: str | None) -> str | None:
        """A CloudWatch Logs filter pattern (a quoted term) that narrows what is fetched;
        the lines are then matched exactly as on the VPS (the request id field of the
        app's JSON lines)."""
        if request_id is not None:
            if not re.fullmatch(r"[A-Za-z0-9._:-]{1,200}", request_id):
                raise UsageError(f"--request-id {request_id!r}: letters, digits and ._:- only")
            return f'"{request_id}"'
        if grep is not None:
            return '"' + grep.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return None

    def logs(self, *, since: str | None, follow: bool, grep: str | None,
             request_id: str | None, fmt: str, out=sys.stdout) -> int:  # fmt: skip
        from prodstack.ops.vps import _line_filter, _seconds

        keep = _line_filter(grep, request_id)
        group = self.need("logs")["log_group_name"]
        start = int((time.time() - (_seconds(since) if since else 3600)) * 1000)
        pattern = self._filter(grep, request_id)
        client = self.client("logs")
        seen: set[str] = set()
        while True:
            events = self._events(client, group, start, pattern)
            fresh = [e for e in events if e["eventId"] not in seen]
            for event in sorted(fresh, key=lambda e: (e["timestamp"], e["eventId"])):
                seen.add(event["eventId"])
                entry = _log_entry(event)
                if not keep(entry["line"]):
                    continue
                out.write(json.dumps(entry) + "\n" if fmt == "json" else
                          f"{entry['source']} {entry['time']} {entry['line']}\n")  # fmt: skip
                out.flush()
                start = max(start, event["timestamp"])
            if not follow:
                return 0
            time.sleep(1)

    def _events(self, client, group: str, start: int, pattern: str | None) -> list[dict]:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start}
        if pattern:
            kwargs["filterPattern"] = pattern
        events = []
        try:
            for page in client.get_paginator("filter_log_events").paginate(**kwargs):
                events += [e for e in page.get("events", [])
                           if e.get("logStreamName", "").split("/", 1)[0] in LOG_CONTAINERS]
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                raise UsageError(f"--stack {self.stack}: log group {group} does not exist in "
                                 f"{self.region} (from {self.source})") from None
            raise
        return events

    # --- exec ----------------------------------------------------------------------------

    def run_task(self, command: list[str], *, out=sys.stdout, poll_seconds: float = 2.0,
                 timeout_seconds: float = 3600) -> int:  # fmt: skip
        """A one-off task of the API task definition in the service's subnets and security
        group, with the api container's command replaced. ECS keeps the image's entrypoint
        (`python -m app`): RunTask's overrides replace the command only."""
        out_ = self.need("exec")
        ecs = self.client("ecs")
        self._cluster(ecs)
        subnets = out_["service_subnet_ids"]
        started = ecs.run_task(
            cluster=out_["cluster_name"], taskDefinition=out_["api_task_definition"],
            launchType="FARGATE", count=1, startedBy="prodstack-exec",
            networkConfiguration={"awsvpcConfiguration": {
                "subnets": list(subnets) if isinstance(subnets, list) else [subnets],
                "securityGroups": [out_["service_security_group_id"]],
                "assignPublicIp": "DISABLED"}},
            overrides={"containerOverrides": [{"name": API_CONTAINER, "command": command}]},
        )  # fmt: skip
        if not started.get("tasks"):
            reasons = "; ".join(f"{f.get('arn', '')} {f.get('reason', '')}".strip()
                                for f in started.get("failures", []))  # fmt: skip
            raise HostError(f"ECS did not start the task: {reasons or 'no reason given'}")
        task_arn = started["tasks"][0]["taskArn"]
        task_id = task_arn.rsplit("/", 1)[-1]
        print(f"prodstack: started task {task_id} in {out_['cluster_name']}; its api "
              "container runs `python -m app` with your arguments", file=sys.stderr)
        logs = self.client("logs")
        stream = f"{API_CONTAINER}/{API_CONTAINER}/{task_id}"
        token = None
        deadline = time.monotonic() + timeout_seconds
        while True:
            task = ecs.describe_tasks(cluster=out_["cluster_name"], tasks=[task_arn])["tasks"][0]
            token = self._stream(logs, stream, token, out)
            if task.get("lastStatus") == "STOPPED":
                token = self._stream(logs, stream, token, out)
                api = next((c for c in task.get("containers", [])
                            if c.get("name") == API_CONTAINER), {})  # fmt: skip
                if api.get("exitCode") is None:
                    raise HostError(f"task {task_id} stopped without an exit code: "
                                    f"{task.get('stoppedReason') or api.get('reason')}")
                return int(api["exitCode"])
            if time.monotonic() > deadline:
                raise HostError(f"task {task_id} still running after {timeout_seconds:.0f}s")
            time.sleep(poll_seconds)

    def _stream(self, logs, stream: str, token: str | None, out) -> str | None:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"logGroupName": self.outputs["log_group_name"],
                                  "logStreamName": stream, "startFromHead": True}  # fmt: skip
        if token:
            kwargs["nextToken"] = token
        try:
            while True:
                page = logs.get_log_events(**kwargs)
                for event in page.get("events", []):
                    out.write(event["message"] + "\n")
                out.flush()
                if page.get("nextForwardToken") in (None, kwargs.get("nextToken")):
                    return page.get("nextForwardToken") or token
                kwargs["nextToken"] = page["nextForwardToken"]
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                return token  # the stream appears when the container starts
            raise


def _log_entry(event: dict[str, Any]) -> dict[str, str]:
    container, _, rest = event.get("logStreamName", "").partition("/")
    task_id = rest.rsplit("/", 1)[-1] if rest else "?"
    when = datetime.fromtimestamp(event["timestamp"] / 1000, UTC)
    return {"time": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "source": f"{task_id[:12]}/{container}", "line": event["message"].rstrip("\n")}


def _stamp(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def render_status(result: dict[str, Any]) -> str:
    lines = [f"### {result['service']} in {result['cluster']} ({result['region']})", ""]
    lines.append(f"- tasks: {result['running']} running of {result['desired']} desired"
                 f" ({result['pending']} pending)")  # fmt: skip
    image = result.get("image")
    if image:
        lines.append(f"- image: `{image['image']}`, version {image['version'] or 'unknown'}")
    for d in result["deployments"]:
        lines.append(f"- deployment {d['status']} ({d['rollout']}): {d['running']}/{d['desired']}"
                     f" running, {d['task_definition'].rsplit('/', 1)[-1]}, since "
                     f"{d['created_at']}")  # fmt: skip
    if result["in_progress"] is None:
        lines.append(f"- deployment stage unknown: {result.get('in_progress_error')}")
    for d in result["in_progress"] or []:
        lines.append(f"- in progress: {d['status']}, stage {d['stage']}, since {d['started_at']}")
    if result["in_progress"] == []:
        lines.append("- no deployment in progress")
    for g in result["target_groups"]:
        states = ", ".join(f"{n} {s}" for s, n in sorted(g["targets"].items())) or "no targets"
        lines.append(f"- target group {g['name']}: {states}")
    alarms = result["alarms_in_alarm"]
    lines.append(f"- alarms in ALARM: {len(alarms)}" + "".join(
        f"\n  - {a['name']} since {a['since']}: {a['reason']}" for a in alarms))  # fmt: skip
    return "\n".join(lines) + "\n"


def lock_answer(stack: str) -> dict[str, Any]:
    return {
        "stack": stack, "lock": "pulumi",
        "message": f"--stack {stack}: `pulumi up` takes Pulumi's own stack lock, so two "
        "deploys of one stack never interleave (the second fails at once, naming the "
        "lock); prodstack holds no lock of its own for the cloud. `pulumi cancel` ends a "
        "stuck update. A lock to hold deploys while you work exists for --profile vps.",
    }
