"""Run the CrossGuard policy pack (`policies/`) over recorded resources, without the Pulumi
engine: each rule's `validate` is called directly, as the engine would, on properties
wrapped in the engine's own read-only proxies (lists arrive as sequences that are not
`list`, dicts as mappings that are not `dict`).

A plan writes what it cannot show as markers (`prodstack.planfile`): "(known after apply:
SOURCE)" and a secret's "[secret...]". The rules never see them: a value that is a marker
becomes the engine's unknown sentinel, which the proxy refuses to hand out (the rule stops
with `UnknownValueError` unless it reads the value with `policies._shared.lookup`), and a
marker inside a longer string (an ARN with the account unknown, a JSON document naming
another resource's ARN) becomes the sentinel's text in place, so the rest of that string
is still judged. A rule stopped by an unknown value is reported as the engine reports it
at preview: an advisory that the policy could not run, not a violation.
"""

from __future__ import annotations

import re
from typing import Any

from prodstack import planfile

_MARKER_RE = re.compile(f"{planfile.UNKNOWN_RE.pattern}|{planfile.SECRET_RE.pattern}")


def engine_values(value: Any) -> Any:
    """``value`` with the plan's markers as the engine's unknowns (see the module doc)."""
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    def translate(text: str) -> str:
        if _MARKER_RE.fullmatch(text):
            return UNKNOWN_STRING_VALUE
        return _MARKER_RE.sub(UNKNOWN_STRING_VALUE, text)

    return planfile.map_strings(value, translate)


def _readable(message: str) -> str:
    """A violation naming an unknown value says so, rather than quoting the sentinel."""
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    return message.replace(UNKNOWN_STRING_VALUE, "(known after apply)")


def _validate(policy: Any, args: Any, report: Any, advisories: list[str] | None) -> None:
    """``policy.validate``; a rule stopped by an unknown value is an advisory, as the
    engine makes it at preview (pulumi_policy's analyzer, Analyze and AnalyzeStack)."""
    from pulumi_policy.proxy import UnknownValueError

    try:
        policy.validate(args, report)
    except UnknownValueError as error:
        if advisories is not None:
            advisories.append(f"can't run policy '{policy.name}' during preview: "
                              f"{error.message}")


def check_resource(policy: Any, type_: str, props: dict,
                   advisories: list[str] | None = None, *, translated: bool = False) -> list[str]:
    """Violations a resource policy reports for one resource (``translated``: its
    properties already went through `engine_values`)."""
    from pulumi_policy import ResourceValidationArgs
    from pulumi_policy.proxy import unknown_checking_proxy

    violations: list[str] = []
    props = props if translated else engine_values(props)
    args = ResourceValidationArgs(type_, unknown_checking_proxy(props), f"urn:{type_}::x", "x",
                                  None, None)  # fmt: skip
    _validate(policy, args, lambda message, urn=None: violations.append(_readable(message)),
              advisories)
    return violations


def _urn(resource: dict[str, Any]) -> str:
    """Manifests name a resource ``urn``; plans ``id`` (the same ``type::name``)."""
    return resource.get("urn") or resource["id"]


def _translated(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "inputs": engine_values(r["inputs"])} for r in items]


def policy_resources(items: list[dict[str, Any]], *, translated: bool = False) -> list[Any]:
    """Manifest or plan resources (``urn`` or ``id``, ``type``, ``name``, ``inputs``,
    ``property_dependencies``) -> PolicyResources with their property dependencies linked."""
    from pulumi_policy import PolicyResource
    from pulumi_policy.proxy import unknown_checking_proxy

    items = items if translated else _translated(items)
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


def check_stack(policy: Any, items: list[dict[str, Any]],
                advisories: list[str] | None = None, *, translated: bool = False) -> list[str]:
    """Violations a stack policy reports over manifest-shaped resources."""
    from pulumi_policy import StackValidationArgs

    violations: list[str] = []
    args = StackValidationArgs(policy_resources(items, translated=translated))
    _validate(policy, args,
              lambda message, urn=None: violations.append(f"{urn}: {_readable(message)}"),
              advisories)
    return violations


def run_policy(policy: Any, items: list[dict[str, Any]],
               advisories: list[str] | None = None, *, translated: bool = False) -> list[str]:
    """One policy over manifest-shaped resources, each violation prefixed by its name;
    ``advisories`` (when given) collects the policies an unknown value stopped."""
    from pulumi_policy import StackValidationPolicy

    items = items if translated else _translated(items)
    if isinstance(policy, StackValidationPolicy):
        return [f"{policy.name}: {v}"
                for v in check_stack(policy, items, advisories, translated=True)]
    found = []
    for r in items:
        stopped: list[str] = []
        found += [f"{policy.name} {r['name']}: {v}"
                  for v in check_resource(policy, r["type"], r["inputs"], stopped,
                                          translated=True)]
        if advisories is not None:
            advisories += [f"{r['name']}: {a}" for a in stopped]
    return found


def run_all(manifest: Any, policies: list[Any] | None = None,
            advisories: list[str] | None = None) -> list[str]:
    """Every policy in the pack (or ``policies``) over a manifest or plan (or anything
    with ``.resources``): the violations; ``advisories`` collects the policies an unknown
    value stopped."""
    if policies is None:
        from policies import all_policies

        policies = all_policies()
    items = manifest.resources if hasattr(manifest, "resources") else manifest["resources"]
    items = _translated(items)
    return [v for policy in policies
            for v in run_policy(policy, items, advisories, translated=True)]
