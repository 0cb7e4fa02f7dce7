"""`prodstack plan --profile vps`: what `pyinfra INVENTORY deploy.py` would do to a host.

The plan is not a re-implementation of the deploy. It runs the real `pyinfra/deploy.py`
of a checkout through pyinfra's own Python API (Inventory, State, `load_deploy_file`,
`run_ops`) against one host in groups `web` and `db`, over a subclass of pyinfra's
`@fake` connector that runs nothing. The operations really execute, so every `_if=`
condition (restart on change) is evaluated as in a real run, and every file is the
exact text pyinfra would upload.

The host is the size's **reference host** (`REFERENCE_HOSTS`), freshly installed: no
packages, files or users, ufw inactive, no image loaded. Its hardware and distribution
can be overridden with `--data host_memory_mb=8192`, `host_cpus=4`,
`host_distribution=ubuntu-24.04` and `host_ipv6=false`.

No secret reaches the deploy or the plan: deterministic placeholders are given to
`tasks/config.py` through its own PRODSTACK_<NAME> environment mechanism, and every place
a placeholder surfaces is replaced by `[secret:NAME]`. A secret the operator has set (in
the environment or the secrets file, the deploy's own order) is read only for a version,
`[secret:NAME@VERSION]` (`planfile.value_version`), so a changed secret shows as a change.
Credentials given as data are refused before anything runs (`tasks/config.py`,
`check_no_credentials`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import io
import json
import os
import re
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from prodstack import host_archive, planfile, profile, sizes
from prodstack.errors import UsageError

# Hardware of the host each size is meant for (the size comments in
# pyinfra/tasks/config.py and the README's VPS column), on Debian 12.
REFERENCE_HOSTS: dict[str, dict[str, Any]] = {
    name: {"host_cpus": size.host_cpus, "host_memory_mb": size.host_memory_mb}
    for name, size in sizes.VPS.items()
}
REFERENCE_DEFAULTS: dict[str, Any] = {"host_distribution": "debian-12", "host_ipv6": True}
HOST_KEYS = ("host_cpus", "host_memory_mb", "host_distribution", "host_ipv6")
DISTRIBUTION_PATTERN = re.compile(r"^(debian|ubuntu)-(\d{1,2})(?:\.(\d{1,2}))?$")
DISTRIBUTION_NAMES = {"debian": "Debian", "ubuntu": "Ubuntu"}


class ReferenceHost(BaseModel):
    """The host a plan is made for (`--data host_*`): its facts, checked as the profile's
    keys are, every problem at once."""

    model_config = ConfigDict(extra="ignore", strict=True)

    host_cpus: int | None = Field(None, ge=1)
    host_memory_mb: int | None = Field(None, ge=1)
    host_distribution: str = Field(REFERENCE_DEFAULTS["host_distribution"],
                                   pattern=DISTRIBUTION_PATTERN.pattern)  # fmt: skip
    host_ipv6: bool = REFERENCE_DEFAULTS["host_ipv6"]

    ALLOWED: ClassVar[dict[str, str]] = {
        "host_cpus": "a whole number >= 1",
        "host_memory_mb": "a whole number >= 1",
        "host_distribution": "a distribution such as debian-12 or ubuntu-24.04",
        "host_ipv6": "true or false",
    }


def _refusal(problems: list[profile.Problem]) -> UsageError:
    """The plan's exit-2 line: every problem on one line, as the cloud's plan prints them."""
    return UsageError("invalid configuration: " + "; ".join(map(str, problems)))

# The deploy user's key when none is given: the plan must not read ~/.ssh.
# A well-formed ed25519 key (the deploy checks keys with ssh-keygen) that no one holds.
PLACEHOLDER_PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLANPLACEHOLDERKEYAAAAAAAAAAAAAAAAAAAAAAAAA"
    " prodstack-plan"
)
IMAGE_REPOSITORY = "prodstack-api"
TARBALL_LABEL = "(image tarball: docker save, not run by the planner)"

# Operations that manage one named thing: its resource type, the keyword argument that
# names it, and the keyword arguments recorded as its inputs (with pyinfra's defaults).
NAMED_RESOURCES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "files.directory": ("directory", "path",
                        {"mode": None, "user": None, "group": None, "present": True}),
    "files.link": ("link", "path", {"target": None, "present": True}),
    "server.user": ("user", "user",
                    {"shell": None, "groups": None, "public_keys": None, "create_home": None}),
    "postgres.role": ("postgres_role", "role", {"login": None, "password": None}),
    "postgres.database": ("postgres_database", "database", {"owner": None, "encoding": None}),
}  # fmt: skip

# Data the planner itself sets on the host; never user input, never in the plan.
_INTERNAL_DATA = ("fake_delay", "fake_delay_jitter", "fake_responses")

# One plan at a time per process: a plan swaps modules in sys.modules, sys.path and
# PRODSTACK_* variables in os.environ for its duration.
_LOCK = threading.Lock()


def _pyinfra_cli(name: str):
    """`pyinfra_cli.<name>` without running `pyinfra_cli/__init__.py`.

    That file calls gevent's `monkey.patch_all()` for the whole process, which the pyinfra
    CLI needs for SSH but which hangs Pulumi's mocks (the cloud plan) in the same process.
    The planner runs nothing over the network, so pyinfra's API works unpatched.
    """
    module = f"pyinfra_cli.{name}"
    if module in sys.modules or "pyinfra_cli" in sys.modules:
        return importlib.import_module(module)
    spec = importlib.util.find_spec("pyinfra_cli")
    package = importlib.util.module_from_spec(spec)  # created, not executed
    sys.modules["pyinfra_cli"] = package
    try:
        return importlib.import_module(module)
    finally:
        # A later `import pyinfra_cli` runs the real package (and its patching) as usual.
        if sys.modules.get("pyinfra_cli") is package:
            del sys.modules["pyinfra_cli"]


def parse_data(items: list[str]) -> dict[str, Any]:
    """`--data key=value` strings, with values parsed exactly as `pyinfra --data` does."""
    parse_cli_arg = _pyinfra_cli("util").parse_cli_arg

    data: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--data {item!r}: expected key=value, e.g. --data size=small")
        data[key.strip()] = parse_cli_arg(value)
    return data


def placeholder_secret(name: str, version: str | None = None) -> str:
    """A deterministic stand-in for a secret, valid for tasks/config.py's SECRET_PATTERN;
    with the version of the secret it stands for, when one is set."""
    base = f"prodstack-plan-placeholder-{name.lower().replace('_', '-')}"
    return f"{base}-{version}" if version else base


# Secrets that are URLs: their stand-in keeps the real scheme and host, which the deploy
# reads (a hooks.slack.com webhook gets Alertmanager's Slack format); the path, the query
# and any user:password@ never reach it.
URL_SECRETS = ("ALERT_WEBHOOK_URL", "ALERT_HEARTBEAT_URL")


def plan_vps(overrides: dict[str, Any], *, root: Path) -> dict:
    """The plan of the VPS deploy in checkout `root`, for group data + `overrides`."""
    root = Path(root).resolve()
    pyinfra_dir = root / "pyinfra"
    deploy_file = pyinfra_dir / "deploy.py"
    if not deploy_file.is_file():
        raise UsageError(f"{root}: no pyinfra/deploy.py in this checkout")
    with _LOCK, _tasks_from(pyinfra_dir), tempfile.TemporaryDirectory() as scratch:
        return _Planner(root, pyinfra_dir, Path(scratch)).plan(dict(overrides))


# --- Isolation ---------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_deploy_warnings() -> Iterator[None]:
    """The deploy's warnings to its operator (such as "no alert receiver") are for a real
    run; a plan's stderr carries only its own errors."""
    import logging

    pyinfra_logger = logging.getLogger("pyinfra")
    handler = logging.NullHandler()
    pyinfra_logger.addHandler(handler)
    try:
        yield
    finally:
        pyinfra_logger.removeHandler(handler)


@contextlib.contextmanager
def _tasks_from(pyinfra_dir: Path) -> Iterator[None]:
    """Import `tasks.*` from this checkout; put back whatever was imported before."""

    def ours(name: str) -> bool:
        return name == "tasks" or name.startswith("tasks.")

    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    saved_path = list(sys.path)
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(pyinfra_dir))
    try:
        yield
    finally:
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
        sys.path[:] = saved_path


@contextlib.contextmanager
def _environ(values: dict[str, str], drop: tuple[str, ...]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in (*values, *drop)}
    os.environ.update(values)
    for key in drop:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- The run -----------------------------------------------------------------------------


class _Planner:
    def __init__(self, root: Path, pyinfra_dir: Path, scratch: Path) -> None:
        self.root = root
        self.pyinfra_dir = pyinfra_dir
        self.scratch = scratch
        self.facts: dict[str, Any] = {}
        # Problems found before the deploy's own checks (the reference host, secrets),
        # reported with them.
        self.problems: list[profile.Problem] = []
        self.uploads: dict[str, list[tuple[str, Any]]] = {}  # op hash -> commands
        self.evaluating: set | None = None  # OperationMetas read while an `_if` runs
        self.forced: bool | None = None  # what did_change() answers while settling triggers
        self.deploy_names: set[str] = set()
        self.tarballs: set[str] = set()  # stand-ins for `docker save` output, by file name

    # The steps, in order.
    def plan(self, overrides: dict[str, Any]) -> dict:
        from pyinfra.api import State
        from pyinfra.context import ctx_state

        # The state exists before its inventory, as in the CLI: group data files run with
        # it in context.
        self.state = State()
        with ctx_state.use(self.state):
            return self._plan(overrides)

    def _plan(self, overrides: dict[str, Any]) -> dict:
        import tasks.config as config

        group_data = self._group_data()
        data = {**group_data["all"], **group_data["web"], **group_data["db"], **overrides}
        try:
            # First: a credential in data is refused before it is echoed anywhere.
            config.check_no_credentials(data)
        except config.SettingsError as error:
            raise _refusal(list(error.problems)) from None
        reference = self._reference_host(data)
        self.secrets, self.labels = self._secrets(data, config)
        # An unknown key goes on to the deploy, which names it with the closest known one.
        host_data = {k: v for k, v in overrides.items() if k not in HOST_KEYS}
        host_data.update(
            # The secrets file is never read: the environment wins, and this path is empty.
            secrets_file=os.devnull,
            deploy_user_public_keys=data.get("deploy_user_public_keys") or [PLACEHOLDER_PUBLIC_KEY],
            image=data.get("image") or self._placeholder_image(),
            fake_delay=0,
            fake_delay_jitter=0,
        )
        environ = {f"PRODSTACK_{name}": value for name, value in self.secrets.items()}
        unset = tuple(f"PRODSTACK_{n}" for n in config.SECRET_NAMES if n not in self.secrets)
        with (
            _environ(environ, drop=("PRODSTACK_IMAGE", *unset)),
            self._did_change_recorder(),
            _quiet_deploy_warnings(),
        ):
            state, host = self._state(group_data, host_data, config)
            cfg = self._run(state, host, config)
            ops = self._operations(state, host)
            postgres = self._postgres_version(state, host, cfg)
        plan = planfile.new_plan("vps", "vps")
        plan["settings"] = {**_public_settings(data), **reference}
        plan["operations"] = ops
        plan["resources"] = self._resources(ops, cfg, reference, postgres)
        return self._redact(plan)

    def _group_data(self) -> dict[str, dict[str, Any]]:
        # pyinfra's own group-data loader: the same keys `pyinfra inventory.py deploy.py`
        # sees (module imports and dunders left out).
        _get_group_data = _pyinfra_cli("inventory")._get_group_data
        PYTHON_CODES = _pyinfra_cli("util").PYTHON_CODES

        folder = self.pyinfra_dir / "group_data"
        for path in folder.glob("*.py"):
            PYTHON_CODES.pop(str(path), None)  # a checkout's files may have changed
        loaded = _get_group_data(str(folder))
        return {group: dict(loaded.get(group, {})) for group in ("all", "web", "db")}

    def _secrets(self, data: dict[str, Any], config) -> tuple[dict[str, str], dict[str, str]]:
        """A stand-in for every secret the deploy may read, and its label in the plan.

        The secrets the deploy needs always get one (a plan needs no secrets file), so do
        those read only for a feature (SMTP, Grafana). A URL secret gets one only when it is
        set: whether it is changes the routing. A secret that is set gets a version."""
        given: dict[str, str | None] = {}
        for name in config.SECRET_NAMES:
            try:
                read = config.secret_url if name in URL_SECRETS else config.optional_secret
                given[name] = read(data, name, os.environ)
            except config.SettingsError as error:
                self.problems.extend(error.problems)
                given[name] = None
        secrets, labels = {}, {}
        for name, value in given.items():
            if name in URL_SECRETS and not value:
                continue
            version = planfile.value_version(name, value) if value else None
            secrets[name] = placeholder_secret(name, version)
            labels[name] = f"{name}@{version}" if version else name
            if name in URL_SECRETS:
                url = urlsplit(value)
                if url.scheme in ("http", "https") and url.hostname:
                    port = f":{url.port}" if _port(url) else ""
                    secrets[name] = f"{url.scheme}://{url.hostname}{port}/{secrets[name]}"
        return secrets, labels

    def _reference_host(self, data: dict[str, Any]) -> dict[str, Any]:
        """The reference host's facts: the size's (none for an unknown size, which the deploy
        names), with `--data host_*` over them; a value with a problem keeps the size's."""
        reference = {**REFERENCE_DEFAULTS, **REFERENCE_HOSTS.get(data.get("size"), {})}
        given = {k: data[k] for k in HOST_KEYS if k in data}
        _, bad = profile.validated(ReferenceHost, {**reference, **given})
        self.problems.extend(profile.Problem(k, given[k], ReferenceHost.ALLOWED[k]) for k in bad)
        reference.update({k: v for k, v in given.items() if k not in bad})
        distribution = reference["host_distribution"]
        match = DISTRIBUTION_PATTERN.match(str(distribution))
        assert match, distribution  # checked above, or the default
        name, major, minor = match.groups()
        self.facts = {
            "MemTotalMb": reference.get("host_memory_mb"),
            "Cpus": reference.get("host_cpus"),
            "LinuxDistribution": {
                "name": DISTRIBUTION_NAMES[name],
                "major": int(major),
                "minor": int(minor) if minor else None,
                "release_meta": {"ID": name, "VERSION_ID": match.group(0).split("-", 1)[1]},
            },
            "Ipv6Enabled": reference["host_ipv6"],
            # A fresh host: nothing installed, ufw off, no image, no release, no role.
            "DebPackages": {},
            "UfwStatus": {"active": False, "defaults": "", "rules": []},
            "DockerImageId": None,
            "ReleaseStatus": "not installed",
            "PostgresAppRoles": {},
        }
        return reference

    def _placeholder_image(self) -> str:
        # A digest of the files Docker sends from app/ (the cloud profile's hash), so a
        # change under app/ shows up as a new image and a rolling deploy.
        from components.registry import context_hash

        return f"{IMAGE_REPOSITORY}:{context_hash(self.root / 'app')}"

    def _state(self, group_data: dict, host_data: dict, config):
        from pyinfra.api import Config, Inventory
        from pyinfra.connectors.fake import FakeConnector

        planner = self

        class PlanConnector(FakeConnector):
            """@fake, recording what each operation sends to the host (not its facts)."""

            def run_shell_command(
                self, command, print_output=False, print_input=False, **arguments
            ):
                op_hash = self.host.executing_op_hash
                if op_hash and not planner.in_fact:
                    raw = command if isinstance(command, str) else command.get_raw_value()
                    planner.uploads.setdefault(op_hash, []).append(("shell", raw))
                return super().run_shell_command(command, print_output, print_input, **arguments)

            def put_file(
                self,
                filename_or_io,
                remote_filename,
                remote_temp_filename=None,
                print_output=False,
                print_input=False,
                **arguments,
            ):
                op_hash = self.host.executing_op_hash
                planner.uploads.setdefault(op_hash, []).append(
                    ("upload", (remote_filename, _read_local(filename_or_io)))
                )
                return super().put_file(
                    filename_or_io,
                    remote_filename,
                    remote_temp_filename,
                    print_output,
                    print_input,
                    **arguments,
                )

        inventory = Inventory(
            (["@fake"], group_data["all"]),
            override_data=host_data,
            web=(["@fake"], group_data["web"]),
            db=(["@fake"], group_data["db"]),
        )
        (host,) = list(inventory)
        host.connector_cls = PlanConnector
        state = self.state
        state.init(inventory, Config())
        state.cwd = str(self.pyinfra_dir)
        self.in_fact = False
        real_get_fact = host.get_fact

        def get_fact(cls, *args, **kwargs):
            # Facts the reference host states; everything else is what @fake answers
            # for a fresh host (each fact's default).
            if cls.__name__ in self.facts and cls.__module__ in (
                "tasks.facts",
                "pyinfra.facts.hardware",
                "pyinfra.facts.server",
                "pyinfra.facts.deb",
            ):
                return _copy(self.facts[cls.__name__])
            self.in_fact = True
            try:
                return real_get_fact(cls, *args, **kwargs)
            finally:
                self.in_fact = False

        host.get_fact = get_fact
        real_deploy = host.deploy

        def deploy(*args, **kwargs):
            # The @deploy names, to tell them from operation names in "Deploy | op".
            self.deploy_names.add(kwargs["name"] if "name" in kwargs else args[0])
            return real_deploy(*args, **kwargs)

        host.deploy = deploy
        return state, host

    def _run(self, state, host, config):
        import tasks.api
        from pyinfra.api import util as pyinfra_util
        from pyinfra.api.connect import connect_all
        from pyinfra.api.operations import run_ops
        from pyinfra.api.state import StateStage
        from pyinfra.context import ctx_config, ctx_inventory, ctx_state

        cli_util = _pyinfra_cli("util")
        PYTHON_CODES, load_deploy_file = cli_util.PYTHON_CODES, cli_util.load_deploy_file

        # The image is never built or saved here: `image` is always set (above), and the
        # tarball that would be shipped is an empty stand-in, so `docker save` never runs
        # while the shipping operation still appears in the plan.
        def image_tarball(image: str) -> Path:
            path = self.scratch / (re.sub(r"[^A-Za-z0-9_.-]", "_", image) + ".tar.gz")
            path.touch()
            self.tarballs.add(path.name)
            return path

        tasks.api.image_tarball = image_tarball
        # Who deploys and from which commit go into the host's release history, not the
        # plan: no git process, the same plan from any checkout of the same tree.
        tasks.api.git_revision = lambda directory=None: None
        tasks.api.operator = lambda: "planner"
        deploy_file = str(self.pyinfra_dir / "deploy.py")
        # pyinfra caches compiled deploy files, templates and file digests by path for the
        # life of the process; a checkout's files may have changed since the last plan.
        PYTHON_CODES.pop(deploy_file, None)
        for cache in (pyinfra_util.TEMPLATES, pyinfra_util.FILE_SHAS):
            for key in [k for k in cache if str(k).startswith(str(self.pyinfra_dir))]:
                del cache[key]
        with ctx_state.use(state), ctx_inventory.use(state.inventory), ctx_config.use(state.config):
            state.set_stage(StateStage.Connect)
            connect_all(state)
            state.set_stage(StateStage.Prepare)
            try:
                load_deploy_file(state, deploy_file)
            except config.SettingsError as error:
                if error.problems or self.problems:
                    raise _refusal([*self.problems, *error.problems]) from None
                raise UsageError(str(error)) from None
            if self.problems:
                raise _refusal(self.problems)
            self._watch_conditions(state, host)
            state.set_stage(StateStage.Execute)
            run_ops(state)
            self._settle_triggers()
        if state.failed_hosts:
            raise RuntimeError("the planned deploy failed against the reference host")
        return config.settings_for(host.data.dict(), set(host.groups))

    # --- Triggers: which operations' did_change() an `_if` consulted ----------------------

    @contextlib.contextmanager
    def _did_change_recorder(self) -> Iterator[None]:
        from pyinfra.api.operation import OperationMeta

        original = OperationMeta.__dict__["did_change"]
        planner = self

        # Patched on the class for the duration of the plan only: deploy code binds
        # `op.did_change` while it is loaded, before any instance could be wrapped.
        def did_change(meta) -> bool:
            if planner.evaluating is not None:
                planner.evaluating.add(meta)
                if planner.forced is not None:
                    return planner.forced
            return original(meta)

        OperationMeta.did_change = did_change
        try:
            yield
        finally:
            OperationMeta.did_change = original

    def _watch_conditions(self, state, host) -> None:
        self.triggers: dict[str, list] = {}
        self.conditions: dict[str, list] = {}
        for op_hash in state.get_op_order():
            op_data = state.get_op_data_for_host(host, op_hash)
            condition = op_data.global_arguments.get("_if")
            if condition is None:
                continue
            conditions = condition if isinstance(condition, list) else [condition]
            self.conditions[op_hash] = conditions
            seen = self.triggers.setdefault(op_hash, [])

            def watched(check, seen=seen):
                def run() -> bool:
                    self.evaluating = set()
                    try:
                        return check()
                    finally:
                        seen.extend(m for m in self.evaluating if m not in seen)
                        self.evaluating = None

                return run

            wrapped = [watched(check) for check in conditions]
            op_data.global_arguments["_if"] = wrapped if isinstance(condition, list) else wrapped[0]

    def _settle_triggers(self) -> None:
        """On a fresh host `any(...)` stops at the first changed operation, and `a and not b`
        reads `b` only when `a` changed. Evaluating each condition once more as if nothing
        had changed reads the rest, so a diff sees every operation a restart depends on."""
        self.forced = False
        try:
            for op_hash, conditions in self.conditions.items():
                seen = self.triggers[op_hash]
                for check in conditions:
                    self.evaluating = set()
                    try:
                        check()
                    finally:
                        seen.extend(m for m in self.evaluating if m not in seen)
                        self.evaluating = None
        finally:
            self.forced = None

    # --- Recording ---------------------------------------------------------------------------

    def _operations(self, state, host) -> list[dict]:
        from pyinfra.api.operation import get_operation_name_from_func

        order = state.get_op_order()
        metas = {id(state.get_op_data_for_host(host, h).operation_meta): h for h in order}
        names: dict[str, str] = {}
        ops = []
        for op_hash in order:
            op_data = state.get_op_data_for_host(host, op_hash)
            closure = inspect.getclosurevars(op_data.command_generator).nonlocals
            func, kwargs = closure["func"], dict(closure["kwargs"])
            (full_name,) = state.get_op_meta(op_hash).names
            parts, component = full_name.split(" | "), ""
            while len(parts) > 1 and parts[0] in self.deploy_names:
                component = parts.pop(0)  # the innermost @deploy the operation ran under
            name = " | ".join(parts)
            if name in names.values():
                name = f"{name} ({component})"
            names[op_hash] = name
            sent = self.uploads.get(op_hash, [])
            ops.append(
                {
                    "hash": op_hash,
                    "name": name,
                    "component": component or "deploy.py",
                    "operation": get_operation_name_from_func(func),
                    "kwargs": {
                        k: v
                        for k, v in ((k, self._json(v)) for k, v in kwargs.items())
                        if v is not _DROP
                    },
                    "commands": [_command_text(kind, value) for kind, value in sent],
                    "uploads": {
                        dest: content
                        for kind, (dest, content) in ((k, v) for k, v in sent if k == "upload")
                    },
                    "changed": op_data.operation_meta.did_change(),
                    "trigger_metas": self.triggers.get(op_hash, []),
                }
            )
        for op in ops:
            op["triggers"] = sorted(
                names[metas[id(m)]] for m in op.pop("trigger_metas") if id(m) in metas
            )
        return ops

    def _postgres_version(self, state, host, cfg) -> str | None:
        if not cfg.is_db:
            return None
        import tasks.postgres
        from pyinfra.context import ctx_host, ctx_state

        with ctx_state.use(state), ctx_host.use(host):
            return tasks.postgres.postgres_version(cfg)

    def _json(self, value: Any) -> Any:
        """JSON-safe kwargs: callables, Settings objects and file handles are left out (what
        they stand for is in the commands and the rendered files)."""
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, (str, Path)):
            return self._path_text(str(value))
        if isinstance(value, dict):
            items = ((str(k), self._json(v)) for k, v in value.items())
            return {k: v for k, v in items if v is not _DROP}
        if isinstance(value, (list, tuple)):
            return [v for v in (self._json(v) for v in value) if v is not _DROP]
        return _DROP

    def _path_text(self, text: str) -> str:
        text = text.replace(str(self.scratch) + "/", "").replace(str(self.scratch), "")
        # The host tools' archive is built into a temporary folder named by its digest.
        text = text.replace(str(host_archive.built().parent) + "/", "")
        return text.replace(str(self.root) + "/", "").replace(str(self.root), ".")

    def _resources(self, ops: list[dict], cfg, reference: dict, postgres: str | None) -> list:
        from tasks.facts import RELEASE
        from tasks.firewall import wanted_rules

        resources: dict[str, dict] = {}

        def add(kind: str, rid: str, name: str, component: str, inputs: dict) -> str:
            existing = resources.get(rid)
            if existing:
                existing["inputs"].update({k: v for k, v in inputs.items() if v is not None})
            else:
                resources[rid] = {
                    "id": rid,
                    "type": f"vps:{kind}",
                    "name": name,
                    "component": component,
                    "parent": None,
                    "dependencies": [],
                    "inputs": inputs,
                    "options": {},
                }
            return rid

        add(
            "host",
            "host:reference",
            "reference",
            "Reference host",
            {**reference, "fresh": True, "postgres_version": postgres},
        )
        tarball = None
        for op in ops:
            kind, kwargs, writes = op["operation"], op["kwargs"], []
            component = op["component"]
            effects = {"restart": [], "reload": [], "rolling_deploy": False}
            if kind in ("files.template", "files.put"):
                dest = kwargs.get("dest")
                src = str(kwargs.get("src", ""))
                if src in self.tarballs:
                    tarball = src
                    kwargs["src"] = TARBALL_LABEL
                else:
                    content = op["uploads"].get(dest)
                    if cfg.tls_key_file and src == self._path_text(str(cfg.tls_key_file)):
                        content = planfile.secret_marker("tls_key_file")  # a private key
                    inputs = {
                        "content": content,
                        "mode": str(kwargs.get("mode")) if kwargs.get("mode") else None,
                        "user": kwargs.get("user"),
                        "group": kwargs.get("group"),
                    }
                    field = "template" if kind == "files.template" else "source"
                    inputs[field] = Path(src).name
                    writes.append(add("file", f"file:{dest}", dest, component, inputs))
            elif kind in NAMED_RESOURCES:
                type_, key, fields = NAMED_RESOURCES[kind]
                name = kwargs[key]
                inputs = {field: kwargs.get(field, default) for field, default in fields.items()}
                writes.append(add(type_, f"{type_}:{name}", name, component, inputs))
            elif kind == "apt.packages":
                for package in kwargs.get("packages", []):
                    writes.append(
                        add(
                            "package",
                            f"package:{package}",
                            package,
                            component,
                            {"present": kwargs.get("present", True), "manager": "apt"},
                        )
                    )
            elif kind == "systemd.service":
                unit = kwargs["service"]
                if kwargs.get("running") or kwargs.get("enabled"):
                    writes.append(
                        add(
                            "service",
                            f"service:{unit}",
                            unit,
                            component,
                            {"running": kwargs.get("running"), "enabled": kwargs.get("enabled")},
                        )
                    )
                if kwargs.get("restarted"):
                    effects["restart"].append(unit)
                if kwargs.get("reloaded"):
                    effects["reload"].append(unit)
            elif kind == "docker.network":
                network = kwargs["network"]
                writes.append(
                    add(
                        "docker_network",
                        f"docker_network:{network}",
                        network,
                        component,
                        {k: v for k, v in kwargs.items() if k != "network"},
                    )
                )
            elif kind == "server.shell":
                commands = [str(c) for c in kwargs.get("commands", [])]
                if any(c.startswith(f"{RELEASE} deploy ") for c in commands):
                    effects["rolling_deploy"] = True
                    writes.append("api:replicas")
                if any(c.startswith("ufw ") for c in commands):
                    writes.extend(f"firewall:{args}" for args, _ in wanted_rules(cfg))
            op["writes"] = writes
            op["effects"] = effects

        for args, line in wanted_rules(cfg):
            add("firewall", f"firewall:{args}", args, "Firewall", {"rule": line})
        if postgres:
            add(
                "postgres_cluster",
                "postgres:main",
                "main",
                "PostgreSQL",
                {"version": postgres, "data_directory": f"/var/lib/postgresql/{postgres}/main"},
            )
        release = resources.get("file:/etc/prodstack/release.json")
        if release and release["inputs"].get("content"):
            settings = json.loads(release["inputs"]["content"])
            add(
                "api_replicas",
                "api:replicas",
                "api",
                "API service",
                {
                    "image": cfg.image,
                    "replicas": settings["replicas"],
                    "ports": [settings["port_base"] + i for i in range(settings["replicas"])],
                    "spare_ports": [
                        settings["spare_port_base"] + i for i in range(settings["replicas"])
                    ],
                    "memory_mb": settings["memory_mb"],
                    "cpus": settings["cpus"],
                    "image_delivery": "pull" if cfg.image_pull else "ssh",
                    **({"image_tarball": tarball} if tarball else {}),
                },
            )
        for op in ops:
            op["writes"] = [w for w in op["writes"] if w in resources]
            del op["uploads"], op["hash"]
        return list(resources.values())

    # --- Secrets -----------------------------------------------------------------------------

    def _redact(self, plan: dict) -> dict:
        from tasks.postgres import scram_matches

        def verifier(match: re.Match) -> str:
            # The role's password travels as a SCRAM verifier with a fresh salt: shown as the
            # secret it was made from, so plans stay byte-identical.
            for name, value in self.secrets.items():
                if scram_matches(match.group(0), value):
                    return planfile.secret_marker(self.labels[name])
            return match.group(0)

        replacements = []
        for name, value in self.secrets.items():
            marker = planfile.secret_marker(self.labels[name])
            # A URL's stand-in is redacted whole, and its placeholder part on its own too.
            for part in {value, value.rsplit("/", 1)[-1]}:
                for form in {part, quote(part, safe=""), quote(part)}:
                    replacements.append((form, marker))
        replacements.sort(key=lambda pair: -len(pair[0]))

        def scrub(value: str) -> str:
            value = _SCRAM_VERIFIER.sub(verifier, value)
            for form, marker in replacements:
                value = value.replace(form, marker)
            return value

        return planfile.map_strings(planfile.normalise(plan), scrub)


_DROP = object()
_SCRAM_VERIFIER = re.compile(r"SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+")


def _port(url) -> int | None:
    try:
        return url.port
    except ValueError:
        return None  # tasks/config.py refuses the URL, without echoing it


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _read_local(source: Any) -> str | None:
    """The text pyinfra uploads: a rendered template (file object) or a local file."""
    if hasattr(source, "read"):
        position = source.tell()
        source.seek(0)
        content = source.read()
        source.seek(position)
    else:
        path = Path(source)
        if path.stat().st_size == 0 and path.name.endswith(".tar.gz"):
            return None  # the image tarball stand-in
        content = path.read_bytes()
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            return _describe_binary(content)
    return content


def _describe_binary(content: bytes) -> str:
    """A binary upload as the plan shows it: for an archive (the host tools' zipapp) each
    member's name, size and digest, so a diff names the tool that changed."""
    lines = [f"binary: {len(content)} bytes, sha256 {hashlib.sha256(content).hexdigest()}"]
    if zipfile.is_zipfile(io.BytesIO(content)):
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            for info in archive.infolist():
                digest = hashlib.sha256(archive.read(info)).hexdigest()[:16]
                lines.append(f"{info.filename}  {info.file_size} bytes  sha256 {digest}")
    return "\n".join(lines) + "\n"


def _command_text(kind: str, value: Any) -> str:
    if kind == "upload":
        return f"upload {value[0]}"
    return value


def _public_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The effective data as the plan shows it: passwords given as data are secrets."""
    settings = {}
    for key, value in sorted(data.items()):
        if key in _INTERNAL_DATA:
            continue
        if "password" in key and value:
            value = planfile.secret_marker(key)
        settings[key] = value
    return settings


__all__ = ["REFERENCE_HOSTS", "parse_data", "plan_vps", "placeholder_secret"]
