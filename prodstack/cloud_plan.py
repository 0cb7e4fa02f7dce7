"""Run the real Pulumi program (``stacks/__main__.py``) under Pulumi's mocks and record it.

No Pulumi CLI, no backend and no AWS credentials: the program runs in this process with
``pulumi.runtime.set_mocks``, a monitor records every resource it registers, and a mock
provider answers with values of the right shape. Two products come out of one run:

- a *manifest* (``record``): every resource's type, name, parent, inputs and property
  dependencies, every invoke, the outputs, warnings and the exit code. ``tests/cloud``
  checks the program through it.
- a *plan* (``plan_cloud``): the manifest in the plan-file format (``prodstack.planfile``),
  with secrets redacted and mock-made outputs marked as known only after apply.

``set_mocks`` is process-wide, so one process records one stack. The CLI's one plan
worker is a fresh ``python -m prodstack plan`` (``prodstack.cli``), which is how
``prodstack diff`` plans several stacks or checkouts; the tests' recorder
(tests/support/recorder.py) calls ``record`` the same way.

Config is what the Pulumi CLI would pass: ``Pulumi.yaml`` defaults overlaid with
``Pulumi.<stack>.yaml`` and then with overrides. A ``secure:`` value cannot be decrypted
without the CLI; the program gets a stand-in derived from the *ciphertext*, and the plan
shows ``[secret:KEY@VERSION]``, where VERSION is a short digest of that ciphertext. A
re-encrypted or changed secret therefore shows as "secret changed" without its value, or
a hash of its value, ever entering the plan.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import runpy
import sys
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import yaml

from prodstack import REPO, planfile
from prodstack.errors import UsageError

PROJECT = "prodstack"
ACCOUNT = "123456789012"
# Mock-made strings shorter than this are not traced as "known after apply" (too likely
# to occur by chance in unrelated inputs).
MIN_TRACED_LENGTH = 8


def stack_names(root: Path) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"{path.name}: invalid YAML{where}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path.name}: expected a mapping at the top level")
    return data


def stack_config(
    root: Path,
    stack: str,
    overrides: dict[str, str | None],
    *,
    secrets: dict[str, str] | None = None,
    image_tag: str | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Config as the CLI would pass it, and ``{secret value: plan label}`` for every secret.

    ``secrets`` injects plaintext secrets by full key (tests only). ``image_tag`` pins
    ``prodstack:image_tag`` when it is not configured (tests that must not depend on app/).
    """
    project_file = root / "Pulumi.yaml"
    if not project_file.exists():
        raise UsageError(f"--root {root}: no Pulumi.yaml, not a prodstack checkout")
    stack_file = root / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        known = ", ".join(stack_names(root)) or "none"
        raise UsageError(f"--stack {stack}: unknown stack, no {stack_file.name} (stacks: {known})")
    project = _yaml(project_file)
    config: dict[str, str] = {}
    schema = project.get("config") or {}
    for key, spec in schema.items():
        if isinstance(spec, dict) and "default" in spec:
            config[f"{PROJECT}:{key}"] = _text(spec["default"])
    labels: dict[str, str] = {}
    # Keys declared `secret: true`: their values only ever arrive encrypted.
    secret_keys = {f"{PROJECT}:{key}" for key, spec in schema.items()
                   if isinstance(spec, dict) and spec.get("secret")}  # fmt: skip
    stack_values = _yaml(stack_file).get("config") or {}
    if not isinstance(stack_values, dict):
        raise UsageError(f"{stack_file.name}: `config` must be a mapping")
    for key, value in stack_values.items():
        if key in secret_keys and not (isinstance(value, dict) and "secure" in value) and value:
            raise UsageError(
                f"{stack_file.name}: {key} is a secret stored in plain text; remove it and "
                f"run `pulumi config set --secret {key.split(':', 1)[1]}`"
            )
        if isinstance(value, dict) and "secure" in value:
            version = planfile.secret_version(str(value["secure"]))
            stand_in = f"plan-secret-{key.replace(':', '-')}-{version}-0123456789abcdef"
            config[key] = stand_in
            labels[stand_in] = f"{key}@{version}"
        elif isinstance(value, (dict, list)):
            # Structured config: the program reads it with get_object.
            config[key] = json.dumps(value, sort_keys=True)
        else:
            config[key] = _text(value)
    if image_tag and not config.get(f"{PROJECT}:image_tag"):
        config[f"{PROJECT}:image_tag"] = image_tag
    for key, value in (secrets or {}).items():
        config[key] = value
        labels[value] = ""  # injected by tests: plain "[secret]"
    for key, value in overrides.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if full.startswith(f"{PROJECT}:") and full.split(":", 1)[1] not in schema:
            raise UsageError(
                f"--config {key}: unknown key (Pulumi.yaml declares: {', '.join(sorted(schema))})"
            )
        if full in secret_keys:
            raise UsageError(
                f"--config {key}: a secret never goes on a command line; set it in the stack "
                f"with `pulumi config set --secret {full.split(':', 1)[1]}`"
            )
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value
    return config, labels


def _overrides_text(overrides: dict[str, str | None]) -> list[str]:
    """`--config` overrides as an error names them: on one line, whatever they hold."""

    def shown(text: str) -> str:
        return text.encode("unicode_escape").decode("ascii")

    return sorted(f"{shown(k)}={shown(v)}" if v is not None else f"-{shown(k)}"
                  for k, v in overrides.items())  # fmt: skip


def _config_error(stack: str, overrides: list[str], problems: list[str]) -> UsageError:
    where = f"Pulumi.{stack}.yaml"
    if overrides:
        where += " with --config " + ", ".join(overrides)
    # The program may report one key twice (type, then range): say each once.
    return UsageError(f"{where}: invalid configuration: " + "; ".join(dict.fromkeys(problems)))


def check_shared_keys(stack: str, config: dict[str, str], overrides: dict[str, str | None]) -> None:
    """The keys both profiles share, checked by their one model (``prodstack.profile``)
    before the program runs: the same refusal the program would print, in a fraction of
    a second instead of after the provider SDKs are imported."""
    from prodstack import profile

    raw = {key.split(":", 1)[1]: value for key, value in config.items()
           if key.startswith(f"{PROJECT}:")}  # fmt: skip
    problems = profile.check(raw, "cloud").problems
    if problems:
        raise _config_error(stack, _overrides_text(overrides),
                            [f"{PROJECT}:{problem}" for problem in problems])


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fake_hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def short(urn: str) -> str:
    """``urn:pulumi:stack::project::a$b$type::name`` -> ``type::name``."""
    if not urn:
        return ""
    head, name = urn.rsplit("::", 1)
    return f"{head.rsplit('::', 1)[-1].rsplit('$', 1)[-1]}::{name}"


def record(
    stack: str,
    overrides: dict[str, str | None] | None = None,
    *,
    root: Path = REPO,
    secrets: dict[str, str] | None = None,
    image_tag: str | None = None,
) -> dict[str, Any]:
    """Run the program of checkout ``root`` for ``stack`` under mocks; return the manifest."""
    root = root.resolve()
    # The stack file and the overrides first: a refusal comes before seconds of SDK imports.
    # (The shared keys are left to the program here, which reports every problem at once;
    # the CLI checks them first, `check_shared_keys`.)
    config, labels = stack_config(root, stack, overrides or {}, secrets=secrets,
                                  image_tag=image_tag)  # fmt: skip
    import pulumi
    from pulumi.runtime import mocks as pmocks
    from pulumi.runtime import rpc

    region = config.get("aws:region", "us-east-1")
    resources: list[dict[str, Any]] = []
    options: dict[str, dict[str, Any]] = {}  # resource options and dependencies, by urn
    invokes: list[dict[str, Any]] = []
    # Strings the mock provider made up, by value: what they stand for after apply.
    computed: dict[str, str] = {}
    labels["test-ecr-password"] = ""  # the registry login an invoke returns

    def mask(value: str) -> str:
        label = labels.get(value)
        if label is not None or value in generated:
            return planfile.secret_marker(label)
        for secret, secret_label in labels.items():
            value = value.replace(secret, planfile.secret_marker(secret_label))
        # A snapshot: the mock monitor registers resources on several threads, and one may
        # add a password while another masks ("Set changed size during iteration").
        for secret in tuple(generated):
            value = value.replace(secret, planfile.SECRET)
        return value

    generated: set[str] = set()  # random passwords: secret, with no config key behind them

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
                inner = value.get("value")
                # A secret nested in a list/dict taints the whole property; keep its
                # shape (secret leaves are masked below) so policies can read it.
                if isinstance(inner, (dict, list)):
                    return clean(inner)
                if isinstance(inner, str):
                    masked = mask(inner)
                    return masked if masked != inner else planfile.SECRET
                return planfile.SECRET
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            # Plans and manifests must not depend on where the checkout is.
            return mask(value).replace(str(root), "<repo>")
        return value

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
                options[f"{request.type}::{request.name}"] = {
                    "dependencies": sorted({short(u) for u in request.dependencies}),
                    "protect": bool(request.protect),
                    "delete_before_replace": bool(request.deleteBeforeReplace),
                    "retain_on_delete": bool(request.retainOnDelete),
                    "ignore_changes": sorted(request.ignoreChanges),
                    "replace_on_changes": sorted(request.replaceOnChanges),
                }
                # Ids this resource was deployed under before (the `aliases` option): the
                # same resource to Pulumi, not a deletion and a creation.
                former = sorted(
                    f"{alias.spec.type or request.type}::{alias.spec.name or request.name}"
                    if alias.HasField("spec") else short(alias.urn)
                    for alias in request.aliases
                )  # fmt: skip
                if former:
                    options[f"{request.type}::{request.name}"]["aliases"] = former
            return response

    def trace(value: Any, source: str, inputs_seen: set[str]) -> None:
        """Remember mock-made strings, so the plan can mark them unknown until apply."""
        if isinstance(value, str):
            if len(value) >= MIN_TRACED_LENGTH and value not in inputs_seen:
                computed.setdefault(value, source)
        elif isinstance(value, dict):
            for key, inner in value.items():
                trace(inner, f"{source}.{key}", inputs_seen)
        elif isinstance(value, list):
            for number, inner in enumerate(value):
                trace(inner, f"{source}[{number}]", inputs_seen)

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            inputs = dict(args.inputs)
            state = dict(inputs)
            name, typ = args.name, args.typ
            # Provider prefix outside AWS: a Secret and a RandomPassword may share a name.
            rid = f"{name}-id" if typ.startswith("aws:") else f"{name}-{typ.split(':')[0]}-id"
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
                          "resourceId": "db-" + _fake_hash(ident)[:26].upper(),
                          "port": 5432, "masterUserSecrets": [
                              {"secretArn": secret, "secretStatus": "active", "kmsKeyId": ""}]}
            elif typ == "aws:rds/proxy:Proxy":
                proxy_id = f"prx-{_fake_hash(name)[:17]}"
                state |= {"arn": f"arn:aws:rds:{region}:{ACCOUNT}:db-proxy:{proxy_id}",
                          "endpoint": f"{name}.proxy-c9akciq32.{region}.rds.amazonaws.com"}
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
                generated.add(state["result"])
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
            elif typ == "aws:amp/workspace:Workspace":
                ws = "ws-" + _fake_hash(name)[:8] + "-" + _fake_hash(name)[8:12]
                rid = ws
                state |= {"arn": f"arn:aws:aps:{region}:{ACCOUNT}:workspace/{ws}",
                          "prometheusEndpoint":
                              f"https://aps-workspaces.{region}.amazonaws.com/workspaces/{ws}/"}
            elif typ == "aws:ssm/parameter:Parameter":
                state["arn"] = f"arn:aws:ssm:{region}:{ACCOUNT}:parameter{inputs.get('name')}"
            seen = set(planfile.strings(inputs))
            urn = f"{typ}::{name}"
            trace(rid, f"{urn}.id", seen)
            for key, value in state.items():
                # Auto-names are known at preview (the provider's check makes them).
                if key not in inputs and key != "name" and key != "result":
                    trace(value, f"{urn}.{key}", seen)
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
                warnings.append(clean(record.getMessage()))

    logger = logging.getLogger("prodstack-plan")
    logger.addHandler(Collect())
    logger.propagate = False

    pulumi.runtime.set_mocks(
        Mocks(), project=PROJECT, stack=stack, preview=False,
        logger=logger, monitor=Recorder(Mocks()),
    )
    pulumi.runtime.set_all_config(config, sorted(k for k, v in config.items() if v in labels))

    outputs: dict[str, Any] = {}
    exit_code = 0
    stderr = io.StringIO()

    def program():
        runpy.run_path(str(root / "stacks" / "__main__.py"), run_name="__main__")
        exports = pulumi.runtime.get_root_resource().outputs
        return pulumi.Output.all(**exports).apply(outputs.update)

    try:
        with redirect_stderr(stderr):
            pmocks.test(program)()
    except SystemExit as exc:
        exit_code = int(exc.code or 0)
    except Exception as error:  # the program itself is broken: say where, in one line
        raise UsageError(_program_failure(error, root, mask)) from None
    release = {}
    if exit_code == 0 and config.get(f"{PROJECT}:image"):
        release["checkout_version"] = _checkout_version(config)
    settings = {
        key: (planfile.secret_marker(labels[value]) if value in labels else value)
        for key, value in sorted(config.items())
    }
    return {
        "stack": stack,
        "exit_code": exit_code,
        "stderr": clean(stderr.getvalue()),
        "warnings": warnings,
        "outputs": clean(outputs),
        "invokes": invokes,
        "resources": resources,
        "resource_options": options,
        "overrides": _overrides_text(overrides or {}),
        "settings": settings,
        "computed": dict(sorted(computed.items())),
        "release": release,
    }


def _checkout_version(config: dict[str, str]) -> str | None:
    """The version the checkout's own app/ builds into with this config, for a stack that
    deploys a pinned ``image`` instead: a pinned build of other code is a rollback (or
    an older release) to the diff. The program's own registry module computes it, so a
    checkout of another commit answers with that commit's recipe."""
    registry = sys.modules.get("components.registry")
    program = sys.modules.get("stacks.program")
    if registry is None or program is None or not hasattr(registry, "build_spec"):
        return None
    context = Path(program.APP_DIR)
    stack_config_module = sys.modules.get("stacks.config")
    if hasattr(stack_config_module, "app_context"):
        context = stack_config_module.app_context(config.get(f"{PROJECT}:app_context", ""))
    if not (context / "Dockerfile").is_file():
        return None  # no app of its own to compare with
    try:
        spec = registry.build_spec(
            context, base_image=config.get(f"{PROJECT}:base_image", ""),
            platform=config.get(f"{PROJECT}:image_platform", ""),
        )
    except RuntimeError:
        return None
    return spec.tag


def _program_failure(error: BaseException, root: Path, mask: Any) -> str:
    """``stacks/program.py:42: RuntimeError: ...``: the innermost frame in the checkout."""
    import traceback

    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if f.filename.startswith(str(root)) and "/.venv/" not in f.filename]  # fmt: skip
    where = ""
    if frames:
        where = f"{Path(frames[-1].filename).relative_to(root)}:{frames[-1].lineno}: "
    message = mask(str(error).splitlines()[0] if str(error) else "")
    return f"the Pulumi program failed: {where}{type(error).__name__}: {message}".rstrip(": ")


def _component(resource: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> str:
    """The top-level component a resource belongs to: ``prodstack:network:Network`` ->
    ``network``; resources registered by the program itself -> ``stack``."""
    top = resource
    while top["parent"] and top["parent"] in by_id:
        top = by_id[top["parent"]]
    if top["custom"]:
        return "stack"
    parts = top["type"].split(":")
    return parts[1] if len(parts) == 3 else top["type"]


def to_plan(manifest: dict[str, Any]) -> dict[str, Any]:
    """The plan-file form of a manifest: mock-made outputs become "known after apply"."""
    if manifest["exit_code"] != 0:
        problems = [
            line.strip() for line in manifest["stderr"].splitlines()
            if line.strip() and not line.startswith("prodstack: invalid configuration")
        ]
        raise _config_error(manifest["stack"], manifest.get("overrides") or [], problems)
    # Longest first, so a value that contains another is replaced whole.
    computed = sorted(manifest["computed"].items(), key=lambda item: (-len(item[0]), item[0]))

    def mark(value: str) -> str:
        for text, source in computed:
            if text in value:
                value = value.replace(text, planfile.unknown_marker(source))
        return value

    def unknowns(value: Any) -> Any:
        return planfile.map_strings(value, mark)

    by_id = {r["urn"]: r for r in manifest["resources"]}
    plan = planfile.new_plan("cloud", manifest["stack"])
    plan["settings"] = manifest["settings"]
    plan["outputs"] = unknowns(manifest["outputs"])
    plan["warnings"] = sorted(set(manifest["warnings"]))
    if manifest.get("release"):
        plan["release"] = manifest["release"]
    for resource in manifest["resources"]:
        options = dict(manifest["resource_options"][resource["urn"]])
        dependencies = options.pop("dependencies")
        plan["resources"].append(
            {
                "id": resource["urn"],
                "type": resource["type"],
                "name": resource["name"],
                "component": _component(resource, by_id),
                "parent": resource["parent"] or None,
                "dependencies": dependencies,
                "property_dependencies": resource["property_dependencies"],
                "inputs": unknowns(resource["inputs"]),
                "options": {"custom": resource["custom"], **options},
            }
        )
    return plan


def with_policy(plan: dict[str, Any]) -> dict[str, Any]:
    """Add the violations of the checkout's own policy pack (``policies/``) to a plan.

    The program put its checkout first on ``sys.path``, so this is the pack of the same
    commit as the program.
    """
    from prodstack.policy_check import run_all

    advisories: list[str] = []
    plan["policy"] = {"pack": "policies",
                      "violations": sorted(run_all(plan, advisories=advisories))}
    if advisories:  # policies an unknown value stopped, as at `pulumi preview`
        plan["policy"]["advisories"] = sorted(advisories)
    return plan


def plan_cloud(
    stack: str, overrides: dict[str, str | None] | None = None, *, root: Path = REPO
) -> dict[str, Any]:
    """The plan of ``stack`` in checkout ``root`` (in this process; see module docstring)."""
    return with_policy(to_plan(record(stack, overrides, root=root)))
