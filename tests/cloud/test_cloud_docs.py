"""Meta-tests: every component documents its Args fields, outputs and class sections."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import components
from components._common import LOG_RETENTION_DAYS
from components.registry import context_hash, lifecycle_policy
from prodstack.sizes import CloudSize as Size

# Every component module, found rather than listed: a new block is checked from day one.
MODULES = tuple(sorted(
    info.name for info in pkgutil.iter_modules(components.__path__)
    if not info.name.startswith("_")
))  # fmt: skip
SECTIONS = ("Creates:", "Example:", "Cost:", "Secure defaults:", "Opt-outs:")


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name -> docstring`` for annotated class attributes followed by a string literal."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:] + [None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                doc = following.value.value
            docs[node.target.id] = doc
    return docs


def _component(module_name: str) -> tuple[type, type]:
    module = importlib.import_module(f"components.{module_name}")
    args = [c for n, c in vars(module).items()
            if n.endswith("Args") and dataclasses.is_dataclass(c)
            and c.__module__ == module.__name__]
    classes = [c for c in vars(module).values()
               if inspect.isclass(c) and c.__module__ == module.__name__
               and issubclass(c, importlib.import_module("pulumi").ComponentResource)]
    assert len(args) == 1 and len(classes) == 1, module_name
    return args[0], classes[0]


@pytest.mark.parametrize("module_name", MODULES)
def test_args_are_frozen_and_every_field_documented(module_name: str) -> None:
    args, _ = _component(module_name)
    assert args.__dataclass_params__.frozen
    docs = _attribute_docs(args)
    for f in dataclasses.fields(args):
        doc = docs.get(f.name, "")
        assert doc, f"{args.__name__}.{f.name} has no docstring"
        assert "Default:" in doc or "Required" in doc, f"{args.__name__}.{f.name}: no Default:"
        assert "Example:" in doc, f"{args.__name__}.{f.name}: no example"


@pytest.mark.parametrize("module_name", MODULES)
def test_component_class_doc_sections_outputs_and_token(module_name: str) -> None:
    _, cls = _component(module_name)
    doc = inspect.getdoc(cls) or ""
    for section in SECTIONS:
        assert section in doc, f"{cls.__name__}: missing {section}"
    assert "**" in doc.split("Cost:", 1)[1].split("Secure defaults:")[0], "bold monthly figure"
    outputs = _attribute_docs(cls)
    assert outputs, f"{cls.__name__} declares no typed outputs"
    assert all(outputs.values()), f"{cls.__name__}: undocumented outputs"
    source = inspect.getsource(cls)
    assert f'"prodstack:{module_name}:{cls.__name__}"' in source
    assert "register_outputs(" in source
    # Every Output is registered; a plain attribute (Metrics.collector, the container's
    # inputs for ServiceArgs) is a handle for the program's wiring, documented but no output.
    annotations = inspect.get_annotations(cls)
    for name in outputs:
        if "Output[" in str(annotations.get(name, "")):
            assert f'"{name}"' in source.split("register_outputs(", 1)[1], f"{name} not registered"


def test_size_fields_documented() -> None:
    docs = _attribute_docs(Size)
    assert all(docs.get(f.name) for f in dataclasses.fields(Size))


def test_args_reject_invalid_values_aws_would_reject() -> None:
    from components.cache import CacheArgs
    from components.cdn import CdnArgs
    from components.database import DatabaseArgs
    from components.service import ServiceArgs
    from components.waf import WebAclArgs

    base = {"subnet_ids": ["a", "b"], "security_group_id": "sg"}
    cases = [
        (DatabaseArgs, dict(base, identifier="db", engine_version="16.6")),
        (DatabaseArgs, dict(base, identifier="db", instance_class="db.t2.micro")),
        (DatabaseArgs, dict(base, identifier="db", performance_insights_retention_days=94)),
        (DatabaseArgs, dict(base, identifier="db", storage_gb=100, max_storage_gb=105)),
        (CacheArgs, dict(base, replication_group_id="c", engine_version="7.2.6")),
        (CacheArgs, dict(base, replication_group_id="c", node_type="cache.t1.micro")),
        (CdnArgs, dict(origin_domain="o", minimum_protocol_version="TLSv1")),
        (CdnArgs, dict(origin_domain="o", aliases=("a.example.com",),
                       certificate_arn="arn:aws:acm:eu-west-1:1:certificate/x")),
        (WebAclArgs, dict(rate_limit=50)),
        (WebAclArgs, dict(evaluation_window_seconds=90)),
        (ServiceArgs, dict(family="f", image="i", subnet_ids=[], security_group_id="s",
                           target_group_arn="t", listener_arn="l",
                           load_balancer_arn_suffix="a", target_group_arn_suffixes=["r"],
                           cpu="256", memory="4096")),
        (ServiceArgs, dict(family="f", image="i", subnet_ids=[], security_group_id="s",
                           target_group_arn="t", listener_arn="l",
                           load_balancer_arn_suffix="a", target_group_arn_suffixes=["r"],
                           environment={"DB_PASSWORD": "x"})),
        (ServiceArgs, dict(family="f", image="i", subnet_ids=[], security_group_id="s",
                           target_group_arn="t", listener_arn="l",
                           load_balancer_arn_suffix="a", target_group_arn_suffixes=["r"],
                           user="0")),
    ]
    for cls, kwargs in cases:
        with pytest.raises(ValueError, match=cls.__name__):
            cls(**kwargs)


def test_context_hash_is_stable_and_content_sensitive(tmp_path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / ".dockerignore").write_text("**/__pycache__\n")
    first = context_hash(tmp_path)
    assert first == context_hash(tmp_path) and first.startswith("src-")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"junk")
    assert context_hash(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 2\n")
    assert context_hash(tmp_path) != first


def test_context_hash_ignores_what_docker_never_sees(tmp_path) -> None:
    """Plans must not depend on what .dockerignore keeps out of the build context."""
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / ".dockerignore").write_text(".pytest_cache\n**/*.log\n!keep.log\n")
    first = context_hash(tmp_path)
    for junk in (".pytest_cache/README.md", "deep/run.log"):
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / junk).write_text("cache")
    assert context_hash(tmp_path) == first
    (tmp_path / "keep.log").write_text("re-included by !keep.log")
    assert context_hash(tmp_path) != first


def test_lifecycle_policy_and_log_retention_values() -> None:
    text = lifecycle_policy(30)
    assert 100 <= len(text) <= 30_720  # ECR lifecycle policy text limits
    assert 30 in LOG_RETENTION_DAYS and 42 not in LOG_RETENTION_DAYS


def test_cloud_doc_lists_every_key_and_deploy_step() -> None:
    from stacks.config import KEYS

    repo = __import__("pathlib").Path(__file__).resolve().parents[2]
    text = (repo / "docs" / "cloud.md").read_text()
    for key in KEYS:
        assert f"| `{key}` |" in text, key
    for step in ("pulumi login", "pulumi stack select prod", "pulumi config set --secret",
                 "pulumi preview", "pulumi up"):
        assert step in text
