"""Run the real Pulumi entrypoint (stacks/__main__.py) under mocks and dump a manifest.

Used by tests/cloud in a subprocess (``set_mocks`` is process-wide state), and by hand:

    uv run python tests/cloud/prodstack_cloud_harness.py prod /tmp/prod.json
    uv run python tests/cloud/prodstack_cloud_harness.py dev - --set replicas=0

Config is what the Pulumi CLI would pass: ``Pulumi.yaml`` defaults overlaid with
``Pulumi.<stack>.yaml``. Values that would be ``secure:`` (and the API token) are
replaced by test values and passed as secret keys. The manifest holds every registered
resource (type, name, parent, custom, inputs with secrets masked), every invoke, the
stack outputs, warnings, and the exit code/stderr if the program refused its config.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import runpy
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "stacks" / "__main__.py"
PROJECT = "prodstack"
ACCOUNT = "123456789012"
SECRET_MASK = "[secret]"
# Injected in place of secrets a real stack would hold encrypted.
TEST_SECRETS = {"prod": {"prodstack:api_token": "test-api-token-0123456789abcdef0123456789"}}
# Real ID of Managed-UseOriginCacheControlHeaders (third-party sourced; looked up by name).
ORIGIN_CACHE_CONTROL_ID = "83da9c7e-98b4-4e11-a168-04f0df8e2c65"


def stack_config(stack: str, overrides: dict[str, str | None]) -> tuple[dict[str, str], list[str]]:
    """Config as the CLI would pass it, plus the keys that are secret."""
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    config: dict[str, str] = {}
    for key, spec in (project.get("config") or {}).items():
        if isinstance(spec, dict) and "default" in spec:
            config[f"{PROJECT}:{key}"] = _text(spec["default"])
    stack_file = REPO / f"Pulumi.{stack}.yaml"
    secret_keys: list[str] = []
    if stack_file.exists():
        for key, value in (yaml.safe_load(stack_file.read_text()).get("config") or {}).items():
            if isinstance(value, dict) and "secure" in value:
                config[key] = f"test-secret-for-{key}"
                secret_keys.append(key)
            else:
                config[key] = _text(value)
    # app/ changes under other people's hands; a fixed tag keeps snapshots stable
    # (the hash-derived default is unit-tested separately).
    if not config.get(f"{PROJECT}:image_tag"):
        config[f"{PROJECT}:image_tag"] = "test-build"
    for key, value in TEST_SECRETS.get(stack, {}).items():
        config[key] = value
        secret_keys.append(key)
    for key, value in overrides.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value
    return config, secret_keys


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fake_hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def run(stack: str, overrides: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Run the program for ``stack`` under mocks and return the manifest."""
    import pulumi
    from pulumi.runtime import mocks as pmocks
    from pulumi.runtime import rpc

    config, secret_keys = stack_config(stack, overrides or {})
    region = config.get("aws:region", "eu-west-1")
    resources: list[dict[str, Any]] = []
    invokes: list[dict[str, Any]] = []

    # Plaintexts of every secret in play; masked wherever they surface.
    secret_values = {config[k] for k in secret_keys} | {"test-ecr-password"}

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
                inner = value.get("value")
                # A secret nested in a list/dict taints the whole property; keep its
                # shape visible (secret leaves are masked below) so tests can read it.
                return clean(inner) if isinstance(inner, (dict, list)) else SECRET_MASK
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            if value in secret_values:
                return SECRET_MASK
            for secret in secret_values:
                value = value.replace(secret, SECRET_MASK)
            # snapshots must not depend on where the repository is checked out
            return value.replace(str(REPO), "<repo>")
        return value

    def short(urn: str) -> str:
        """``urn:pulumi:stack::project::a$b$type::name`` -> ``type::name``."""
        if not urn:
            return ""
        head, name = urn.rsplit("::", 1)
        return f"{head.rsplit('::', 1)[-1].rsplit('$', 1)[-1]}::{name}"

    class Recorder(pmocks.MockMonitor):
        def RegisterResource(self, request):  # noqa: N802 (gRPC name)
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                prop_deps = {
                    key: sorted(short(u) for u in deps.urns)
                    for key, deps in request.propertyDependencies.items()
                    if deps.urns
                }
                resources.append(
                    {
                        "type": request.type,
                        "name": request.name,
                        "urn": f"{request.type}::{request.name}",
                        "parent": short(request.parent),
                        "custom": bool(request.custom),
                        "inputs": clean(rpc.deserialize_properties(request.object)),
                        "property_dependencies": dict(sorted(prop_deps.items())),
                    }
                )
            return response

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            inputs = dict(args.inputs)
            state = dict(inputs)
            name, typ = args.name, args.typ
            rid = f"{name}-id"
            svc = typ.split(":")[1].split("/")[0] if ":" in typ else "x"
            state.setdefault("name", name)
            state.setdefault("arn", f"arn:aws:{svc}:{region}:{ACCOUNT}:{name}")
            if typ == "aws:lb/loadBalancer:LoadBalancer":
                state |= {"dnsName": f"{name}-1234.{region}.elb.amazonaws.com",
                          "arnSuffix": f"app/{name}/50dc6c495c0c9188", "zoneId": "Z32O12XQLNTSW2"}
            elif typ == "aws:lb/targetGroup:TargetGroup":
                state["arnSuffix"] = f"targetgroup/{name}/73e2d6bc24d8a067"
            elif typ == "aws:rds/instance:Instance":
                ident = inputs.get("identifier", name)
                secret = f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:rds!db-{ident}-AbCdEf"
                state |= {"address": f"{ident}.c9akciq32.{region}.rds.amazonaws.com",
                          "port": 5432, "masterUserSecrets": [
                              {"secretArn": secret, "secretStatus": "active", "kmsKeyId": ""}]}
            elif typ == "aws:elasticache/replicationGroup:ReplicationGroup":
                rg = inputs.get("replicationGroupId", name)
                state["primaryEndpointAddress"] = f"master.{rg}.abc123.euw1.cache.amazonaws.com"
            elif typ == "aws:ecr/repository:Repository":
                state |= {"repositoryUrl": f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{name}",
                          "registryId": ACCOUNT}
            elif typ == "docker:index/image:Image":
                image = str(inputs.get("imageName", name)).rsplit(":", 1)[0]
                state["repoDigest"] = f"{image}@sha256:{_fake_hash(image)}"
            elif typ == "random:index/randomPassword:RandomPassword":
                state["result"] = "Mock" + _fake_hash(name)[:28] + "!&"
                secret_values.add(state["result"])
            elif typ == "random:index/randomId:RandomId":
                state["hex"] = _fake_hash(name)[:8]
            elif typ == "aws:acm/certificate:Certificate":
                names = [inputs["domainName"], *(inputs.get("subjectAlternativeNames") or [])]
                state["domainValidationOptions"] = [
                    {"domainName": d, "resourceRecordName": f"_x1.{d}.",
                     "resourceRecordType": "CNAME",
                     "resourceRecordValue": "_y1.acm-validations.aws."}
                    for d in names
                ]
            elif typ == "aws:acm/certificateValidation:CertificateValidation":
                state["certificateArn"] = inputs["certificateArn"]
            elif typ == "aws:cloudfront/distribution:Distribution":
                state |= {"domainName": "d111111abcdef8.cloudfront.net",
                          "hostedZoneId": "Z2FDTNDATAQYW2"}
            elif typ == "aws:route53/record:Record":
                state["fqdn"] = inputs.get("name", name)
            elif typ == "aws:s3/bucket:Bucket":
                state["bucket"] = f"{name}-20261123"
            return rid, state

        def call(self, args: pulumi.runtime.MockCallArgs):
            invokes.append({"token": args.token, "args": clean(dict(args.args))})
            token = args.token
            if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
                names = [f"{region}{z}" for z in "abc"]
                return {"names": names, "zoneIds": [f"euw1-az{i}" for i in (1, 2, 3)],
                        "id": region}
            if token == "aws:index/getRegion:getRegion":
                return {"name": region, "region": region, "id": region,
                        "endpoint": f"ec2.{region}.amazonaws.com"}
            if token == "aws:index/getCallerIdentity:getCallerIdentity":
                return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/test",
                        "userId": "AIDATEST", "id": ACCOUNT}
            if token == "aws:ec2/getManagedPrefixList:getManagedPrefixList":
                return {"id": "pl-4fa04526", "name": args.args.get("name"), "entries": []}
            if token == "aws:cloudfront/getCachePolicy:getCachePolicy":
                return {"id": ORIGIN_CACHE_CONTROL_ID, "name": args.args.get("name")}
            if token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
                return {"userName": "AWS", "password": "test-ecr-password",
                        "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{region}.amazonaws.com",
                        "authorizationToken": "dGVzdA==", "expiresAt": "2099-01-01",
                        "id": region}
            return {}

    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    logger = logging.getLogger("prodstack-harness")
    logger.addHandler(Collect())
    logger.propagate = False

    pulumi.runtime.set_mocks(
        Mocks(), project=PROJECT, stack=stack, preview=False,
        logger=logger, monitor=Recorder(Mocks()),
    )
    pulumi.runtime.set_all_config(config, secret_keys)

    outputs: dict[str, Any] = {}
    exit_code = 0
    stderr = io.StringIO()

    def program():
        runpy.run_path(str(MAIN), run_name="__main__")
        exports = pulumi.runtime.get_root_resource().outputs
        return pulumi.Output.all(**exports).apply(outputs.update)

    try:
        with redirect_stderr(stderr):
            pmocks.test(program)()
    except SystemExit as exc:
        exit_code = int(exc.code or 0)
    return {
        "stack": stack,
        "exit_code": exit_code,
        "stderr": stderr.getvalue(),
        "warnings": warnings,
        "outputs": clean(outputs),
        "invokes": invokes,
        "resources": resources,
    }


class Manifest:
    """Query helpers over a recorded manifest."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.resources: list[dict[str, Any]] = data["resources"]
        self.outputs: dict[str, Any] = data["outputs"]
        self.warnings: list[str] = data["warnings"]
        self.invokes: list[dict[str, Any]] = data["invokes"]

    def all(self, type_suffix: str) -> list[dict[str, Any]]:
        """Resources whose type ends with ``type_suffix`` (e.g. ``"rds/instance:Instance"``)."""
        return [r for r in self.resources if r["type"].endswith(type_suffix)]

    def inputs(self, type_suffix: str) -> list[dict[str, Any]]:
        return [r["inputs"] for r in self.all(type_suffix)]

    def one(self, type_suffix: str, name: str | None = None) -> dict[str, Any]:
        """Inputs of the single resource of that type (and name, when given)."""
        found = [r for r in self.all(type_suffix) if name is None or r["name"] == name]
        assert len(found) == 1, f"{type_suffix} {name}: {[r['name'] for r in found]}"
        return found[0]["inputs"]

    def named(self, name: str) -> dict[str, Any]:
        found = [r for r in self.resources if r["name"] == name]
        assert len(found) == 1, f"{name}: {len(found)} resources"
        return found[0]

    def containers(self, family: str) -> dict[str, dict[str, Any]]:
        """Container definitions of the task definition ``family``, by name."""
        task = next(i for i in self.inputs("taskDefinition:TaskDefinition")
                    if i["family"] == family)
        return {c["name"]: c for c in json.loads(task["containerDefinitions"])}

    def invoke_args(self, token_suffix: str) -> list[dict[str, Any]]:
        return [i["args"] for i in self.invokes if i["token"].endswith(token_suffix)]


# ---- policy helpers (tests call the rules' validate functions directly) ---------------


def check_resource(policy: Any, type_: str, props: dict) -> list[str]:
    """Violations a resource policy reports for one resource."""
    violations: list[str] = []
    from pulumi_policy import ResourceValidationArgs

    args = ResourceValidationArgs(type_, props, f"urn:{type_}::x", "x", None, None)
    policy.validate(args, lambda message, urn=None: violations.append(message))
    return violations


def policy_resources(items: list[dict[str, Any]]) -> list[Any]:
    """Manifest-shaped resources -> PolicyResources with property dependencies linked."""
    from pulumi_policy import PolicyResource

    made = {
        r["urn"]: PolicyResource(r["type"], r["inputs"], r["urn"], r["name"], None, None,
                                 None, [], {})
        for r in items
    }
    for r in items:
        made[r["urn"]].property_dependencies = {
            key: [made[u] for u in urns if u in made]
            for key, urns in r.get("property_dependencies", {}).items()
        }
    return list(made.values())


def check_stack(policy: Any, items: list[dict[str, Any]]) -> list[str]:
    """Violations a stack policy reports over manifest-shaped resources."""
    from pulumi_policy import StackValidationArgs

    violations: list[str] = []
    args = StackValidationArgs(policy_resources(items))
    policy.validate(args, lambda message, urn=None: violations.append(f"{urn}: {message}"))
    return violations


def run_all(manifest: Manifest) -> list[str]:
    """Every policy in the pack over a manifest; empty when compliant."""
    from pulumi_policy import StackValidationPolicy

    found = []
    from policies import rules

    for policy in rules.ALL_POLICIES:
        if isinstance(policy, StackValidationPolicy):
            found += [f"{policy.name}: {v}" for v in check_stack(policy, manifest.resources)]
        else:
            for r in manifest.resources:
                found += [f"{policy.name} {r['name']}: {v}"
                          for v in check_resource(policy, r["type"], r["inputs"])]
    return found


def run_harness(stack: str, out: Path, *extra: str) -> dict[str, Any]:
    """Run the entrypoint for ``stack`` under mocks in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), stack, str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    if proc.returncode != 0 or not out.exists():
        raise AssertionError(f"harness failed for {stack}:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())


def main(argv: list[str]) -> int:
    stack, out = argv[0], argv[1]
    overrides: dict[str, str | None] = {}
    rest = argv[2:]
    while rest:
        flag, item, rest = rest[0], rest[1], rest[2:]
        if flag == "--set":
            key, _, value = item.partition("=")
            overrides[key] = value
        elif flag == "--unset":
            overrides[item] = None
        else:
            raise SystemExit(f"unknown flag {flag}")
    sys.path.insert(0, str(REPO))
    manifest = run(stack, overrides)
    text = json.dumps(manifest, indent=1, sort_keys=True, default=str)
    if out == "-":
        print(text)
    else:
        Path(out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
