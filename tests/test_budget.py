"""One connection-budget formula (prodstack/budget.py) behind the cloud's check, the VPS
deploy's check and `prodstack choose`."""

from __future__ import annotations

from app.core.config import INT_SETTINGS
from prodstack import budget
from stacks.config import DEPLOY_SURGE, MIGRATE_CONNECTIONS, connection_budget


def test_peak_is_live_pools_plus_direct_clients():
    assert budget.peak(alive_replicas=6, per_replica=10, direct=4) == 64


def test_the_cloud_budget_is_the_formula_at_twice_the_ceiling():
    found = connection_budget("db.t4g.micro", max_replicas=3, web_concurrency=2, db_pool_max=5)
    assert found["peak"] == budget.peak(alive_replicas=3 * DEPLOY_SURGE, per_replica=10,
                                        direct=MIGRATE_CONNECTIONS)  # fmt: skip


def test_the_vps_budget_counts_each_hosts_deploy_and_the_hosts_clients():
    found = budget.vps_budget([(3, "rolling"), (2, "blue_green")], 200)
    per = INT_SETTINGS["DB_POOL_MAX"][0] * INT_SETTINGS["WEB_CONCURRENCY"][0]
    assert found["alive_replicas"] == 4 + 4
    assert found["peak"] == 8 * per + 2 + budget.VPS_HOST_DB_CLIENTS
    assert found["available"] == 200 - budget.VPS_RESERVED_CONNECTIONS


def test_a_budget_over_the_limit_says_how_to_fix_it():
    found = budget.vps_budget([(10, "blue_green")], 200)
    assert not found["ok"] and "raise postgres_max_connections" in found["fix"]
