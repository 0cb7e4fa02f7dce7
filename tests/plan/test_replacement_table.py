"""Invariants of prodstack/data/replacement.toml, the force-new and risk table of `prodstack diff`.

Every type and property named there must exist in the installed Pulumi SDKs, every type the cloud
programs register must be covered, the resources the diff must warn about must be stateful, and a
property the SDK's own docstring says forces a new resource must be listed as force-new (or carry
a written reason why not).
"""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from functools import cache
from typing import Any

import pytest

from prodstack.cloud_plan import REPO, stack_names
from tests.cloud.prodstack_cloud_harness import run_harness

TABLE_PATH = REPO / "prodstack" / "data" / "replacement.toml"
PACKAGES = {"aws": "pulumi_aws", "random": "pulumi_random", "docker": "pulumi_docker"}
TYPE_KEYS = {"label", "stateful", "force_new", "source", "disruptive", "not_force_new_reason",
             "update_outputs", "no_outage", "replace_on_kind_change"}

# Replacing or deleting these loses data or must migrate it, so the table marks them stateful.
MUST_BE_STATEFUL = [
    "aws:rds/instance:Instance",
    "aws:rds/subnetGroup:SubnetGroup",
    "aws:rds/parameterGroup:ParameterGroup",
    "aws:elasticache/replicationGroup:ReplicationGroup",
    "aws:elasticache/subnetGroup:SubnetGroup",
    "aws:elasticache/parameterGroup:ParameterGroup",
    "aws:s3/bucket:Bucket",
    "aws:ec2/vpc:Vpc",
    "aws:ec2/subnet:Subnet",
    "aws:cloudfront/distribution:Distribution",
    "aws:kms/key:Key",
    "aws:secretsmanager/secret:Secret",
]

# The docstrings' wording for a replacement ("Changing this forces a new resource to be created",
# "will trigger recreation of resource").
FORCES_NEW = re.compile(r"forces? (?:a )?new resource|recreation of (?:the )?resource", re.I)


@cache
def table() -> dict[str, dict[str, Any]]:
    with TABLE_PATH.open("rb") as f:
        return tomllib.load(f)["types"]


def resource_class(token: str) -> type:
    """The SDK class behind a type token such as ``aws:rds/instance:Instance``."""
    package, module, name = token.split(":")
    top = PACKAGES[package]
    path = top if module.startswith("index") else f"{top}.{module.split('/')[0]}"
    try:
        mod = importlib.import_module(path)
    except ModuleNotFoundError:
        mod = importlib.import_module(path + "_")  # pulumi_aws.lambda_ and the like
    cls = getattr(mod, name, None)
    assert inspect.isclass(cls), f"{token}: no class {name} in {mod.__name__}"
    # The class registers itself under exactly this token.
    registers = f"'{token}'" in inspect.getsource(cls)
    assert registers, f"{token}: {cls.__qualname__} registers another type"
    return cls


def args_class(token: str) -> type:
    """The resource's own ``*Args`` class (``*InitArgs`` where a nested type took the name)."""
    cls = resource_class(token)
    mod = importlib.import_module(cls.__module__)
    for suffix in ("InitArgs", "Args"):
        args = getattr(mod, cls.__name__ + suffix, None)
        if inspect.isclass(args) and args.__module__ == mod.__name__:
            return args
    raise AssertionError(f"{token}: no arguments class in {mod.__name__}")


@cache
def wire_inputs(token: str) -> dict[str, str]:
    """Input names as recorded in plans (camelCase) -> the SDK's snake_case argument name."""
    cls = resource_class(token)
    params = inspect.signature(cls._internal_init).parameters
    snake = [p for p in params if p not in ("__self__", "resource_name", "opts", "__props__")]
    args = args_class(token)
    out = {}
    for name in snake:
        prop = args.__dict__.get(name)
        assert isinstance(prop, property), f"{token}: {name} is not a property of {args.__name__}"
        out[getattr(prop.fget, "_pulumi_name", name)] = name
    return out


def docstring_force_new(token: str) -> dict[str, str]:
    """camelCase input -> its docstring, for inputs the SDK says force a new resource."""
    doc = args_class(token).__init__.__doc__ or ""
    by_snake = {s: w for w, s in wire_inputs(token).items()}
    found = {}
    for chunk in doc.split(":param ")[1:]:
        head, _, text = chunk.partition(": ")
        name = head.split()[-1]
        if name in by_snake and FORCES_NEW.search(text):
            found[by_snake[name]] = " ".join(text.split())
    return found


@pytest.fixture(scope="module")
def registered_types(tmp_path_factory) -> dict[str, set[str]]:
    """Custom resource types each stack registers, recorded by the product's recorder."""
    out = {}
    for stack in stack_names(REPO):
        manifest = run_harness(stack, tmp_path_factory.mktemp(stack) / "manifest.json")
        out[stack] = {r["type"] for r in manifest["resources"] if r.get("custom")}
    return out


def test_table_has_the_documented_shape():
    assert table(), "replacement.toml has no [types.*] entries"
    for token, entry in table().items():
        assert set(entry) <= TYPE_KEYS, f"{token}: unknown keys {sorted(set(entry) - TYPE_KEYS)}"
        assert isinstance(entry.get("label"), str) and entry["label"], f"{token}: label"
        assert isinstance(entry.get("stateful"), bool), f"{token}: stateful must be a boolean"
        assert isinstance(entry.get("source"), str) and entry["source"], f"{token}: source"
        force_new = entry.get("force_new")
        assert isinstance(force_new, list), f"{token}: force_new must be a list"
        assert len(set(force_new)) == len(force_new), f"{token}: force_new has duplicates"
        for key in ("disruptive", "not_force_new_reason"):
            notes = entry.get(key, {})
            assert isinstance(notes, dict), f"{token}: {key} must be a table"
            for prop, text in notes.items():
                if isinstance(text, dict) and key == "disruptive":
                    # Picked by another input: `by` names it, `default` covers the rest.
                    assert isinstance(text.get("by"), str) and text["by"], f"{token}.{prop}: by"
                    assert isinstance(text.get("default"), str), f"{token}.{prop}: default"
                    texts = [v for k, v in text.items() if k != "by"]
                else:
                    texts = [text]
                assert all(isinstance(v, str) and v for v in texts), f"{token}.{prop}: text"
        assert not set(force_new) & set(entry.get("disruptive", {})), (
            f"{token}: a property is either replaced or updated in place, not both"
        )


@pytest.mark.parametrize("token", sorted(table()))
def test_every_named_property_is_a_real_input(token):
    inputs = wire_inputs(token)
    entry = table()[token]
    for key in ("force_new", "disruptive", "not_force_new_reason", "replace_on_kind_change"):
        unknown = sorted(set(entry.get(key, [])) - set(inputs))
        cls = resource_class(token).__name__
        assert not unknown, f"{token}: {key} names no input of {cls}: {unknown}"


@pytest.mark.parametrize("token", sorted(t for t in table() if "update_outputs" in table()[t]))
def test_update_outputs_name_real_outputs_and_inputs(token):
    """`update_outputs` maps an output to the inputs whose in-place change makes it anew;
    a misspelt name on either side would silently hide a rollout from the diff."""
    cls, inputs = resource_class(token), wire_inputs(token)
    for output, by in table()[token]["update_outputs"].items():
        snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), output)
        assert isinstance(getattr(cls, snake, None), property), f"{token}: no output {output}"
        assert by and set(by) <= set(inputs), f"{token}.{output}: {sorted(set(by) - set(inputs))}"


def test_every_registered_type_is_in_the_table(registered_types):
    assert set(registered_types) >= {"prod", "dev"}, sorted(registered_types)
    for stack, types in registered_types.items():
        missing = sorted(types - set(table()))
        assert not missing, f"stack {stack} registers types not in replacement.toml: {missing}"


@pytest.mark.parametrize("token", MUST_BE_STATEFUL)
def test_resources_holding_data_are_stateful(token):
    assert token in table(), f"{token} missing from replacement.toml"
    assert table()[token]["stateful"] is True, f"{token} must be stateful = true"


@pytest.mark.parametrize("token", sorted(table()))
def test_docstring_force_new_inputs_are_listed(token):
    entry = table()[token]
    covered = set(entry["force_new"]) | set(entry.get("not_force_new_reason", {}))
    missed = {k: v for k, v in docstring_force_new(token).items() if k not in covered}
    assert not missed, f"{token}: the SDK docstring says these force a new resource: {missed}"


def test_the_service_rolls_when_its_task_definition_changes():
    # The one disruption every deploy of a new image goes through.
    notes = table()["aws:ecs/service:Service"].get("disruptive", {})
    assert "taskDefinition" in notes
    assert "taskDefinition" not in table()["aws:ecs/service:Service"]["force_new"]


def test_identity_properties_force_replacement():
    # The VPC CIDR replaces the VPC. The RDS identifier does not: since provider v5.0.0 a new
    # identifier renames the instance in place (CHANGELOG 5.0.0, #31232), so the diff must warn
    # about it as a disruption, not as a replacement; the instance's storage settings still replace.
    assert "cidrBlock" in table()["aws:ec2/vpc:Vpc"]["force_new"]
    rds = table()["aws:rds/instance:Instance"]
    assert "identifier" not in rds["force_new"] and "identifier" in rds["disruptive"]
    assert {"storageEncrypted", "kmsKeyId", "engine"} <= set(rds["force_new"])


# A source names the commit (hex) or tag it was read at, or says it was not read.
READ_AT = re.compile(r"read at (?:[0-9a-f]{12,40}|v\d+\.\d+\.\d+\b)")
UNREAD = "recalled, not read at a commit"


@pytest.mark.parametrize("token", sorted(table()))
def test_every_source_names_what_it_was_read_at(token):
    source = table()[token]["source"]
    if token.startswith("docker:"):
        return  # a native Pulumi resource: there is no provider schema to read
    assert READ_AT.search(source) or UNREAD in source, (
        f"{token}: source must say the commit or tag it was read at, or '{UNREAD}': {source}"
    )


def test_the_checks_catch_a_misspelt_property():
    # Guards the introspection itself: a wrong name or spelling must not pass as an input.
    inputs = wire_inputs("aws:rds/instance:Instance")
    assert "multiAz" in inputs and "dbSubnetGroupName" in inputs
    assert "multi_az" not in inputs and "multiAZ" not in inputs
    with pytest.raises(AssertionError):
        resource_class("aws:rds/instance:Nope")
    assert docstring_force_new("aws:elasticache/replicationGroup:ReplicationGroup").keys() >= {
        "snapshotName"
    }
