"""`prodstack cost`: arithmetic against hand-computed figures on real plans, and its errors.

The hand computations below are written out from prodstack/data/prices.toml's numbers
(eu-west-1, the Region both stack files use; 730 hours a month), not from the estimator.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from prodstack import cost
from prodstack.errors import UsageError
from tests.support.recordings import record_isolated

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("plans")
    return {stack: record_isolated(stack, out / f"{stack}.json", plan=True)
            for stack in ("prod", "dev")}


def line(estimate: dict, prefix: str) -> dict:
    found = [li for li in estimate["lines"] if li["item"].startswith(prefix)]
    assert len(found) == 1, (prefix, [li["item"] for li in estimate["lines"]])
    return found[0]


def test_prod_matches_hand_computed_figures(plans):
    est = cost.estimate(plans["prod"], cost.load_usage(None, "large"))
    assert est["region"] == "eu-west-1" and est["currency"] == "USD"
    hand_fixed = {
        "NAT gateway (3": 3 * 730 * 0.048,                # 105.12, one per AZ
        "public IPv4 addresses (Elastic": 3 * 730 * 0.005,  # 10.95, the NAT EIPs
        "Application Load Balancer": 730 * 0.0252,         # 18.40
        "ALB public IPv4": 3 * 730 * 0.005,                # 10.95, one per AZ
        "RDS PostgreSQL db.m7g.xlarge (Multi-AZ)": 730 * 0.740,   # 540.20
        "RDS gp3 storage (100 GB x 2)": 100 * 2 * 0.127,   # 25.40, primary + standby
        "ElastiCache Valkey cache.m7g.large (2": 2 * 730 * 0.1392,  # 203.23
        "Fargate vCPU": 3 * 1 * 730 * 0.04048,             # 88.65
        "Fargate memory": 3 * 2 * 730 * 0.004445,          # 19.47
        "WAF web ACL": 5.00,
        "WAF rules": 5 * 1.00,                             # rate, body size + 3 managed groups
        # 17 alarms (14, the deployment's own healthy-hosts copy, the drill's failed and
        # missing); metric math bills each metric it reads: the error rate 3, healthy and
        # unhealthy hosts and the deployment copy 2 each (both blue/green target groups),
        # the others 1.
        "CloudWatch alarms": 22 * 0.10,
        "CloudWatch dashboards": 3.00,
        # the alarm topic's, the vault's, and kms_keys' logs, edge logs, secrets and data
        "KMS": 6 * 1.00,
        # The daily restore drill: about an hour a day of a Single-AZ db.m7g.xlarge.
        "Restore drill": 30 * 0.370,                       # 11.10
        "Secrets Manager secrets (2)": 2 * 0.40,
        "RDS-managed master password": 0.40,
    }
    for prefix, expected in hand_fixed.items():
        item = line(est, prefix)
        assert item["kind"] == "fixed"
        assert item["monthly"] == pytest.approx(expected, abs=0.005), prefix
    assert est["fixed_monthly"] == pytest.approx(
        sum(round(v + 1e-9, 2) for v in hand_fixed.values()), abs=0.001)  # 1055.87
    hand_usage = {
        "NAT gateway data processed": 100 * 0.048,
        "WAF requests inspected": 260 * 0.60,              # 260 M requests
        "CloudFront data transfer out": 500 * 0.085,
        "CloudFront HTTPS requests": 260_000_000 / 10_000 * 0.0100,
        "ALB capacity units": 5 * 730 * 0.008,
        "CloudWatch Logs ingested (WAF)": 300 * 0.50,      # the CloudFront ACL logs in us-east-1
        "CloudWatch Logs ingested (VPC": 60 * 0.57,
        "CloudWatch Logs ingested (API": 80 * 0.57,
        # Application logs kept log_retention_days (30), security logs (WAF, VPC flow)
        # security_log_retention_days (365).
        "CloudWatch Logs stored (API, database, cache; 30 days": 80 * 30 / 30 * 0.03,
        "CloudWatch Logs stored (VPC flow logs, WAF; 365 days": (60 + 300) * 365 / 30 * 0.03,
        "ECR image storage": 5 * 0.10,
        "ALB access logs": 40 * 0.023,
        # AWS Backup tiers, 100 GB database changing 5 GB a day (usage/large.toml): the
        # daily tier holds the full copy and 30 days of change, each longer tier the
        # days beyond the shorter one.
        "AWS Backup daily tier (kept 30 days)": (100 + 5 * 30) * 0.095,     # 23.75
        "AWS Backup weekly tier (kept 90 days)": 5 * (90 - 30) * 0.095,     # 28.50
        "AWS Backup monthly tier (kept 365 days)": 5 * (365 - 90) * 0.095,  # 130.63
    }
    for prefix, expected in hand_usage.items():
        item = line(est, prefix)
        assert item["kind"] == "usage"
        assert item["monthly"] == pytest.approx(expected, abs=0.005), prefix
    assert est["unpriced"] == []
    assert est["total_monthly"] == pytest.approx(est["fixed_monthly"] + est["usage_monthly"])


def test_dev_matches_hand_computed_figures(plans):
    est = cost.estimate(plans["dev"], cost.load_usage(None, "small"))
    hand = {
        "NAT gateway (1)": 730 * 0.048,                    # 35.04: one NAT, not per AZ
        "RDS PostgreSQL db.t4g.micro (Single-AZ)": 730 * 0.017,   # 12.41
        "RDS gp3 storage (20 GB x 1)": 20 * 0.127,         # 2.54: single copy
        "Fargate vCPU": 1 * 0.25 * 730 * 0.04048,          # 7.39
        "Fargate memory": 1 * 0.5 * 730 * 0.004445,        # 1.62
        "ElastiCache Valkey cache.t4g.micro (1": 730 * 0.0141,  # 10.29
        "Application Load Balancer": 730 * 0.0252,
        "data transfer out to the internet": 5 * 0.09,     # no CDN in dev: ALB egress
        "WAF requests inspected": 2.6 * 0.60,
        # dev keeps application logs log_retention_days (7), its WAF logs
        # security_log_retention_days (30); no flow logs.
        "CloudWatch Logs stored (API, database, cache; 7 days": round(2 * 7 / 30, 2) * 0.03,
        "CloudWatch Logs stored (WAF; 30 days": 3 * 30 / 30 * 0.03,
    }
    for prefix, expected in hand.items():
        assert line(est, prefix)["monthly"] == pytest.approx(expected, abs=0.005), prefix
    # dev's cheap form of AWS Backup: 7/35/90-day tiers, no drill, no copy, no lock.
    for prefix, expected in {
            "AWS Backup daily tier (kept 7 days)": (20 + 0.5 * 7) * 0.095,
            "AWS Backup weekly tier (kept 35 days)": 0.5 * 28 * 0.095,
            "AWS Backup monthly tier (kept 90 days)": 0.5 * 55 * 0.095}.items():
        assert line(est, prefix)["monthly"] == pytest.approx(expected, abs=0.005), prefix
    items = [li["item"] for li in est["lines"]]
    assert not any(i.startswith(("Restore drill", "AWS Backup cross-Region")) for i in items)
    assert not any(i.startswith("CloudFront") for i in items)
    assert not any("flow logs" in i for i in items)  # flow_logs: false in dev


def test_totals_are_the_sums_of_the_lines_and_lines_are_ordered(plans):
    for stack, size in (("prod", "large"), ("dev", "small")):
        est = cost.estimate(plans[stack], cost.load_usage(None, size))
        for kind in ("fixed", "usage"):
            total = sum(li["monthly"] for li in est["lines"] if li["kind"] == kind)
            assert est[f"{kind}_monthly"] == pytest.approx(total, abs=0.001)
        keys = [(li["kind"], li["component"], li["item"]) for li in est["lines"]]
        assert keys == sorted(keys)
        assert all(li["source"] and "taken" in li["source"] for li in est["lines"])
        assert all(round(li["monthly"], 2) == li["monthly"] for li in est["lines"])


def test_callouts_name_the_multipliers(plans):
    prod = cost.estimate(plans["prod"], cost.load_usage(None, "large"))
    dev = cost.estimate(plans["dev"], cost.load_usage(None, "small"))
    text = "\n".join(prod["callouts"])
    assert "Multi-AZ doubles the database" in text and "$270.10" in text  # 540.20 / 2
    assert "NAT per AZ: 3 NAT gateways" in text
    assert "WAF bills per request" in text
    dev_text = "\n".join(dev["callouts"])
    assert "Multi-AZ" not in dev_text and "NAT per AZ" not in dev_text
    assert "WAF bills per request" in dev_text


def test_usage_without_a_figure_is_listed_never_zero(plans):
    usage = cost.load_usage(None, "large")
    del usage["nat_gb"], usage["requests_per_month"]
    est = cost.estimate(plans["prod"], usage)
    items = [li["item"] for li in est["lines"]]
    assert "NAT gateway data processed" not in items
    assert "WAF requests inspected" not in items
    assert any("`nat_gb`" in u for u in est["unpriced"])
    assert any("`requests_per_month`" in u for u in est["unpriced"])
    assert "#### Not priced" in cost.render_markdown(est)


def test_unknown_resource_types_are_not_silently_free(plans):
    plan = json.loads(json.dumps(plans["dev"]))
    plan["resources"].append({"id": "x", "type": "aws:ec2/instance:Instance", "name": "box",
                              "inputs": {}})
    est = cost.estimate(plan, cost.load_usage(None, "small"))
    assert any(u.startswith("aws:ec2/instance:Instance (1)") for u in est["unpriced"])


def test_region_without_prices_is_refused(plans):
    plan = json.loads(json.dumps(plans["dev"]))
    plan["settings"]["aws:region"] = "ap-south-2"
    with pytest.raises(UsageError, match=r"aws:region: 'ap-south-2' has no prices.*us-east-1"):
        cost.estimate(plan, cost.load_usage(None, "small"))


def test_estimate_is_deterministic_across_hash_seeds(plans, tmp_path):
    path = tmp_path / "prod.json"
    path.write_text(json.dumps(plans["prod"]))
    script = ("import json,sys; from prodstack import cost; p=json.load(open(sys.argv[1]));"
              "e=cost.estimate(p, cost.load_usage(None,'large'));"
              "sys.stdout.write(cost.dumps(e)+cost.render_markdown(e))")
    outputs = {
        subprocess.run(["python", "-c", script, str(path)], cwd=REPO, check=True,
                       capture_output=True, text=True,
                       env={**os.environ, "PYTHONHASHSEED": seed, "TZ": tz}).stdout
        for seed, tz in (("1", "UTC"), ("4242", "Asia/Kolkata"))
    }
    assert len(outputs) == 1


def test_vps_host_and_offsite_backups():
    plan = {"profile": "vps", "stack": "vps",
            "settings": {"size": "medium", "backup_s3_bucket": "my-backups"}, "resources": []}
    est = cost.estimate(plan, cost.load_usage(None, "medium"))
    assert line(est, "DigitalOcean")["monthly"] == 48.00
    assert line(est, "off-site backups")["monthly"] == pytest.approx(50 * 0.023, abs=0.005)
    assert est["total_monthly"] == pytest.approx(48.00 + 1.15)
    assert any("Hetzner" in c and "cx33" in c for c in est["callouts"])
    assert "$85 production" in cost.render_markdown(est)


def test_vps_hetzner_converts_euros(tmp_path):
    override = tmp_path / "usage.toml"
    override.write_text('vps_provider = "hetzner"\n')
    plan = {"profile": "vps", "stack": "vps", "settings": {"size": "small"}, "resources": []}
    est = cost.estimate(plan, cost.load_usage(override, "small"))
    assert line(est, "Hetzner")["monthly"] == pytest.approx(4.11 * 1.15, abs=0.005)  # 4.73
    assert any("backup_s3_bucket" in c for c in est["callouts"])


def test_vps_host_facts_pick_a_plan_that_fits():
    plan = {"profile": "vps", "stack": "vps",
            "settings": {"size": "small", "host_memory_mb": 8192, "host_cpus": 4},
            "resources": []}
    est = cost.estimate(plan, cost.load_usage(None, "small"))
    assert "s-4vcpu-8gb" in line(est, "DigitalOcean")["item"]


def test_usage_override_replaces_only_its_keys(tmp_path):
    override = tmp_path / "usage.toml"
    override.write_text("nat_gb = 1234\n")
    usage = cost.load_usage(override, "medium")
    assert usage["nat_gb"] == 1234
    assert usage["requests_per_month"] == cost.load_usage(None, "medium")["requests_per_month"]


@pytest.mark.parametrize(("text", "message"), [
    ("nat_gbb = 1\n", r"usage\.toml: unknown usage key `nat_gbb`"),
    ("nat_gb = -1\n", r"usage\.toml: `nat_gb` = -1 is invalid; expected a number >= 0"),
    ('nat_gb = "lots"\n', r"`nat_gb` = 'lots' is invalid"),
    ("nat_gb = true\n", r"`nat_gb` = True is invalid"),
    ('vps_provider = "linode"\n', r"`vps_provider` = 'linode' is invalid"),
    ("nat_gb = \n", r"usage\.toml: not valid TOML"),
])
def test_bad_usage_files_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "usage.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        cost.load_usage(path, "small")


def test_missing_usage_file_and_unknown_size(tmp_path):
    with pytest.raises(UsageError, match=r"nope\.toml: no such usage file"):
        cost.load_usage(tmp_path / "nope.toml", "small")
    with pytest.raises(UsageError, match=r"size: 'huge' has no usage profile"):
        cost.load_usage(None, "huge")


def test_checked_in_profiles_set_every_key_and_every_price_names_a_source():
    for size in cost.SIZES:
        assert set(cost.load_usage(None, size)) == set(cost.USAGE_KEYS)
    prices = cost.load_prices()

    def entries(table):
        for value in table.values():
            if isinstance(value, dict) and "source" in value:
                yield value
            elif isinstance(value, dict):
                yield from entries(value)

    used = set()
    for entry in entries({k: v for k, v in prices.items() if k != "sources"}):
        source = prices["sources"][entry["source"]]
        assert source["page"] and source["taken"] and "confirmed" in source
        assert source["checked"], entry["source"]
        used.add(entry["source"])
    assert used == set(prices["sources"])  # no source left behind by a price that moved
