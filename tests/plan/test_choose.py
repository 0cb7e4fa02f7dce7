"""`prodstack choose`: the side-by-side comparison on real plans, and the recommendation."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.database import INSTANCE_MEMORY_GIB, RESERVED_CONNECTIONS, tuned_parameters
from prodstack import choose, cost
from prodstack.errors import UsageError
from prodstack.vps_plan import plan_vps
from stacks.config import MIGRATE_CONNECTIONS
from tests.support.recordings import record_isolated

REPO = Path(__file__).resolve().parents[2]
AUTO = ("replicas", "min_replicas", "max_replicas", "az_count", "nat", "multi_az",
        "storage_gb", "max_storage_gb")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("choose")

    def plan_for(profile: str, size: str) -> dict:
        if profile == "vps":
            return plan_vps({"size": size}, root=REPO)
        # The prod stack with the size's own defaults; `environment` other than prod, since
        # the prod checks refuse small's single-AZ database.
        overrides = {"size": size, "environment": "choose", **{k: "auto" for k in AUTO}}
        return record_isolated("prod", out / f"{size}.json", overrides, plan=True)

    return choose.compare(plan_for)


def test_every_size_has_both_profiles_with_cost_from_cost(comparison):
    assert [row["size"] for row in comparison["sizes"]] == list(cost.SIZES)
    for row in comparison["sizes"]:
        cloud, vps = row["cloud"], row["vps"]
        assert cloud["monthly_usd"] == pytest.approx(cloud["fixed_usd"] + cloud["usage_usd"])
        assert vps["monthly_usd"] > 0 and cloud["monthly_usd"] > vps["monthly_usd"]
        assert cloud["where"] == "eu-west-1"
        assert "Multi-AZ" in cloud["availability"] or row["size"] == "small"
        assert "one host" in vps["availability"]
        assert cloud["operate"] and vps["operate"]


def test_what_you_operate_names_how_the_plan_deploys(comparison):
    blue_green = {"deploymentConfiguration": {"strategy": "BLUE_GREEN"}}
    assert choose.CLOUD_DEPLOYS["BLUE_GREEN"] in choose._cloud_operate(blue_green)[0]
    assert choose.CLOUD_DEPLOYS["ROLLING"] in choose._cloud_operate({})[0]
    for row in comparison["sizes"]:
        first = row["cloud"]["operate"][0]
        assert "{" not in first and any(d in first for d in choose.CLOUD_DEPLOYS.values())
    assert row["cloud"]["operate"][0] in choose.render_markdown(comparison)


def test_capacity_is_bench_rate_times_replicas_with_headroom(comparison):
    bench = comparison["bench"]
    assert bench["file"].startswith("bench/results/") and bench["assumptions"]
    per_core = bench["write_rps_per_core"]
    assert per_core == round(bench["write_rps"] / bench["machine"]["cpus"])
    for row in comparison["sizes"]:
        for profile in ("cloud", "vps"):
            c = row[profile]["capacity"]
            share = min(c["vcpu_per_replica"], 1.0)  # one worker uses at most a core
            assert c["write_rps"] == pytest.approx(per_core * share * c["replicas"], abs=1)
            assert c["usable_write_rps"] == int(c["write_rps"] * 0.7)
    large = comparison["sizes"][2]["cloud"]["capacity"]
    assert large["replicas"] == 3 and large["max_replicas"] == 12


def test_cloud_connection_budget_is_the_one_the_stack_enforces(comparison):
    for row, klass in zip(comparison["sizes"], ("db.t4g.micro", "db.m7g.large",
                                                "db.m7g.xlarge"), strict=True):
        budget = row["cloud"]["db_budget"]
        # The parameter group the plan writes holds the same max_connections.
        expected = int(tuned_parameters(INSTANCE_MEMORY_GIB[klass], 500)["max_connections"])
        assert budget["max_connections"] == expected
        assert budget["available"] == expected - RESERVED_CONNECTIONS
        # 10 connections x 1 worker x max tasks x 2 during a deploy, + the migrate task
        assert budget["peak"] == 10 * 1 * budget["peak_replicas"] + MIGRATE_CONNECTIONS
        assert budget["ok"]
        assert row["vps"]["db_budget"]["max_connections"] == 200


def test_cloud_connection_budget_counts_an_rds_proxy_share():
    plan = {"resources": [{"type": "aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup",
                           "name": "targets",
                           "inputs": {"connectionPoolConfig": {"maxConnectionsPercent": 50}}}]}
    budget = choose._cloud_budget(plan, "db.m7g.large", 6, 10, 1)
    assert budget["proxy_share"] == budget["max_connections"] // 2
    assert budget["peak"] == budget["proxy_share"] + MIGRATE_CONNECTIONS
    # Without the proxy the same tasks would need 120 + 1.
    assert choose._cloud_budget({"resources": []}, "db.m7g.large", 6, 10, 1)["peak"] == 121


def test_cloud_connection_budget_warns_with_the_stacks_own_numbers():
    over = choose._cloud_budget({"resources": []}, "db.t4g.micro", 12, 10, 1)
    assert not over["ok"] and "the stack refuses this" in over["warning"]
    assert "db.t4g.micro" in over["warning"] and "241" in over["warning"]


def test_vps_connection_budget_is_the_one_the_deploy_enforces(comparison):
    for row in comparison["sizes"]:
        budget = row["vps"]["db_budget"]
        # (replicas + 1 during a rolling deploy) x 10 + 1 migrate + 3 host clients
        assert budget["peak"] == (row["vps"]["capacity"]["replicas"] + 1) * 10 + 4
        assert budget["available"] == 200 - 3 and budget["ok"]
    over = choose._vps_budget(10, "blue_green", 200)
    assert not over["ok"] and over["peak"] == 204 and over["peak_replicas"] == 20
    assert "the deploy refuses this" in over["warning"]
    assert choose._vps_budget(10, "rolling", 200)["ok"]


def test_markdown_shows_the_table_thresholds_and_bench(comparison):
    text = choose.render_markdown({**comparison,
                                   "recommendation": choose.recommend(800, 300, None)})
    assert "| monthly cost |" in text and "small cloud" in text and "large vps" in text
    assert "CPU above 70 % sustained, p95 above 500 ms, or more than 1,000 req/s" in text
    assert comparison["bench"]["file"] in text
    assert "### Recommendation: vps, size `small`" in text


def test_recommend_800_rps_at_300_ms_is_a_vps_and_says_why():
    rec = choose.recommend(rps=800, p95_ms=300, cpu_percent=None)
    assert (rec["profile"], rec["size"]) == ("vps", "small")
    text = " ".join(rec["reasons"])
    assert "No threshold is crossed" in text and "80%" in text
    assert "req/s of creates" in text


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"rps": 1500, "p95_ms": None, "cpu_percent": None}, "above the 1,000 req/s target"),
    ({"rps": 200, "p95_ms": 650, "cpu_percent": None}, "p95 650 ms is above"),
    ({"rps": 200, "p95_ms": None, "cpu_percent": 85}, "CPU 85 % is above"),
])
def test_recommend_moves_to_the_cloud_past_a_threshold(kwargs, reason):
    rec = choose.recommend(**kwargs)
    assert rec["profile"] == "cloud"
    assert any(reason in r for r in rec["reasons"])


def test_recommend_sizes_by_steady_capacity_with_headroom_not_the_ceiling():
    """The smallest size whose capacity at 70 % CPU at its autoscaling floor covers the
    load, from whichever benchmark run is newest (the figures move; the rule must not)."""
    table = choose._static_capacity(choose.latest_bench())
    for profile in ("cloud", "vps"):
        steady = [table[s][profile]["usable_write_rps"] for s in choose.SIZES]
        assert steady == sorted(steady)
    floor = [table[s]["cloud"]["usable_write_rps"] for s in choose.SIZES]
    for rps in (1, 400, 999, 1001, 1500, floor[1], floor[1] + 1, floor[2]):
        rec = choose.recommend(rps, None, None)
        profile = "cloud" if rps > choose.RPS_MAX else "vps"
        assert rec["profile"] == profile
        expected = next(s for s in choose.SIZES if table[s][profile]["usable_write_rps"] >= rps)
        assert rec["size"] == expected, rps
        assert rec["capacity"]["usable_write_rps"] >= rps
        if profile == "cloud":
            assert rec["capacity"]["replicas"] == choose.sizes.CLOUD[expected].min_replicas
    # Past the ceiling of the size below, not sized at it: medium's ceiling covers this
    # rate, its floor does not.
    between = floor[1] + 1
    assert table["medium"]["cloud"]["usable_write_rps_at_max"] >= between
    assert choose.recommend(between, None, None)["size"] == "large"


def test_past_every_size_the_cloud_says_how_many_tasks():
    table = choose._static_capacity(choose.latest_bench())
    rps = table["large"]["cloud"]["usable_write_rps"] * 2
    rec = choose.recommend(rps, None, None)
    assert rec["size"] == "large" and rec["capacity"]["usable_write_rps"] >= rps
    assert rec["capacity"]["replicas"] == rec["tasks"] > choose.sizes.CLOUD["large"].min_replicas
    # One task fewer would not do.
    fewer = choose.capacity(choose.latest_bench(), 1.0, rec["tasks"] - 1)
    assert fewer["usable_write_rps"] < rps
    assert any(f"`min_replicas` to {rec['tasks']}" in r for r in rec["reasons"])


@pytest.mark.parametrize("current", [None, *[("vps", s) for s in choose.SIZES]])
def test_leaving_a_vps_on_p95_never_recommends_less_capacity_than_it_has(current):
    rec = choose.recommend(None, 900, None, current)
    now = rec["now_capacity"]
    assert rec["profile"] == "cloud"
    # Like with like: the cloud's steady tasks, not its autoscaling ceiling.
    assert rec["capacity"]["usable_write_rps"] > now["usable_write_rps"]
    assert rec["load_write_rps"] == now["usable_write_rps"] + 1
    if current is None:
        assert rec["now"] == f"vps:{choose.VPS_DEFAULT_SIZE}"
        assert any("No `--current`" in r for r in rec["reasons"])
    else:
        assert rec["verdict"] == "move"


@pytest.mark.parametrize(("kwargs", "verdict", "where"), [
    ({"current": ("vps", "medium")}, "stay", ("vps", "medium")),
    ({"current": ("vps", "small"), "rps": 800}, "stay", ("vps", "small")),
    ({"current": ("vps", "medium"), "cpu_percent": 20}, "shrink", ("vps", "small")),
    ({"current": ("vps", "medium"), "cpu_percent": 85}, "move", ("cloud", "large")),
    ({"current": ("cloud", "small"), "rps": 1500}, "grow", ("cloud", "medium")),
    ({"current": ("cloud", "large")}, "stay", ("cloud", "large")),
])
def test_current_gets_stay_grow_shrink_or_move(kwargs, verdict, where):
    args = {"rps": None, "p95_ms": None, "cpu_percent": None, **kwargs}
    rec = choose.recommend(**args)
    assert (rec["verdict"], (rec["profile"], rec["size"])) == (verdict, where)
    text = "\n".join(choose.render_recommendation(rec))
    if verdict == "stay":
        assert f"### Recommendation: stay on `{where[0]}:{where[1]}`" in text
    else:
        assert f"`{args['current'][0]}:{args['current'][1]}` → `{where[0]}:{where[1]}`" in text
        assert f"| now `{args['current'][0]}:{args['current'][1]}` |" in text


def test_cpu_on_the_current_size_is_the_load():
    rec = choose.recommend(None, None, 50, ("vps", "medium"))
    full = rec["now_capacity"]["write_rps"]
    assert rec["load_write_rps"] == -(-full * 50 // 100)
    assert rec["capacity"]["usable_write_rps"] >= rec["load_write_rps"]
    assert "CPU 50 %" in rec["load_basis"]


def test_a_vps_size_change_says_the_server_is_not_resized():
    # (Under the thresholds every VPS size serves more than the 1,000 req/s that moves it
    # to the cloud, so a VPS size change from figures is a shrink.)
    shrink = choose.recommend(None, None, 20, ("vps", "medium"))
    assert (shrink["profile"], shrink["verdict"]) == ("vps", "shrink")
    note = next(r for r in shrink["reasons"] if "never resizes the server" in r)
    host = choose.sizes.VPS[shrink["size"]]
    assert f"{host.host_cpus} vCPU, {host.host_memory_mb // 1024} GB" in note
    assert "Resize the server at your provider" in note and "host_cpus=N" in note
    vps = cost.estimate(plan_vps({"size": "small"}, root=REPO), cost.load_usage(None, "small"))
    assert any("never resizes the server" in c for c in vps["callouts"])
    # Given host facts are priced instead, with no reference-host note.
    big = cost.estimate(plan_vps({"size": "small", "host_cpus": 8, "host_memory_mb": 16384},
                                 root=REPO), cost.load_usage(None, "small"))
    assert "8 vCPU, 16 GB" in big["lines"][0]["item"]
    assert not any("never resizes the server" in c for c in big["callouts"])


def test_recommendation_shows_costs_when_given():
    monthly = {(p, s): float(i) for i, (p, s) in enumerate(
        (p, s) for p in ("cloud", "vps") for s in choose.SIZES)}
    rec = choose.recommend(None, None, 85, ("vps", "medium"), monthly=monthly)
    assert rec["monthly_usd"] == monthly[("cloud", "large")]
    assert rec["now_monthly_usd"] == monthly[("vps", "medium")]
    rows = [r for r in choose.render_recommendation(rec) if r.startswith("| now `vps:medium`")
            or r.startswith("| recommended `cloud:large`")]
    assert rows[0].endswith(f"| {cost.usd(monthly[('vps', 'medium')])} |")
    assert rows[1].endswith(f"| {cost.usd(monthly[('cloud', 'large')])} |")


@pytest.mark.parametrize("bad", ["vps", "vps:huge", "aws:small", "VPS:medium", ":", "vps:medium:x"])
def test_current_refuses_a_bad_value_naming_the_flag(bad):
    with pytest.raises(UsageError, match=r"--current .*cloud \| vps.*small \| medium \| large"):
        choose.parse_current(bad)


def test_vps_facts_need_the_plans_max_connections():
    with pytest.raises(UsageError, match="postgres_max_connections"):
        choose.vps_facts({"profile": "vps", "settings": {"size": "small"}, "resources": []},
                         choose.latest_bench())


def test_recommend_refuses_negative_figures():
    with pytest.raises(UsageError, match="--rps -1: must be"):
        choose.recommend(-1, None, None)


def test_choose_cost_and_docs_state_the_same_rpo_and_rto_for_both_profiles(comparison):
    # One table (prodstack/recovery.py) feeds all of them; a figure typed anywhere else
    # would disagree with it and fail here.
    from prodstack import recovery

    rendered = choose.render_markdown(comparison)
    for profile in ("cloud", "vps"):
        figures = recovery.summary(profile)
        for row in comparison["sizes"]:
            assert row[profile]["backup"]["rpo"] == figures["rpo"]
            assert row[profile]["backup"]["rto"] == figures["rto"]
        assert figures["rpo"] in rendered and figures["rto"] in rendered
    vps = cost.estimate({"profile": "vps", "settings": {"size": "small"}, "resources": []},
                        cost.load_usage(None, "small"))
    figures = recovery.summary("vps")
    assert any(figures["rpo"] in c and figures["rto"] in c for c in vps["callouts"])
    docs = (REPO / "docs" / "cloud.md").read_text(encoding="utf-8")
    assert recovery.markdown_table() in docs, "docs/cloud.md: paste recovery.markdown_table()"
    cost_doc = (REPO / "docs" / "cost.md").read_text(encoding="utf-8")
    for profile in ("cloud", "vps"):
        for key in ("rpo", "rto"):
            assert recovery.summary(profile)[key] in cost_doc, (profile, key)
