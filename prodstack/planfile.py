"""The plan file: one JSON format for both profiles, written byte-for-byte the same way
on every machine, so two plans can be compared with `prodstack diff`.

A plan is a dict:

    {
      "format": "prodstack.plan", "version": 1,
      "profile": "cloud" | "vps",
      "stack": "prod" | "dev" | ... (cloud) or "vps",
      "settings": {key: value},      # effective config (cloud) or data (vps), redacted
      "resources": [Resource, ...],  # sorted by id
      "operations": [Operation, ...],# vps: pyinfra operations in execution order; cloud: []
      "outputs": {name: value},      # cloud stack outputs
      "warnings": [str, ...],
      "stack_file_removed": "Pulumi.dev.yaml",  # only on the empty head of a diff of refs
    }

    Resource = {
      "id": "aws:rds/instance:Instance::prodstack-db-instance" | "file:/etc/redis/redis.conf",
      "type": "aws:rds/instance:Instance" | "vps:file" | "vps:package" | ...,
      "name": logical name (cloud) or path/package/user name (vps),
      "component": group shown in a diff ("network", "database", ... or a VPS task),
      "parent": id of the parent component, or null,
      "dependencies": [ids],
      "inputs": {property: value},
      "options": {...},              # cloud: custom, protect, delete_before_replace
    }

Values that are secret never appear: they are replaced by a marker (see `secret_marker`).
Values only known after apply are replaced by `unknown_marker(...)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT = "prodstack.plan"
VERSION = 1
PROFILES = ("cloud", "vps")

SECRET = "[secret]"
SECRET_RE = re.compile(r"\[secret(?::[^\]]*)?\]")
UNKNOWN_RE = re.compile(r"\(known after apply: [^)]*\)")


class PlanFileError(Exception):
    """A plan file that cannot be used; the message names the file and what is wrong."""


def secret_marker(label: str | None = None) -> str:
    """`[secret]`, or `[secret:LABEL]` where LABEL says which secret (never its value).

    A label may carry a version that changes when the secret changes without revealing it,
    e.g. the short digest of a config value's *ciphertext*.
    """
    return f"[secret:{label}]" if label else SECRET


def secret_version(source: str) -> str:
    """The VERSION of `[secret:KEY@VERSION]`: 8 hex digits that change when the secret
    does. `source` is never the secret itself: the cloud gives a `secure:` value's
    ciphertext, the VPS planner `value_version`'s slow salted derivation."""
    return hashlib.sha256(source.encode()).hexdigest()[:8]


# PBKDF2 rounds of `value_version`: about 0.05 s per secret here, so that trying a list of
# guessed passwords against a published version is slow as well as 32 bits short.
VALUE_VERSION_ROUNDS = 100_000


def value_version(name: str, value: str) -> str:
    """The version of a secret known in plain text (a VPS secrets file): `secret_version`
    of a PBKDF2-SHA256 derivation salted with the secret's name."""
    salt = f"prodstack plan secret {name}".encode()
    derived = hashlib.pbkdf2_hmac("sha256", value.encode(), salt, VALUE_VERSION_ROUNDS)
    return secret_version(derived.hex())


def unknown_marker(source: str) -> str:
    """An output that only exists after apply, e.g. `prodstack-db-instance.address`."""
    return f"(known after apply: {source})"


def strings(value: Any) -> list[str]:
    """Every string inside a JSON-like value (dict values and list items, recursively)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for inner in value.values() for s in strings(inner)]
    if isinstance(value, list | tuple):
        return [s for inner in value for s in strings(inner)]
    return []


def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """A copy of a JSON-like value with ``change`` applied to every string in it."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {k: map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_strings(v, change) for v in value]
    return value


def has_secret(value: Any) -> bool:
    """Whether a value (or anything inside it) carries a secret marker."""
    return any(SECRET_RE.search(s) for s in strings(value))


def has_unknown(value: Any) -> bool:
    """Whether a value (or anything inside it) is known only after apply."""
    return any(UNKNOWN_RE.search(s) for s in strings(value))


def new_plan(profile: str, stack: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "profile": profile,
        "stack": stack,
        "settings": {},
        "resources": [],
        "operations": [],
        "outputs": {},
        "warnings": [],
    }


def normalise(value: Any) -> Any:
    """JSON-ready and stable: whole floats become ints, tuples lists, sets sorted lists."""
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(normalise(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(plan: dict[str, Any]) -> str:
    """The canonical text of a plan: sorted keys, resources sorted by id, one trailing newline.

    Operation order is kept: it is the order the deploy runs them in.
    """
    plan = normalise(plan)
    plan["resources"] = sorted(plan["resources"], key=lambda r: r["id"])
    return json.dumps(plan, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write(plan: dict[str, Any], path: str | Path) -> None:
    write_text(path, dumps(plan))


def write_text(path: str | Path, text: str) -> None:
    """Write an output file, or a `PlanFileError` naming it (never a half-written file)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as error:
        if partial.parent.is_dir():
            partial.unlink(missing_ok=True)
        raise PlanFileError(f"{path}: cannot write ({error.strerror})") from None


def check_writable(path: str | Path) -> None:
    """Refuse an output file that cannot be written, before the work that would fill it."""
    path = Path(path)
    if path.is_dir():
        raise PlanFileError(f"{path}: is a directory, expected a file to write")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise PlanFileError(f"{path}: cannot write (No such file or directory)")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PlanFileError(f"{path}: cannot write (Permission denied)")


def read_text(path: str | Path, what: str) -> str:
    """A file the user named, or a `PlanFileError` that names it and says what was expected."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise PlanFileError(f"{path}: is a directory, expected a {what}") from None
    except UnicodeDecodeError:
        raise PlanFileError(f"{path}: not a {what} (not UTF-8 text)") from None
    except OSError as error:
        raise PlanFileError(f"{path}: cannot read ({error.strerror})") from None


def load(path: str | Path) -> dict[str, Any]:
    """Read and check a plan file; every failure is a `PlanFileError` naming the file."""
    text = read_text(path, "plan file")
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlanFileError(
            f"{path}: corrupt plan file (invalid JSON at line {error.lineno}, "
            f"column {error.colno}); make it again with `prodstack plan -o {path}`"
        ) from None
    return validate(plan, str(path))


def validate(plan: Any, where: str) -> dict[str, Any]:
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise PlanFileError(
            f"{where}: not a prodstack plan (expected \"format\": \"{FORMAT}\"); "
            "make one with `prodstack plan -o FILE`"
        )
    if plan.get("version") != VERSION:
        raise PlanFileError(
            f"{where}: plan format version {plan.get('version')!r} is not supported "
            f"(this prodstack reads version {VERSION}); make the plan again"
        )
    if plan.get("profile") not in PROFILES:
        raise PlanFileError(f"{where}: field `profile` must be one of {' | '.join(PROFILES)}")
    resources = plan.get("resources")
    if not isinstance(resources, list):
        raise PlanFileError(f"{where}: field `resources` must be a list")
    for number, resource in enumerate(resources):
        if not isinstance(resource, dict):
            raise PlanFileError(f"{where}: resources[{number}] must be an object")
        for key in ("id", "type", "name"):
            if not isinstance(resource.get(key), str):
                raise PlanFileError(f"{where}: resources[{number}] has no string `{key}`")
        for key, kind in (("inputs", dict), ("options", dict), ("dependencies", list)):
            if not isinstance(resource.get(key, kind()), kind):
                raise PlanFileError(f"{where}: resources[{number}].{key} has the wrong type")
        if not isinstance(resource.get("component"), str | None):
            raise PlanFileError(f"{where}: resources[{number}].component must be a string")
    operations = plan.get("operations", [])
    if isinstance(operations, list) and not all(
        isinstance(op, dict) and isinstance(op.get("name"), str) for op in operations
    ):
        raise PlanFileError(f"{where}: every operation needs a string `name`")
    for key, kind in (("operations", list), ("outputs", dict), ("settings", dict),
                      ("warnings", list), ("policy", dict)):  # fmt: skip
        if not isinstance(plan.get(key, kind()), kind):
            noun = "an object" if kind is dict else "a list"
            raise PlanFileError(f"{where}: field `{key}` must be {noun}")
    return plan
