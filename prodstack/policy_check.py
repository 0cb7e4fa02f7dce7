"""Run the CrossGuard policy pack (`policies/rules.py`) over recorded resources, without
the Pulumi engine: each rule's `validate` is called directly, as the engine would, on
properties wrapped in the engine's own read-only proxies (lists arrive as sequences that
are not `list`, dicts as mappings that are not `dict`)."""

from __future__ import annotations

from typing import Any


def check_resource(policy: Any, type_: str, props: dict) -> list[str]:
    """Violations a resource policy reports for one resource."""
    from pulumi_policy import ResourceValidationArgs
    from pulumi_policy.proxy import unknown_checking_proxy

    violations: list[str] = []
    args = ResourceValidationArgs(type_, unknown_checking_proxy(props), f"urn:{type_}::x", "x",
                                  None, None)  # fmt: skip
    policy.validate(args, lambda message, urn=None: violations.append(message))
    return violations


def _urn(resource: dict[str, Any]) -> str:
    """Manifests name a resource ``urn``; plans ``id`` (the same ``type::name``)."""
    return resource.get("urn") or resource["id"]


def policy_resources(items: list[dict[str, Any]]) -> list[Any]:
    """Manifest or plan resources (``urn`` or ``id``, ``type``, ``name``, ``inputs``,
    ``property_dependencies``) -> PolicyResources with their property dependencies linked."""
    from pulumi_policy import PolicyResource
    from pulumi_policy.proxy import unknown_checking_proxy

    made = {
        _urn(r): PolicyResource(r["type"], unknown_checking_proxy(r["inputs"]), _urn(r),
                                r["name"], None, None, None, [], {})
        for r in items
    }
    for r in items:
        made[_urn(r)].property_dependencies = {
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


def run_policy(policy: Any, items: list[dict[str, Any]]) -> list[str]:
    """One policy over manifest-shaped resources, each violation prefixed by its name."""
    from pulumi_policy import StackValidationPolicy

    if isinstance(policy, StackValidationPolicy):
        return [f"{policy.name}: {v}" for v in check_stack(policy, items)]
    return [f"{policy.name} {r['name']}: {v}"
            for r in items for v in check_resource(policy, r["type"], r["inputs"])]


def run_all(manifest: Any, rules: Any = None) -> list[str]:
    """Every policy in the pack over a manifest (or anything with ``.resources``)."""
    if rules is None:
        from policies import rules
    items = manifest.resources if hasattr(manifest, "resources") else manifest["resources"]
    return [v for policy in rules.ALL_POLICIES for v in run_policy(policy, items)]
