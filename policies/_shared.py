"""What every policy module shares: the two registration decorators, the registry the
pack is discovered from (`policies.all_policies`), reading a value the engine may not know
yet, and small readers of the engine's property proxies.

Properties arrive as the engine sees them (camelCase input names), wrapped in
``pulumi_policy.proxy``'s read-only proxies: reading a value that is unknown at preview
raises ``UnknownValueError``, which the engine turns into an advisory "can't run policy
during preview" for that policy. A rule that must judge the rest of a resource reads such a
value with :func:`lookup` instead, and tests it with :func:`is_unknown`. The environment
comes from the ``prodstack:environment`` tag the components put on every taggable resource.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

from components._common import ENVIRONMENT_TAG, RESTORE_SOURCE_TAG

MANDATORY = EnforcementLevel.MANDATORY
Policy = ResourceValidationPolicy | StackValidationPolicy
ResourceCheck = Callable[[str, Mapping[str, Any]], Iterable[str]]
StackCheck = Callable[[StackValidationArgs, ReportViolation], None]

# The policies each module registered, by module name, in the order they were defined.
REGISTERED: dict[str, list[Policy]] = {}
# The engine's sentinels for values known only after apply (pulumi_policy.proxy).
UNKNOWNS = (UNKNOWN_STRING_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_BOOLEAN_VALUE,
            UNKNOWN_ARRAY_VALUE, UNKNOWN_OBJECT_VALUE)


def _register(module: str, policy: Policy) -> Policy:
    REGISTERED.setdefault(module, []).append(policy)
    return policy


def resource_policy(
    name: str, description: str, *, types: str | tuple[str, ...]
) -> Callable[[ResourceCheck], ResourceValidationPolicy]:
    """A mandatory resource policy running the decorated ``check(type, props)`` (a
    generator of violation messages) on resources of ``types``; the decorated name binds
    the policy."""
    wanted = (types,) if isinstance(types, str) else types

    def register(check: ResourceCheck) -> ResourceValidationPolicy:
        def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
            if args.resource_type not in wanted:
                return
            for message in check(args.resource_type, args.props):
                report(message, None)

        policy = ResourceValidationPolicy(name=name, description=description,
                                          validate=validate, enforcement_level=MANDATORY)
        _register(check.__module__, policy)
        return policy

    return register


def stack_policy(name: str, description: str) -> Callable[[StackCheck], StackValidationPolicy]:
    """A mandatory stack policy running the decorated ``validate(args, report)``; the
    decorated name binds the policy."""

    def register(validate: StackCheck) -> StackValidationPolicy:
        policy = StackValidationPolicy(name=name, description=description, validate=validate,
                                       enforcement_level=MANDATORY)
        _register(validate.__module__, policy)
        return policy

    return register


def is_unknown(value: Any) -> bool:
    """Whether ``value`` is one of the engine's unknown sentinels (known only after apply)."""
    return isinstance(value, str) and value in UNKNOWNS


def lookup(container: Any, key: Any, default: Any = None) -> Any:
    """``container[key]`` (``default`` when absent), or the engine's sentinel when the
    value is unknown at preview: the engine's proxy raises on an unknown value, which stops
    the whole policy; a rule reads with this where it must go on judging the rest."""
    try:
        if isinstance(container, Mapping):
            return container.get(key, default)
        return container[key]
    except UnknownValueError as error:
        return error.unknown_type_sentinel


def tags_of(props: Mapping[str, Any]) -> Mapping[str, Any]:
    tags = props.get("tags")
    return tags if isinstance(tags, Mapping) else {}


def as_map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else ``{}`` (an unknown object)."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` as a list if it is a sequence, else ``[]`` (an unknown list).

    The engine hands rules its own read-only proxies (``pulumi_policy.proxy``): a list
    arrives as a ``Sequence`` that is not a ``list``, a dict as a ``Mapping``.
    """
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        # By index: an unknown item stays in the list, as its sentinel, and the rest can
        # still be judged (iterating the proxy would stop at it).
        return [lookup(value, i) for i in range(len(value))]
    return []


def is_prod(props: Mapping[str, Any]) -> bool:
    """Whether a resource is tagged as part of a prod environment."""
    return tags_of(props).get(ENVIRONMENT_TAG) == "prod"


def linked(resource: Any, key: str) -> set[str]:
    """URNs ``resource`` takes input ``key`` from (its property dependencies)."""
    return {dep.urn for dep in (resource.property_dependencies or {}).get(key, [])}


def of_type(args: StackValidationArgs, suffix: str) -> list[Any]:
    return [r for r in args.resources if r.resource_type.endswith(suffix)]


def parse_json(value: Any) -> Any:
    """A policy document: parsed if it is JSON text, as is if already parsed, else None."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, Mapping) else None


def strings(value: Any) -> list[str]:
    """An IAM field that may be one string or a list of them, as a list."""
    if isinstance(value, str):
        return [value]
    return [v for v in as_list(value) if isinstance(v, str)]


def task_containers(props: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    raw = props.get("containerDefinitions")
    try:
        return [as_map(c) for c in (json.loads(raw) if isinstance(raw, str) else as_list(raw))]
    except ValueError:
        return None


def live_databases(args: StackValidationArgs) -> list[Any]:
    """RDS instances the stack serves from: not an original a restore replaced (tagged
    ``prodstack:restore-source``, kept until released)."""
    return [db for db in of_type(args, "rds/instance:Instance")
            if RESTORE_SOURCE_TAG not in tags_of(db.props)]

