"""The gate before the db host drops an old password (pyinfra/tasks/rotation.py): open only
when every web host of the inventory confirmed the new fingerprint in this run.

pyinfra's own inventory, state and operation results; only the template operation is
replaced, by one that records its condition so the test can play the execution.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_host, ctx_inventory, ctx_state
from tasks import postgres, rotation
from tasks.config import SettingsError, password_fingerprint, settings_for

from tests.vps.test_templates import render

NEW = "new-redis-password-0123456789"
OLD = "old-redis-password-0123456789"
PG_NEW = "new-postgres-password-0123456789"
PG_OLD = "old-postgres-password-0123456789"


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


def _cfg(data, environ, password: str, *, pg: str = PG_OLD, login: str = "prodstack_a"):
    environ = {**environ, "PRODSTACK_REDIS_PASSWORD": password,
               "PRODSTACK_POSTGRES_PASSWORD": pg}  # fmt: skip
    return replace(settings_for(data, {"web", "db"}, environ=environ), postgres_login=login)


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


# --- PostgreSQL: the old login role, behind the same gate ---------------------------------

# The db host's roles mid-rotation: prodstack_a on the old password, prodstack_b just got
# the new one (what the fact reads before database_finish).
MID_ROTATION = {
    "prodstack": {"login": False, "verifier": None, "member": False, "default_role": False},
    "prodstack_a": {"login": True, "verifier": postgres.scram_verifier(PG_OLD), "member": True,
                    "default_role": True},
    "prodstack_b": {"login": True, "verifier": postgres.scram_verifier(PG_NEW), "member": True,
                    "default_role": True},
}  # fmt: skip


@pytest.fixture
def finish(run, monkeypatch, data, environ):
    """database_finish on the db host, with the db host's roles mid-rotation; returns the
    retiring operation's condition, or None when it plans no operation."""
    sent = []
    monkeypatch.setattr(postgres, "app_roles", lambda cfg: MID_ROTATION)
    monkeypatch.setattr(postgres.server, "shell", lambda **kwargs: sent.append(kwargs))

    def plan():
        with run.on("db"):
            postgres.database_finish(_cfg(data, environ, NEW, pg=PG_NEW, login="prodstack_b"))
        return sent[-1] if sent else None

    return plan


def _new_pg(data, environ):
    return _cfg(data, environ, NEW, pg=PG_NEW, login="prodstack_b")


def test_every_web_host_on_the_new_login_retires_the_old_one(run, data, environ, finish, caplog):
    ops = [_confirm(run, name, _new_pg(data, environ)) for name in ("web1", "web2")]
    op = finish()
    assert op["commands"][0].count("NOLOGIN PASSWORD NULL") == 1
    assert "\\set old0 'prodstack_a'\n" in op["commands"][0]
    for confirmation in ops:
        run.execute(confirmation)
    with caplog.at_level(logging.WARNING):
        assert op["_if"]() is True
    assert "old password" not in caplog.text


def test_a_web_host_left_out_keeps_the_old_login_working(run, data, environ, finish, caplog):
    web1 = _confirm(run, "web1", _new_pg(data, environ))
    op = finish()
    run.execute(web1)
    with caplog.at_level(logging.WARNING):
        assert op["_if"]() is False
    assert "PostgreSQL still accepts the old password: web host(s) web2 did not confirm" in (
        caplog.text
    )


@pytest.mark.parametrize("on", ["the old login role", "the old password"])
def test_a_web_host_on_the_old_login_keeps_it_working(run, data, environ, finish, caplog, on):
    web1 = _confirm(run, "web1", _new_pg(data, environ))
    old = (_cfg(data, environ, NEW, pg=PG_NEW, login="prodstack_a") if on == "the old login role"
           else _cfg(data, environ, NEW, pg=PG_OLD, login="prodstack_b"))  # fmt: skip
    web2 = _confirm(run, "web2", old)
    op = finish()
    run.execute(web1)
    run.execute(web2)
    with caplog.at_level(logging.WARNING):
        assert op["_if"]() is False
    assert "web2" in caplog.text


def test_nothing_to_retire_plans_no_operation(run, data, environ, finish, monkeypatch):
    converged = {**MID_ROTATION, "prodstack_a": {**MID_ROTATION["prodstack_a"], "login": False,
                                                 "verifier": None}}  # fmt: skip
    monkeypatch.setattr(postgres, "app_roles", lambda cfg: converged)
    assert finish() is None


def test_the_recorded_postgres_generation_names_the_login_and_no_password(data, environ):
    cfg = _new_pg(data, environ)
    prints = json.loads(render("credentials.j2.json", cfg))["fingerprints"]
    assert prints["postgres"] == f"prodstack_b:{password_fingerprint(PG_NEW)}"
    assert PG_NEW not in json.dumps(prints)


def test_a_run_without_the_db_host_refuses_a_password_the_db_host_lacks(monkeypatch, data,
                                                                         environ):  # fmt: skip
    """`--limit web1` with a new POSTGRES_PASSWORD: the db host would give it to the other
    login role, but is not in the run; the env file must not get a refused password."""
    inventory = Inventory((["web1", "db"], {}), web=(["web1"], {}), db=(["db"], {}))
    state = State(inventory, Config())
    state.limit_hosts = [inventory.get_host("web1")]
    monkeypatch.setattr(postgres, "app_roles", lambda cfg: MID_ROTATION)
    with _Contexts(state, inventory, inventory.get_host("web1")):
        # On the password the db host has (mid-rotation: prodstack_b's): that login role.
        assert postgres.with_app_login(_new_pg(data, environ)).postgres_login == "prodstack_b"
        assert postgres.with_app_login(
            _cfg(data, environ, NEW, pg=PG_OLD)).postgres_login == "prodstack_a"  # fmt: skip
        converged = {**MID_ROTATION, "prodstack_a": {**MID_ROTATION["prodstack_a"],
                                                     "login": False, "verifier": None}}
        monkeypatch.setattr(postgres, "app_roles", lambda cfg: converged)
        with pytest.raises(SettingsError, match="new to the db host db, which this run leaves"):
            postgres.with_app_login(_cfg(data, environ, NEW, pg="third-password-0123456789"))
        state.limit_hosts = None  # the db host in the run: it gives the password first
        assert postgres.with_app_login(
            _cfg(data, environ, NEW, pg="third-password-0123456789")
        ).postgres_login == "prodstack_a"
