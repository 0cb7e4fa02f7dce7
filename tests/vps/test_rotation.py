"""The gate before the db host drops an old password (pyinfra/tasks/rotation.py): open only
when every web host of the inventory confirmed the new fingerprint in this run.

pyinfra's own inventory, state and operation results; only the template operation is
replaced, by one that records its condition so the test can play the execution.
"""

from __future__ import annotations

import logging

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_host, ctx_inventory, ctx_state
from tasks import rotation
from tasks.config import password_fingerprint, settings_for

from tests.vps.test_templates import render

NEW = "new-redis-password-0123456789"
OLD = "old-redis-password-0123456789"


@pytest.fixture
def run(monkeypatch):
    """A pyinfra run over web1, web2 and db, with the confirm operations recorded."""
    inventory = Inventory((["web1", "web2", "db"], {}), web=(["web1", "web2"], {}),
                          db=(["db"], {}))  # fmt: skip
    state = State(inventory, Config())
    conditions = {}

    def fake_template(**kwargs):
        op = OperationMeta(kwargs["dest"], None)
        conditions[op] = kwargs["_if"]
        return op

    monkeypatch.setattr(rotation, "template", fake_template)

    class Run:
        def __init__(self):
            self.inventory, self.state = inventory, state

        def on(self, name):
            return _Contexts(state, inventory, inventory.get_host(name))

        def execute(self, op, *, success: bool = True):
            """What pyinfra does when it runs the operation: evaluate `_if`, then finish."""
            conditions[op]()
            op.set_complete(success, [], None)

    return Run()


class _Contexts:
    def __init__(self, state, inventory, host):
        self.uses = [ctx_state.use(state), ctx_inventory.use(inventory), ctx_host.use(host)]

    def __enter__(self):
        for use in self.uses:
            use.__enter__()

    def __exit__(self, *exc):
        for use in reversed(self.uses):
            use.__exit__(*exc)


def _cfg(data, environ, password: str):
    environ = {**environ, "PRODSTACK_REDIS_PASSWORD": password}
    return settings_for(data, {"web", "db"}, environ=environ)


def _gate(run, data, environ):
    with run.on("db"):
        cfg = _cfg(data, environ, NEW)
        return rotation.clients_on(cfg, "redis", cfg.redis_password_fingerprint, label="Redis")


def _confirm(run, name, cfg, *, after=lambda: True):
    with run.on(name):
        return rotation.confirm(cfg, after=after)


def test_every_web_host_on_the_new_password_opens_the_gate(run, data, environ, caplog):
    ops = [_confirm(run, name, _cfg(data, environ, NEW)) for name in ("web1", "web2")]
    gate = _gate(run, data, environ)
    for op in ops:
        run.execute(op)
    with caplog.at_level(logging.WARNING):
        assert gate() is True
    assert "old password" not in caplog.text


def test_a_web_host_left_out_with_limit_keeps_the_old_password(run, data, environ, caplog):
    # --limit: web2 is in the inventory, but its deploy code never ran in this run.
    op = _confirm(run, "web1", _cfg(data, environ, NEW))
    gate = _gate(run, data, environ)
    run.execute(op)
    with caplog.at_level(logging.WARNING):
        assert gate() is False
    assert "web host(s) web2 did not confirm" in caplog.text
    assert "web1" not in caplog.text.split("web host(s)")[1].split("did not")[0]


@pytest.mark.parametrize(
    "how", ["failed before confirming", "its confirmation failed", "its rollout was skipped",
            "it runs on the old secrets"],
)  # fmt: skip
def test_a_web_host_not_confirmed_keeps_the_old_password(run, data, environ, caplog, how):
    web1 = _confirm(run, "web1", _cfg(data, environ, NEW))
    web2 = _confirm(
        run, "web2", _cfg(data, environ, OLD if how == "it runs on the old secrets" else NEW),
        after=(lambda: False) if how == "its rollout was skipped" else (lambda: True),
    )  # fmt: skip
    gate = _gate(run, data, environ)
    run.execute(web1)
    if how != "failed before confirming":  # a failed host runs none of its later operations
        run.execute(web2, success=how != "its confirmation failed")
    with caplog.at_level(logging.WARNING):
        assert gate() is False
    assert "web2" in caplog.text


def test_a_single_host_confirms_itself(monkeypatch, data, environ):
    inventory = Inventory((["vps"], {}))
    state = State(inventory, Config())
    conditions = []

    def fake_template(**kwargs):
        conditions.append(kwargs["_if"])
        return OperationMeta(kwargs["dest"], None)

    monkeypatch.setattr(rotation, "template", fake_template)
    cfg = _cfg(data, environ, NEW)
    # No `web` group: the host is both (tasks/config.py), and confirms for itself.
    with _Contexts(state, inventory, inventory.get_host("vps")):
        op = rotation.confirm(cfg, after=lambda: True)
        gate = rotation.clients_on(cfg, "redis", cfg.redis_password_fingerprint, label="Redis")
    assert gate() is False  # its confirmation has not run yet
    assert conditions[0]() is True
    op.set_complete(True, [], None)
    assert gate() is True


def test_the_recorded_fingerprint_reveals_no_password(data, environ):
    cfg = _cfg(data, environ, NEW)
    text = render("credentials.j2.json", cfg)
    assert NEW not in text and cfg.redis_password_fingerprint in text
    assert password_fingerprint(NEW) != password_fingerprint(OLD)
    assert password_fingerprint(NEW) == cfg.redis_password_fingerprint
