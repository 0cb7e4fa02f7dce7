"""Compare two plans: what is added, removed, replaced or updated, and what that risks.

The order of the report is the order a reviewer needs it in:

1. stateful resources that are replaced or deleted, with the property that forces it
   (from ``data/replacement.toml``, after the AWS provider's force-new fields) and whether
   the old one is gone before the new one exists;
2. changes that cause downtime or a restart;
3. every change, grouped by component, property by property;
4. the policy pack's violations on the head plan, and the monthly cost before and after.

``compare`` returns the diff as data (the ``--format json`` output); ``render_markdown``
turns it into one GitHub comment, cut at a resource boundary to fit.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from prodstack import planfile
from prodstack.cost import usd

DATA = Path(__file__).resolve().parent / "data"
FORMAT = "prodstack.diff"
GITHUB_COMMENT_LIMIT = 65_000
# A comment a reviewer reads: one diff under 12,000 characters, so that a pull-request
# comment of a few of them, with its table and links, stays under 15,000.
DEFAULT_MAX_CHARS = 12_000
# Values longer than this (or multi-line, or structured) are shown as a unified diff.
INLINE_LIMIT = 80
CLOUD_COMPONENT_ORDER = ("network", "load_balancer", "waf", "database", "cache", "registry",
                         "service", "cdn", "observability", "stack")  # fmt: skip
# On a VPS the state lives in PostgreSQL's cluster and databases; the rest is rebuilt by
# the next deploy.
VPS_STATEFUL = {
    "vps:postgres_cluster": "PostgreSQL cluster (data directory)",
    "vps:postgres_database": "PostgreSQL database",
}
# Replacing these loses what they hold unless it is restored or migrated.
HOLDS_DATA = {
    "aws:rds/instance:Instance": "restore from a snapshot",
    "aws:elasticache/replicationGroup:ReplicationGroup": "the cache starts empty",
    "aws:s3/bucket:Bucket": "objects are not copied",
    "aws:kms/key:Key": "data encrypted with the old key needs it until re-encrypted",
    "aws:secretsmanager/secret:Secret": "the value is set again from config",
}
# What lives in one VPC's subnets and security groups: an in-place update cannot move it
# to another VPC's. Source: botocore rds ModifyDBSubnetGroup error InvalidSubnet ("multiple
# subnets were requested that are not all in a common VPC"), ModifyDBInstance and
# elasticache ModifyReplicationGroup error InvalidVPCNetworkStateFault, elasticache
# ModifyCacheSubnetGroup errors SubnetInUse and InvalidSubnet.
VPC_BOUND = {
    "aws:rds/instance:Instance", "aws:rds/subnetGroup:SubnetGroup",
    "aws:elasticache/replicationGroup:ReplicationGroup", "aws:elasticache/subnetGroup:SubnetGroup",
}
VPC = "aws:ec2/vpc:Vpc"
RECORD = "aws:route53/record:Record"
FAIL_ON = ("replace", "delete", "risk", "downtime", "policy")
# `(known after apply: aws:ec2/vpc:Vpc::prodstack-net-vpc.id)` -> the resource's id.
_UNKNOWN_SOURCE_RE = re.compile(r"\(known after apply: ([^)\s]+?::[^.)\[\s]+)[.\[]")
# The same, with the top-level output: `...::prodstack-registry-image.repoDigest)`.
_UNKNOWN_OUTPUT_RE = re.compile(r"\(known after apply: ([^)\s]+?::[^.)\[\s]+)\.([^.)\[\s]+)")


@cache
def replacement_table() -> dict[str, dict[str, Any]]:
    """``data/replacement.toml``: per resource type, its force-new and disruptive fields."""
    with open(DATA / "replacement.toml", "rb") as handle:
        return tomllib.load(handle).get("types", {})


def _index(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in plan["resources"]}


def _label(resource: dict[str, Any]) -> str:
    entry = replacement_table().get(resource["type"], {})
    return entry.get("label") or VPS_STATEFUL.get(resource["type"]) or resource["type"]


def _is_stateful(resource: dict[str, Any]) -> bool:
    if resource["type"] in VPS_STATEFUL:
        return True
    return bool(replacement_table().get(resource["type"], {}).get("stateful"))


def _changed_properties(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _references(value: Any) -> set[str]:
    """Ids of the resources whose after-apply outputs a value uses."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return set(_UNKNOWN_SOURCE_RE.findall(text))


def _moving_sources(value: Any, moving: dict[str, set[str]]) -> list[str]:
    """The resources whose outputs, read in ``value``, are new at apply."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return sorted({rid for rid, output in _UNKNOWN_OUTPUT_RE.findall(text)
                   if rid in moving and ("*" in moving[rid] or output in moving[rid])})


def _recomputed(type_: str, inputs: set[str]) -> set[str]:
    """Outputs of a ``type_`` resource that an in-place update of ``inputs`` makes anew."""
    table = replacement_table().get(type_, {}).get("update_outputs", {})
    return {output for output, by in table.items() if inputs & set(by)}


def _secret_only_change(old: Any, new: Any) -> bool:
    """Whether two values differ only inside secret markers (a changed secret)."""
    def blank(value: Any) -> str:
        return planfile.SECRET_RE.sub("[secret]", json.dumps(value, sort_keys=True))

    return (planfile.has_secret(old) or planfile.has_secret(new)) and blank(old) == blank(new)


def _property_change(key: str, old: Any, new: Any, forcing: set[str]) -> dict[str, Any]:
    change: dict[str, Any] = {"property": key, "forces_replacement": key in forcing}
    if _secret_only_change(old, new):
        change["secret_changed"] = True
    else:
        change["old"] = old
        change["new"] = new
    return change


def _option_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Resource options that differ (`protect`, `retain_on_delete`, ...), as properties."""
    before, after = old.get("options", {}), new.get("options", {})
    return [
        {"property": f"option {key}", "forces_replacement": False,
         "old": before.get(key), "new": after.get(key)}
        for key in sorted(set(before) | set(after))
        if key not in ("custom", "aliases") and before.get(key) != after.get(key)
    ]  # fmt: skip


def _in_both(base: dict[str, Any], head: dict[str, Any],
             changes: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict, dict]]:  # fmt: skip
    """Record the added and removed resources in ``changes``; yield those in both plans."""
    old_index, new_index = _index(base), _index(head)
    # A resource under a new name or parent with an `aliases` option naming its old one
    # is that resource to Pulumi: kept and updated, not deleted and created.
    renamed = {}
    for rid, resource in new_index.items():
        if rid in old_index:
            continue
        for former in resource.get("options", {}).get("aliases", ()):
            if former in old_index and former not in new_index and former not in renamed:
                renamed[former] = rid
                break
    for rid in sorted(set(old_index) | set(new_index)):
        if rid in renamed:
            continue
        old, new = old_index.get(rid), new_index.get(rid)
        if old is None and rid in renamed.values():
            old = old_index[next(k for k, v in renamed.items() if v == rid)]
        if old is None:
            changes[rid] = {"action": "add", "resource": new, "properties": []}
        elif new is None:
            changes[rid] = {"action": "remove", "resource": old, "properties": []}
        else:
            yield rid, old, new


def _cloud_changes(base: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    table = replacement_table()
    changes: dict[str, dict[str, Any]] = {}

    for rid, old, new in _in_both(base, head, changes):
        keys = _changed_properties(old.get("inputs", {}), new.get("inputs", {}))
        options = _option_changes(old, new)
        # A new parent is a new resource, unless an alias names the old one.
        moved = old.get("parent") != new.get("parent") and old["id"] == new["id"]
        if not keys and not options and not moved:
            continue
        entry = table.get(new["type"], {})
        forcing = set(entry.get("force_new", ())) | set(
            new.get("options", {}).get("replace_on_changes", ())
        )
        # A security-group rule's source of another kind (prefixListId -> cidrIpv4) is a
        # new rule; a new value of the same kind is modified in place.
        kinds = entry.get("replace_on_kind_change", ())
        kind_before = {k for k in kinds if old.get("inputs", {}).get(k) is not None}
        kind_after = {k for k in kinds if new.get("inputs", {}).get(k) is not None}
        if kind_before != kind_after:
            forcing |= kind_before | kind_after
        # Pulumi leaves these as deployed (e.g. desiredCount, which autoscaling owns).
        ignored = set(new.get("options", {}).get("ignore_changes", ()))
        effective = [k for k in keys if k not in ignored]
        properties = [
            {**_property_change(k, old["inputs"].get(k), new["inputs"].get(k), forcing),
             **({"ignored": True} if k in ignored else {})}
            for k in keys
        ] + options  # fmt: skip
        if moved:
            properties.append({"property": "parent", "forces_replacement": True,
                               "old": old.get("parent"), "new": new.get("parent")})  # fmt: skip
        forced = sorted(forcing & set(effective)) + (["parent"] if moved else [])
        if forced:
            action = "replace"
        elif effective or options:
            action = "update"
        else:
            action = "ignored"
        changes[rid] = {"action": action, "resource": new, "forced_by": forced,
                        "properties": properties}  # fmt: skip

    # Outputs that are new at apply: every output of a replaced resource ("*"), and those
    # of an updated one that the update recomputes (the table's `update_outputs`: a new
    # image's repoDigest). Whatever reads one of them changes at apply: a force-new input
    # replaces its reader (new VPC -> new subnets, new digest -> new task definition), any
    # other input updates it, and that reader's new outputs move on through the graph.
    moving: dict[str, set[str]] = {}
    for rid, change in changes.items():
        if change["action"] == "replace":
            moving[rid] = {"*"}
        elif change["action"] == "update":
            moving[rid] = _recomputed(change["resource"]["type"],
                                      {p["property"] for p in change["properties"]
                                       if not p.get("ignored")})  # fmt: skip
    grew = True
    while grew:
        grew = False
        for resource in head["resources"]:
            rid = resource["id"]
            if rid in changes and changes[rid]["action"] in ("replace", "add", "remove"):
                continue
            force_new = set(table.get(resource["type"], {}).get("force_new", ()))
            shown = {p["property"] for p in changes.get(rid, {}).get("properties", ())
                     if not p.get("after_apply")}  # fmt: skip
            later = {
                key: sources for key, value in resource.get("inputs", {}).items()
                if (sources := _moving_sources(value, moving))
            }  # fmt: skip
            if not later:
                continue
            forced = sorted(k for k in later if k in force_new)
            change = changes.setdefault(rid, {"action": "update", "resource": resource,
                                              "properties": []})  # fmt: skip
            if forced:
                change["action"] = "replace"
                change["forced_by"] = sorted(set(change.get("forced_by", ())) | set(forced))
                change["because_of"] = sorted({s for k in forced for s in later[k]})
                moving[rid] = {"*"}
                grew = True
                continue
            if change["action"] == "ignored":
                change["action"] = "update"
            listed = {p["property"] for p in change["properties"] if p.get("after_apply")}
            for key, sources in sorted(later.items()):
                if key in shown or key in listed:
                    continue
                change["properties"].append({"property": key, "forces_replacement": False,
                                             "after_apply": True, "because_of": sources})
                grew = True
            change["because_of"] = sorted({s for sources in later.values() for s in sources}
                                          | set(change.get("because_of", ())))  # fmt: skip
            outputs = _recomputed(resource["type"], set(later) | shown)
            if not outputs <= moving.get(rid, set()):
                moving[rid] = moving.get(rid, set()) | outputs
                grew = True
    replaced = {rid for rid, c in changes.items() if c["action"] == "replace"}
    return {"changes": changes, "replaced": replaced, "moving": moving}


def _vps_changes(base: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, dict[str, Any]] = {}
    for rid, old, new in _in_both(base, head, changes):
        keys = _changed_properties(old.get("inputs", {}), new.get("inputs", {}))
        if keys:
            # A different cluster (major version, data directory) is a new one.
            action = "replace" if new["type"] == "vps:postgres_cluster" else "update"
            changes[rid] = {
                "action": action,
                "resource": new,
                "forced_by": keys if action == "replace" else [],
                "properties": [
                    _property_change(k, old["inputs"].get(k), new["inputs"].get(k), set())
                    for k in keys
                ],
            }
    return {"changes": changes, "replaced": set()}


def _replaced_path_to(rid: str, targets: set[str], changes: dict[str, dict[str, Any]],
                      by_id: dict[str, dict[str, Any]]) -> str | None:  # fmt: skip
    """The first of ``targets`` that ``rid`` reads through replaced resources only."""
    seen, todo = {rid}, [rid]
    while todo:
        for ref in sorted(_references(by_id.get(todo.pop(), {}).get("inputs", {}))):
            if ref in targets:
                return ref
            if ref not in seen and changes.get(ref, {}).get("action") == "replace":
                seen.add(ref)
                todo.append(ref)
    return None


def _vpc_moves(changes: dict[str, dict[str, Any]], head: dict[str, Any]) -> dict[str, str]:
    """Databases and caches (and their subnet groups) that an in-place update would move
    into a replaced VPC's new subnets or security groups, with that VPC's id."""
    vpcs = {rid for rid, c in changes.items()
            if c["action"] == "replace" and c["resource"]["type"] == VPC}  # fmt: skip
    if not vpcs:
        return {}
    by_id = _index(head)
    moves = {}
    for rid, change in changes.items():
        if change["action"] == "update" and change["resource"]["type"] in VPC_BOUND:
            vpc = _replaced_path_to(rid, vpcs, changes, by_id)
            if vpc:
                moves[rid] = vpc
    return moves


def _cannot_apply(changes: dict[str, dict[str, Any]], moves: dict[str, str]) -> list[dict]:
    """Why `pulumi up` of this change fails half-way, and what to do instead."""
    found = []
    for vpc in sorted(set(moves.values())):
        stranded = sorted(rid for rid, v in moves.items() if v == vpc)
        names = ", ".join(f"{_label(changes[rid]['resource'])} "
                          f"`{changes[rid]['resource']['name']}`" for rid in stranded)  # fmt: skip
        found.append({
            "reason": "vpc_move", "vpc": vpc, "resources": stranded,
            "text": (
                f"VPC `{vpc.rsplit('::', 1)[-1]}` is replaced, and {names} would be moved into "
                "it in place. AWS moves neither a database nor a cache to another VPC's "
                "subnets or security groups that way (RDS ModifyDBSubnetGroup: InvalidSubnet, "
                "subnets not all in a common VPC; ModifyDBInstance and ElastiCache "
                "ModifyReplicationGroup: InvalidVPCNetworkStateFault), and the old subnets "
                "cannot be deleted while they hold the databases' network interfaces: the "
                "apply fails half-way, with both VPCs standing."
            ),
            "instead": (
                "keep this stack's VPC as it is, and build the new network as a new stack: "
                "create it, move the data (a snapshot of the database restored into the new "
                "stack, or a migration with a short write freeze), switch the DNS name over, "
                "then `pulumi destroy` the old stack"
            ),
        })  # fmt: skip
    return found


def _record_key(resource: dict[str, Any]) -> tuple[str, str, str]:
    inputs = resource.get("inputs", {})
    return (str(inputs.get("zoneId")), str(inputs.get("name", "")).rstrip(".").lower(),
            str(inputs.get("type")))  # fmt: skip


def _record_collisions(base: dict[str, Any], head: dict[str, Any],
                       changes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    """Route 53 records created under a name and type that another record of the stack
    holds until later in the same apply: Pulumi creates (and replaces, by default) before
    it deletes, and a record created without `allow_overwrite` is a Route 53 CREATE, which
    fails while a record set of that name and type exists (botocore route53 ChangeAction:
    CREATE creates, UPSERT updates an existing one; pulumi_aws RecordArgs.allow_overwrite,
    false by default)."""
    holders = {}
    for resource in base["resources"]:
        if resource["type"] == RECORD:
            holders.setdefault(_record_key(resource), []).append(resource)
    head_index = _index(head)
    found = []
    for resource in head["resources"]:
        change = changes.get(resource["id"])
        if resource["type"] != RECORD or change is None or \
                change["action"] not in ("add", "replace"):
            continue
        if resource.get("inputs", {}).get("allowOverwrite"):
            continue
        key = _record_key(resource)
        for holder in holders.get(key, ()):
            if holder["id"] == resource["id"]:
                # Its own old self: gone first only with delete_before_replace.
                if change["action"] != "replace" or \
                        resource.get("options", {}).get("delete_before_replace"):
                    continue
                why = "its own old record of that name, deleted only after the new one is made"
            else:
                after = head_index.get(holder["id"])
                gone = "deleted" if after is None else "renamed"
                if after is not None and _record_key(after) == key:
                    gone = "kept"
                why = (f"`{holder['name']}` holds that name and type until it is {gone} "
                       "later in the same apply" if gone != "kept" else
                       f"`{holder['name']}` keeps that name and type: two resources, one record")
            found.append({
                "resource": resource["id"], "type": RECORD, "name": resource["name"],
                "label": _label(resource), "component": resource.get("component"),
                "action": "collide", "forced_by": change.get("forced_by", []),
                "holder": holder["id"], "record": f"{key[1]} {key[2]}",
                "delete_first": False,
                "order": (f"created as `{key[1]}` {key[2]} while {why}: Pulumi creates before "
                          "it deletes, so Route 53 refuses the create (a CREATE of an existing "
                          "record set) and the apply stops there"),
            })  # fmt: skip
    return found


def _risks(changes: dict[str, dict[str, Any]], profile: str,
           moves: dict[str, str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    moves = moves or {}
    risks = []
    for rid, change in changes.items():
        resource = change["resource"]
        moving = [p["property"] for p in change["properties"] if p.get("after_apply")]
        if not _is_stateful(resource):
            continue
        if change["action"] not in ("replace", "remove") and not moving:
            continue
        options = resource.get("options", {})
        risk: dict[str, Any] = {
            "resource": rid,
            "type": resource["type"],
            "name": resource["name"],
            "label": _label(resource),
            "component": resource.get("component"),
            "action": {"replace": "replace", "remove": "delete"}.get(change["action"], "update"),
        }
        if risk["action"] == "update":
            # e.g. a subnet group pointed at a new VPC's subnets.
            risk["forced_by"] = moving
            risk["because_of"] = change.get("because_of", [])
            risk["delete_first"] = False
            if rid in moves:
                risk["order"] = ("moved in place into the new VPC, which AWS refuses (a "
                                 "database cannot move to another VPC's subnets): this apply "
                                 "cannot succeed as written")
            else:
                risk["order"] = ("updated in place to use what is replaced; AWS must accept "
                                 "that in place")
        elif change["action"] == "replace":
            risk["forced_by"] = change.get("forced_by", [])
            if change.get("because_of"):
                risk["because_of"] = change["because_of"]
            if profile == "cloud":
                risk["delete_first"] = bool(options.get("delete_before_replace"))
                risk["order"] = (
                    "the old one is deleted before the new one exists (delete_before_replace)"
                    if risk["delete_first"]
                    else "the new one is created first, then the old one is deleted"
                )
                if resource["type"] in HOLDS_DATA:
                    risk["order"] += f"; {HOLDS_DATA[resource['type']]}"
            else:
                risk["delete_first"] = False
                risk["order"] = (
                    "a new, empty cluster is created beside the old one; the data stays "
                    "in the old data directory until it is upgraded (pg_upgradecluster)"
                )
        else:
            if options.get("protect"):
                risk["order"] = "protected: the deletion fails until it is unprotected"
            elif options.get("retain_on_delete"):
                risk["order"] = "retained: Pulumi forgets it, AWS keeps it"
            elif resource["type"] in HOLDS_DATA:
                risk["order"] = f"deleted, with what it holds ({HOLDS_DATA[resource['type']]})"
            else:
                risk["order"] = "deleted"
        risks.append(risk)
    # What holds data first, then deletions, replacements and in-place moves.
    rank = {"delete": 0, "replace": 1, "collide": 1, "update": 2}
    risks.sort(key=lambda r: (r["type"] not in HOLDS_DATA, rank[r["action"]], r["resource"]))
    return risks


def _disruption_reason(reason: str | dict[str, str], inputs: dict[str, Any]) -> str:
    """A disruptive entry's text; a table picks it by the value at its ``by`` path."""
    if isinstance(reason, str):
        return reason
    value: Any = inputs
    for part in reason["by"].split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return reason.get(str(value), reason["default"]) if value is not None else reason["default"]


def _cloud_disruptions(changes: dict[str, dict[str, Any]], head: dict[str, Any],
                       moving: dict[str, set[str]]) -> list[dict[str, Any]]:  # fmt: skip
    table = replacement_table()
    found = []
    for resource in head["resources"]:
        disruptive = table.get(resource["type"], {}).get("disruptive", {})
        if not disruptive:
            continue
        change = changes.get(resource["id"])
        if change is not None and change["action"] in ("add", "remove", "replace"):
            continue
        changed = {p["property"] for p in change["properties"]
                   if not p.get("ignored") and not p.get("after_apply")} if change else set()
        calm = set(table.get(resource["type"], {}).get("no_outage", ()))
        for key, reason in sorted(disruptive.items()):
            reason = _disruption_reason(reason, resource.get("inputs", {}))
            value = resource.get("inputs", {}).get(key)
            via = _moving_sources(value, moving)
            if key in changed or via:
                found.append({
                    "resource": resource["id"],
                    "type": resource["type"],
                    "name": resource["name"],
                    "label": _label(resource),
                    "property": key,
                    "reason": reason,
                    # A change to note (storage grows online), not an outage or a restart.
                    "downtime": key not in calm,
                    **({"because_of": via} if via else {}),
                })
    return found


_DIGEST_RE = re.compile(r"@(sha256:[0-9a-f]{64})$")
_BUILT_RE = re.compile(r"^\(known after apply: (docker:index/image:Image::[^.)\s]+)\.repoDigest\)$")


def _version_of(image: str) -> tuple[str, str | None]:
    """``(version, digest)`` of an image reference: its tag, else its digest's start."""
    match = _DIGEST_RE.search(image)
    digest = match.group(1) if match else None
    name = image[: match.start()] if match else image
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return (tag or (digest[:19] if digest else name)), digest


def _strategy_text(strategy: str, bake_minutes: float | None) -> str:
    if strategy != "blue_green":
        return "rolling"
    if bake_minutes is None:
        return "blue/green"
    shown = int(bake_minutes) if float(bake_minutes).is_integer() else round(bake_minutes, 1)
    return f"blue/green, {shown} min bake"


def release_of(plan: dict[str, Any]) -> dict[str, Any] | None:
    """What a plan deploys: ``version``, ``digest`` (None while it is built at apply),
    ``source`` (``build`` from the checkout, or a pinned ``image``) and ``strategy``."""
    by_id = _index(plan)
    if plan["profile"] == "vps":
        replicas = next((r for r in plan["resources"] if r["type"] == "vps:api_replicas"), None)
        if replicas is None or not replicas["inputs"].get("image"):
            return None
        settings = plan.get("settings", {})
        version, digest = _version_of(str(replicas["inputs"]["image"]))
        bake = settings.get("bake_seconds")
        return {"version": version, "digest": digest,
                "source": "image" if settings.get("image") else "build",
                "strategy": _strategy_text(str(settings.get("deploy_strategy", "rolling")),
                                           bake / 60 if isinstance(bake, int | float) else None),
                "resource": replicas["id"]}  # fmt: skip
    for service in plan["resources"]:
        if service["type"] != "aws:ecs/service:Service":
            continue
        inputs = service.get("inputs", {})
        tasks = [rid for rid in _references(inputs.get("taskDefinition"))
                 if rid in by_id and by_id[rid]["type"] == "aws:ecs/taskDefinition:TaskDefinition"]
        if not tasks:
            continue
        wanted = {lb.get("containerName") for lb in inputs.get("loadBalancers") or ()
                  if isinstance(lb, dict)}  # fmt: skip
        try:
            containers = json.loads(by_id[tasks[0]]["inputs"].get("containerDefinitions", "[]"))
        except (TypeError, json.JSONDecodeError):
            continue
        main = next((c for c in containers if c.get("name") in wanted), None) or next(
            (c for c in containers if c.get("essential")), None)
        if not main or not isinstance(main.get("image"), str):
            continue
        image, source = main["image"], "image"
        built = _BUILT_RE.match(image)
        if built:
            source = "build"
            name = str(by_id.get(built.group(1), {}).get("inputs", {}).get("imageName", ""))
            tag = name.rsplit(":", 1)[-1] if ":" in name.rsplit("/", 1)[-1] else ""
            version, digest = (tag or "(built at apply)"), None
        else:
            version, digest = _version_of(image)
        config = inputs.get("deploymentConfiguration") or {}
        blue_green = config.get("strategy") == "BLUE_GREEN"
        bake = config.get("bakeTimeInMinutes")
        try:
            bake_minutes = float(bake) if bake is not None else None
        except (TypeError, ValueError):
            bake_minutes = None
        return {"version": version, "digest": digest, "source": source,
                "strategy": _strategy_text("blue_green" if blue_green else "rolling",
                                           bake_minutes),
                "resource": service["id"],
                **({"checkout_version": plan["release"]["checkout_version"]}
                   if (plan.get("release") or {}).get("checkout_version") else {})}  # fmt: skip
    return None


def _release(base: dict[str, Any], head: dict[str, Any]) -> dict[str, Any] | None:
    """A new image going live, or an older one: how the head's release differs."""
    before, after = release_of(base), release_of(head)
    if after is None or (before is not None and (before["version"], before["digest"])
                         == (after["version"], after["digest"])):
        return None
    # A pinned image that is not what the head's own checkout builds is older code: the
    # rollback `prodstack rollback` writes. A prebuilt image with its own tag (CI, a
    # promotion) cannot be told apart from a deploy, and reads as one.
    checkout = after.get("checkout_version")
    rollback = (after["source"] == "image" and checkout is not None
                and after["version"].startswith("src-") and after["version"] != checkout)
    verb = "Roll back to" if rollback else "Deploy"
    release = {"action": "rollback" if rollback else "deploy", "version": after["version"],
               "digest": after["digest"], "strategy": after["strategy"],
               "from": before["version"] if before else None,
               "text": f"{verb} {after['version']} ({after['strategy']})"}  # fmt: skip
    if rollback:
        release["checkout_version"] = checkout
    return release


def _cloud_restores(changes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Added RDS instances restored to a point in time: the diff says what they are (a copy
    of another instance as it was, which the stack switches to), not only "add"."""
    found = []
    for rid, change in changes.items():
        resource = change["resource"]
        restore = resource.get("inputs", {}).get("restoreToPointInTime")
        if change["action"] != "add" or resource["type"] != "aws:rds/instance:Instance" \
                or not isinstance(restore, dict):
            continue
        source = restore.get("sourceDbInstanceIdentifier")
        when = restore.get("restoreTime") or "its latest restorable time"
        identifier = resource.get("inputs", {}).get("identifier")
        found.append({
            "resource": rid, "type": resource["type"], "name": resource["name"],
            "label": _label(resource), "restore": {"source": source, "time": when},
            "reason": (
                f"database restore: RDS instance `{resource['name']}` (`{identifier}`) is "
                f"created from `{source}` as it was at {when} (point-in-time restore, tens "
                "of minutes by size); writes after that time are not in it. What reads the "
                "database's endpoint, secret or IAM ARN moves to it in this deployment; "
                f"`{source}` keeps running, and billing, until `restore_source: release` "
                "(RDS user guide, USER_PIT)"),
        })
    return found


def _vps_disruptions(changes: dict[str, dict[str, Any]], head: dict[str, Any]) -> list[dict]:
    """Operations that restart, reload or roll something because a changed resource is
    written by an operation they are triggered by (as recorded from the real deploy)."""
    changed = {rid for rid, c in changes.items() if c["action"] in ("add", "update", "replace")}
    writers = {
        op["name"]: sorted(set(op.get("writes", ())) & changed)
        for op in head.get("operations", [])
        if set(op.get("writes", ())) & changed
    }
    restarted = {
        unit
        for op in head.get("operations", [])
        for unit in (op.get("effects") or {}).get("restart", ())
        if _op_causes(op, writers, changes)
    }
    found = []
    for op in head.get("operations", []):
        effects = op.get("effects") or {}
        causes = _op_causes(op, writers, changes)
        if not causes:
            continue
        what = []
        for unit in effects.get("restart", ()):
            what.append(f"restarts {unit}")
        # A unit that restarts anyway needs no reload as well.
        for unit in effects.get("reload", ()):
            if unit not in restarted:
                what.append(f"reloads {unit}")
        if effects.get("rolling_deploy"):
            what.append("replaces the API replicas one at a time")
        if what:
            found.append({"operation": op["name"], "component": op.get("component"),
                          "reason": ", ".join(what), "because_of": causes})  # fmt: skip
    return found


def _op_causes(op: dict[str, Any], writers: dict[str, list[str]],
               changes: dict[str, dict[str, Any]]) -> list[str]:  # fmt: skip
    """The changed resources that make an operation with effects run: those written by the
    operations its `_if` consults, those it writes itself, and, for the rolling deploy
    (unconditional on a fresh host), any change in its own component."""
    causes = {rid for trigger in op.get("triggers", ()) for rid in writers.get(trigger, ())}
    causes |= set(writers.get(op["name"], ()))
    if (op.get("effects") or {}).get("rolling_deploy"):
        causes |= {
            rid for rid, change in changes.items()
            if change["action"] != "remove"
            and change["resource"].get("component") == op.get("component")
        }  # fmt: skip
    return sorted(causes)


def compare(
    base: dict[str, Any],
    head: dict[str, Any],
    *,
    base_cost: dict[str, Any] | None = None,
    head_cost: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The diff of two plans of the same profile, as data."""
    if base["profile"] != head["profile"]:
        raise ValueError(f"cannot compare a {base['profile']} plan with a {head['profile']} plan")
    profile = head["profile"]
    found = _cloud_changes(base, head) if profile == "cloud" else _vps_changes(base, head)
    changes = found["changes"]
    gone = head.get("stack_file_removed")
    if gone and base.get("resources"):
        return _stack_file_removed(base, head, gone, base_cost)
    moves = _vpc_moves(changes, head) if profile == "cloud" else {}
    if profile == "cloud":
        disruptions = (_cloud_restores(changes)
                       + _cloud_disruptions(changes, head, found["moving"]))
    else:
        disruptions = _vps_disruptions(changes, head)
    counts = {"add": 0, "remove": 0, "replace": 0, "update": 0, "ignored": 0}
    for change in changes.values():
        counts[change["action"]] += 1
    # In both plans: what the head has and does not add (a renamed, aliased one included).
    unchanged = (len(_index(head)) - counts["add"]
                 - counts["replace"] - counts["update"] - counts["ignored"])  # fmt: skip

    listed = []
    for rid, change in changes.items():
        resource = change["resource"]
        entry = {
            "id": rid,
            "type": resource["type"],
            "name": resource["name"],
            "component": resource.get("component") or "other",
            "action": change["action"],
            "properties": change["properties"],
        }
        for key in ("forced_by", "because_of"):
            if change.get(key):
                entry[key] = change[key]
        if change["action"] in ("add", "remove"):
            entry["inputs"] = resource.get("inputs", {})
        listed.append(entry)
    order = _component_order(base, head)
    listed.sort(key=lambda c: (order.get(c["component"], len(order)), c["component"], c["id"]))

    result: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "profile": profile,
        "stack": head.get("stack"),
        "summary": {**counts, "unchanged": unchanged},
        "cannot_apply": _cannot_apply(changes, moves),
        "risks": _risks(changes, profile, moves) + (
            _record_collisions(base, head, changes) if profile == "cloud" else []),
        "release": _release(base, head),
        "disruptions": disruptions,
        # Why a change happens at apply: the resources whose outputs are new then.
        "moved": {rid: "replaced" if changes[rid]["action"] == "replace" else "updated"
                  for rid, outputs in sorted(found.get("moving", {}).items()) if outputs},
        "changes": listed,
        "outputs": _output_changes(base, head, found.get("moving", {})),
        "policy": head.get("policy") or {"pack": None, "violations": []},
        "warnings": {
            "new": sorted(set(head.get("warnings", ())) - set(base.get("warnings", ()))),
            "gone": sorted(set(base.get("warnings", ())) - set(head.get("warnings", ()))),
        },
    }
    if base_cost is not None and head_cost is not None:
        before, after = base_cost["total_monthly"], head_cost["total_monthly"]
        result["cost"] = {
            "currency": head_cost.get("currency", "USD"),
            "before": before,
            "after": after,
            "delta": round(after - before, 2),
            "fixed_before": base_cost.get("fixed_monthly"),
            "fixed_after": head_cost.get("fixed_monthly"),
        }
    return result


def _output_changes(base: dict[str, Any], head: dict[str, Any],
                    moving: dict[str, set[str]]) -> list[dict[str, Any]]:  # fmt: skip
    """Stack outputs that are added, removed or changed, and those whose value is new
    only at apply (it reads an output of a replaced or recomputed resource)."""
    before, after = base.get("outputs") or {}, head.get("outputs") or {}
    found = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if key not in after:
            found.append({"output": key, "action": "remove", "old": old})
        elif key not in before:
            found.append({"output": key, "action": "add", "new": new})
        elif old != new:
            change = _property_change(key, old, new, set())
            found.append({"output": key, "action": "update",
                          **{k: v for k, v in change.items() if k != "property"
                             and k != "forces_replacement"}})  # fmt: skip
        elif sources := _moving_sources(new, moving):
            found.append({"output": key, "action": "update", "after_apply": True,
                          "because_of": sources})
    for entry in found:
        for side in ("old", "new"):
            if side in entry and planfile.has_secret(entry[side]):
                entry.pop(side)
                entry["secret_changed"] = True
    return found


def _stack_file_removed(base: dict[str, Any], head: dict[str, Any], stack_file: str,
                        base_cost: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """The head has no stack file: nothing is applied, nothing is destroyed. The stack's
    resources keep running, and billing, until `pulumi destroy` removes them."""
    stack = base.get("stack")
    result: dict[str, Any] = {
        "format": FORMAT, "version": 1, "profile": base["profile"], "stack": stack,
        "stack_file_removed": stack_file,
        "summary": {"add": 0, "remove": 0, "replace": 0, "update": 0, "ignored": 0,
                    "unchanged": len(base["resources"])},
        "still_deployed": len(base["resources"]),
        "text": (f"`{stack_file}` is deleted at the head. That destroys nothing: the stack "
                 f"`{stack}` and its {len(base['resources'])} resources keep running, and "
                 f"billing, as they are; only its configuration is gone from the repository. "
                 f"`pulumi destroy --stack {stack}` (with the stack file still present) is what "
                 f"removes the resources, then `pulumi stack rm {stack}` forgets the stack."),
        "cannot_apply": [], "risks": [], "release": None, "disruptions": [], "moved": {},
        "changes": [], "outputs": [],
        "policy": {"pack": None, "violations": []}, "warnings": {"new": [], "gone": []},
    }  # fmt: skip
    if base_cost is not None:
        total = base_cost["total_monthly"]
        # Not a saving: the bill stays until the resources are destroyed.
        result["cost"] = {"currency": base_cost.get("currency", "USD"), "before": total,
                          "after": total, "delta": 0.0, "still_billing": True,
                          "fixed_before": base_cost.get("fixed_monthly"),
                          "fixed_after": base_cost.get("fixed_monthly")}  # fmt: skip
    return result


def _component_order(base: dict[str, Any], head: dict[str, Any]) -> dict[str, int]:
    if head["profile"] == "cloud":
        return {name: i for i, name in enumerate(CLOUD_COMPONENT_ORDER)}
    order: dict[str, int] = {}
    for plan in (head, base):
        for op in plan.get("operations", []):
            order.setdefault(op.get("component") or "other", len(order))
    return order


def blocking(diff: dict[str, Any], fail_on: set[str]) -> list[str]:
    """Why ``--fail-on`` fails this diff (empty: it passes)."""
    reasons = []
    replaces = [r for r in diff["risks"] if r["action"] == "replace"]
    deletes = [r for r in diff["risks"] if r["action"] == "delete"]
    if fail_on & {"replace", "risk"} and replaces:
        reasons.append(f"{len(replaces)} stateful resource(s) replaced")
    if fail_on & {"delete", "risk"} and deletes:
        reasons.append(f"{len(deletes)} stateful resource(s) deleted")
    collisions = [r for r in diff["risks"] if r["action"] == "collide"]
    if fail_on & {"risk"} and diff.get("cannot_apply"):
        reasons.append("the apply cannot succeed as written")
    if fail_on & {"risk"} and collisions:
        reasons.append(f"{len(collisions)} Route 53 record(s) created over a name still held")
    outages = [d for d in diff["disruptions"] if d.get("downtime", True)]
    if "downtime" in fail_on and outages:
        reasons.append(f"{len(outages)} change(s) cause downtime or a restart")
    if "policy" in fail_on and diff["policy"]["violations"]:
        reasons.append(f"{len(diff['policy']['violations'])} policy violation(s)")
    return reasons


# ---- markdown -------------------------------------------------------------------------

ACTION_WORDS = {"add": "+ add", "remove": "- remove", "replace": "± replace", "update": "~ update",
                "ignored": "= left as deployed"}


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = text.replace("`", "'")
    return f"`{text}`"


def _pretty(value: Any) -> list[str]:
    """Lines to diff: JSON documents inside strings are parsed first (task definitions,
    IAM policies), so a one-field change shows as one line."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "[") and len(stripped) > 1:
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                return value.splitlines()
        else:
            return value.splitlines()
    return json.dumps(value, indent=2, sort_keys=True).splitlines()


def _is_inline(value: Any) -> bool:
    if isinstance(value, (dict, list)):
        return len(json.dumps(value)) <= INLINE_LIMIT // 2 and not value
    if isinstance(value, str):
        return len(value) <= INLINE_LIMIT and "\n" not in value and value[:1] not in "{["
    return True


def _property_lines(change: dict[str, Any], moved: dict[str, str]) -> list[str]:
    key = change["property"]
    force = " (forces replacement)" if change.get("forces_replacement") else ""
    if change.get("ignored"):
        force = " (in `ignore_changes`: Pulumi leaves it as deployed)"
    if change.get("after_apply"):
        return [f"  - `{key}`: changes at apply, because {_causes(change['because_of'], moved)}"]
    if change.get("secret_changed"):
        return [f"  - `{key}`: secret changed{force}"]
    old, new = change.get("old"), change.get("new")
    if _is_inline(old) and _is_inline(new):
        left = "(none)" if old is None else _code(old)
        right = "(none)" if new is None else _code(new)
        return [f"  - `{key}`: {left} → {right}{force}"]
    body = list(difflib.unified_diff(
        [] if old is None else _pretty(old), [] if new is None else _pretty(new),
        f"{key} (base)", f"{key} (head)", n=2, lineterm="",
    ))  # fmt: skip
    return [f"  - `{key}`{force}:", "", "    ```diff", *("    " + line for line in body),
            "    ```", ""]  # fmt: skip


def _resource_block(change: dict[str, Any], moved: dict[str, str]) -> str:
    head = f"- **{ACTION_WORDS[change['action']]}** `{change['type']}` {change['name']}"
    extra = []
    if change.get("forced_by"):
        extra.append("forced by " + ", ".join(f"`{k}`" for k in change["forced_by"]))
    if change.get("because_of"):
        extra.append(f"because {_causes(change['because_of'], moved)}")
    if extra:
        head += " (" + "; ".join(extra) + ")"
    lines = [head]
    for prop in change["properties"]:
        lines += _property_lines(prop, moved)
    if change["action"] == "add":
        # What `pulumi up` would create, input by input.
        for key, value in sorted(change.get("inputs", {}).items()):
            if _is_inline(value):
                lines.append(f"  - `{key}` = {_code(value)}")
            else:
                lines += [f"  - `{key}` =", "", "    ```json",
                          *("    " + line for line in _pretty(value)), "    ```", ""]
    return "\n".join(lines) + "\n"


def _causes(items: list[str], moved: dict[str, str]) -> str:
    """`` `a` is replaced, `b` is updated``: why something changes at apply. A plan diffed
    before this field existed says "replaced", as it always did."""
    by: dict[str, list[str]] = {}
    for item in items:
        by.setdefault(moved.get(item, "replaced"), []).append(item)
    return " and ".join(f"{_names(group)} {verb}" for verb, group in sorted(by.items()))


def _names(items: list[str]) -> str:
    shown = ", ".join(f"`{i.rsplit('::', 1)[-1]}`" for i in items)
    return f"{shown} {'is' if len(items) == 1 else 'are'}"


def title(diff: dict[str, Any]) -> str:
    """What a diff is of, as a comment names it: `cloud stack `prod``, `VPS profile`."""
    return "VPS profile" if diff["profile"] == "vps" else f"cloud stack `{diff['stack']}`"


def totals(diff: dict[str, Any]) -> dict[str, int]:
    """The summary table's counts: resources by action, stateful risks, rollouts."""
    s = diff["summary"]
    return {"add": s["add"], "change": s["update"], "replace": s["replace"],
            "remove": s["remove"], "risks": len(diff["risks"]),
            "rollouts": sum(bool(d.get("downtime", True))
                            for d in diff["disruptions"])}  # fmt: skip


def cost_cell(diff: dict[str, Any]) -> str:
    """`$2,101.73 → $2,136.63 (+$34.90)`: the monthly cost before and after."""
    c = diff.get("cost")
    if c is None:
        return "—"
    if c.get("still_billing"):
        return f"{usd(c['before'])}, still billing until destroyed"
    delta = ("+" if c["delta"] > 0 else "") + usd(c["delta"])
    return f"{usd(c['before'])} → {usd(c['after'])} ({delta})"


TABLE_HEADER = ("| | add | change | replace | remove | risks | rollouts | monthly cost |\n"
                "|---|---:|---:|---:|---:|---:|---:|---|\n")  # fmt: skip


def table_row(diff: dict[str, Any]) -> str:
    """One row of the summary table, for this diff."""
    t = totals(diff)
    name = title(diff) + (" (stack file removed)" if diff.get("stack_file_removed") else "")
    risks = f"**{t['risks']}** ⚠️" if t["risks"] or diff.get("cannot_apply") else "0"
    cells = [name, *(str(t[k]) for k in ("add", "change", "replace", "remove")), risks,
             str(t["rollouts"]), cost_cell(diff)]  # fmt: skip
    return "| " + " | ".join(cells) + " |\n"


def gate_line(diff: dict[str, Any]) -> str:
    """The `--fail-on` verdict, when the diff was made with one."""
    gate = diff.get("blocking")
    if not gate:
        return ""
    words = ",".join(gate["fail_on"])
    if gate["reasons"]:
        return (f"**⛔ Blocked by the merge gate (`--fail-on {words}`):** "
                + "; ".join(gate["reasons"]) + ".")
    return f"Merge gate (`--fail-on {words}`): passes."


def _lead(diff: dict[str, Any], *, table: bool) -> str:
    """What is never folded or cut: the heading, the summary table, the verdicts (cannot
    apply, the gate, the release) and every stateful risk row."""
    s = diff["summary"]
    lines = [f"### prodstack diff: {title(diff)}", ""]
    if table:
        lines += [TABLE_HEADER + table_row(diff).rstrip("\n"), ""]
    if diff.get("stack_file_removed"):
        lines.append(f"**The stack file is gone; nothing is destroyed.** {diff['text']}")
        if "cost" in diff:
            lines += ["", f"cost: {usd(diff['cost']['before'])} a month keeps billing until "
                      "the stack is destroyed (not a saving)"]
        return "\n".join(lines) + "\n\n"
    ignored = (f", {s['ignored']} changed only in `ignore_changes` properties"
               if s.get("ignored") else "")  # fmt: skip
    facts = []
    if not any(s[k] for k in ("add", "remove", "replace", "update")):
        lines += [f"**No changes** ({s['unchanged']} resources unchanged{ignored}).", ""]
    else:
        facts.append(f"{s['unchanged']} unchanged{ignored}")
    violations = diff["policy"]["violations"]
    if diff["policy"].get("pack"):
        facts.append(f"policy: {len(violations)} violation(s)")
    collisions = sum(r["action"] == "collide" for r in diff["risks"])
    facts.append(f"{len(diff['risks']) - collisions} stateful resource(s) at risk")
    if collisions:
        facts.append(f"{collisions} DNS record collision(s)")
    outages = totals(diff)["rollouts"]
    facts.append(f"{outages} restart(s) or rollout(s)")
    if outages < len(diff["disruptions"]):
        facts.append(f"{len(diff['disruptions']) - outages} in-place change(s) to note")
    if diff.get("outputs"):
        facts.append(f"{len(diff['outputs'])} stack output(s) change")
    lines += [" · ".join(facts), ""]
    if gate_line(diff):
        lines += [gate_line(diff), ""]
    for blocker in diff.get("cannot_apply", ()):
        lines += [f"**⛔ This apply cannot succeed as written.** {blocker['text']} "
                  f"Instead: {blocker['instead']}.", ""]
    release = diff.get("release")
    if release:
        was = f", replacing {release['from']}" if release.get("from") else ""
        if release.get("from") == release["version"] and release.get("digest"):
            was = f", the same version, now pinned by digest {release['digest'][:19]}"
        built = (f"; this checkout's app/ builds {release['checkout_version']}"
                 if release.get("checkout_version") else "")
        lines += [f"**Release: {release['text']}**{was}{built}.", ""]
    rows = []
    for r in diff["risks"]:
        forced = ", ".join(f"`{k}`" for k in r.get("forced_by", ())) or "—"
        if r.get("because_of"):
            forced += f" ({_causes(r['because_of'], diff.get('moved', {}))})"
        rows.append(f"| {r['label']} `{r['name']}` | **{r['action']}** | {forced} | "
                    f"{r['order']} |")  # fmt: skip
    if rows:
        lines += ["#### ⚠️ Stateful resources replaced or deleted", "",
                  "| resource | change | forced by | what happens |", "|---|---|---|---|",
                  *rows, ""]  # fmt: skip
    return "\n".join(lines) + "\n"


def _note_rows(diff: dict[str, Any]) -> list[tuple[str, str]]:
    """(section, row): the downtime, the in-place notes, the outputs and new warnings."""
    rows = []
    for d in diff["disruptions"]:
        if not d.get("downtime", True):
            rows.append(("#### In-place changes without an outage",
                         f"- {d['label']} `{d['name']}` (`{d['property']}` changes): "
                         f"{d['reason']}"))  # fmt: skip
            continue
        if "restore" in d:
            row = f"- {d['reason']}"
        elif "operation" in d:
            row = (f"- {d['operation']}: {d['reason']} (changed: "
                   + ", ".join(f"`{c}`" for c in d["because_of"]) + ")")
        else:
            cause = (f" because {_causes(d['because_of'], diff.get('moved', {}))}"
                     if d.get("because_of") else f" (`{d['property']}` changes)")
            row = f"- {d['label']} `{d['name']}`{cause}: {d['reason']}"
        rows.append(("#### Downtime and restarts", row))
    rows += [("#### Stack outputs", _output_line(o, diff.get("moved", {})))
             for o in diff.get("outputs") or []]  # fmt: skip
    rows += [("#### New warnings", f"- {w}") for w in diff["warnings"]["new"]]
    order = ["#### Downtime and restarts", "#### In-place changes without an outage",
             "#### Stack outputs", "#### New warnings"]  # fmt: skip
    return sorted(rows, key=lambda r: order.index(r[0]))


def _fold(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body.rstrip()}\n\n</details>\n\n"


def _notes_text(rows: list[tuple[str, str]], kept: int) -> str:
    """The first ``kept`` of ``rows`` under their headings, folded under all their counts."""
    if not rows:
        return ""
    lines, current = [], None
    for section, row in rows[:kept]:
        if section != current:
            lines += ([""] if current else []) + [section, ""]
            current = section
        lines.append(row)
    if kept < len(rows):
        lines += ["", f"_{len(rows) - kept} more restart, output or warning row(s) left out "
                  "to fit; `prodstack diff --full FILE` has them all._"]
    counts: dict[str, int] = {}
    for section, _ in rows:
        counts[section] = counts.get(section, 0) + 1
    return _fold(" · ".join(f"{name[5:]}: {n}" for name, n in counts.items()),
                 "\n".join(lines).strip("\n"))


def _changes_text(blocks: list[tuple[str, str]], left_out: list[tuple[str, str]]) -> str:
    if not blocks and not left_out:
        return ""
    body, current = [], None
    for component, block in blocks:
        if component != current:
            body.append(("\n" if current else "") + f"##### {component}\n\n")
            current = component
        body.append(block)
    if left_out:
        chars = sum(len(b) for _, b in left_out)
        body.append(f"\n_{len(left_out)} more changed resource(s) ({chars:,} characters) left "
                    "out to fit one comment; `prodstack diff --full FILE` writes the whole "
                    "diff._\n")
    total = len(blocks) + len(left_out)
    return _fold(f"Changes by component: {total} resource(s)", "".join(body))


def _policy_text(diff: dict[str, Any]) -> str:
    policy = diff["policy"]
    if not policy.get("pack") or not policy["violations"]:
        return ""
    return _fold(f"Policy pack (`{policy['pack']}`) on the head plan: "
                 f"{len(policy['violations'])} violation(s)",
                 "\n".join(f"- {v}" for v in policy["violations"]))  # fmt: skip


def _largest(fits: Any, n: int) -> int | None:
    """The largest k in 0..n with ``fits(k)`` (longer for a larger k), or None."""
    if not fits(0):
        return None
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def render_markdown(diff: dict[str, Any], *, max_chars: int = DEFAULT_MAX_CHARS,
                    table: bool = True) -> str:  # fmt: skip
    """The diff as markdown: the summary table and every stateful risk, never cut; then,
    folded, the restarts and outputs (cut by whole rows) and the changes (cut at a
    resource boundary, never inside one) to fit ``max_chars``. When the summary and the
    risks alone are longer, they are all kept and the rest is left out, said in one line.
    ``table=False`` leaves the one-row table out (a comment has one table for all)."""
    lead, policy = _lead(diff, table=table), _policy_text(diff)
    rows = _note_rows(diff)
    blocks = [(c["component"], _resource_block(c, diff.get("moved", {})))
              for c in diff["changes"]]  # fmt: skip

    def text(n_rows: int, n_blocks: int) -> str:
        return (lead + _notes_text(rows, n_rows)
                + _changes_text(blocks[:n_blocks], blocks[n_blocks:]) + policy)

    def fits(value: str) -> bool:
        return len(value) <= max_chars

    n_blocks = _largest(lambda k: fits(text(len(rows), k)), len(blocks))
    if n_blocks is not None:
        return text(len(rows), n_blocks)
    n_rows = _largest(lambda k: fits(text(k, 0)), len(rows))
    if n_rows is not None:
        return text(n_rows, 0)
    left = len(text(len(rows), len(blocks))) - len(lead)
    return lead + (f"_The summary and the risks alone are over {max_chars:,} characters: "
                   f"they are all kept, and the rest ({left:,} characters: the restarts, "
                   "outputs, changes and policy) is left out; `prodstack diff --full FILE` "
                   "has it._\n" if left else "")


def _output_line(entry: dict[str, Any], moved: dict[str, str]) -> str:
    key = entry["output"]
    if entry.get("after_apply"):
        return f"- `{key}`: changes at apply, because {_causes(entry['because_of'], moved)}"
    if entry.get("secret_changed"):
        verb = {"update": "changed", "add": "added", "remove": "removed"}[entry["action"]]
        return f"- `{key}`: secret {verb}"
    old = "(none)" if entry["action"] == "add" else _code(entry.get("old"))
    new = "(none)" if entry["action"] == "remove" else _code(entry.get("new"))
    return f"- `{key}`: {old} → {new}"
