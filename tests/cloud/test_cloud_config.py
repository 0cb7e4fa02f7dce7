"""Config: schema in Pulumi.yaml, stack files, and a negative test for every validation."""
# ruff: noqa: E501  (the NEGATIVE table keeps one case per line)

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prodstack_cloud_harness import REPO, run_harness

from prodstack.sizes import CLOUD as SIZES
from stacks.config import KEYS, ConfigError, load

PROJECT = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
ZONE = "Z0123456789EXAMPLE0"


def stack_raw(stack: str) -> dict[str, str]:
    """``prodstack:`` values of a stack file, as strings (namespace stripped)."""
    data = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    out = {}
    for key, value in data.items():
        if key.startswith("prodstack:"):
            out[key.split(":", 1)[1]] = str(value).lower() if isinstance(value, bool) else str(
                value)
    return out


def problems(raw: dict[str, str], region: str | None = "eu-west-1", stack: str = "dev") -> list:
    with pytest.raises(ConfigError) as err:
        load(raw, region=region, stack=stack)
    return err.value.problems


# ---- Pulumi.yaml and stack files -------------------------------------------------------


def test_project_file_runs_the_stacks_entrypoint() -> None:
    assert PROJECT["name"] == "prodstack"
    assert PROJECT["runtime"]["name"] == "python"
    assert PROJECT["runtime"]["options"]["toolchain"] == "uv"
    assert PROJECT["main"] == "stacks/"
    assert (REPO / "stacks" / "__main__.py").exists()


def test_schema_declares_every_key_typed_described_with_default() -> None:
    # Pulumi.yaml is generated from KEYS (prodstack/keydocs.py, kept current by
    # tests/test_keydocs.py); this reads it as Pulumi does.
    schema = PROJECT["config"]
    assert set(schema) == set(KEYS)
    for key, spec in KEYS.items():
        entry = schema[key]
        assert entry["type"] == spec.type in ("string", "integer", "boolean"), key
        assert entry["description"] == spec.description, key
        # A renamed key has no default of its own: its value moves to the new name.
        assert entry.get("default") == spec.default, key
        assert (spec.default is None) == bool(spec.renamed_to), key
        # Pulumi refuses a plaintext value for a `secret: true` key; prodstack plan too.
        assert entry.get("secret", False) == spec.secret, key


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_stack_files_use_known_keys_and_no_plaintext_secrets(stack: str) -> None:
    data = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    for key, value in data.items():
        namespace, _, name = key.partition(":")
        assert namespace in ("prodstack", "aws"), key
        if namespace == "prodstack":
            assert name in KEYS, key
            if KEYS[name].secret:
                assert isinstance(value, dict) and "secure" in value, key


def test_prod_stack_file_is_large_multi_az_protected() -> None:
    cfg = load(stack_raw("prod"), region="eu-west-1", stack="prod")
    assert cfg.is_prod and cfg.size == "large"
    assert cfg.multi_az and cfg.az_count == 3 and cfg.nat == "per_az"
    assert cfg.replicas >= 3 and cfg.min_replicas >= 3
    assert cfg.deletion_protection and cfg.final_snapshot
    assert cfg.backup_retention_days == 30
    assert cfg.domain and cfg.cdn and cfg.waf
    # Security logs a year, apart from the application logs' month.
    assert (cfg.security_log_retention_days, cfg.log_retention_days) == (365, 30)


def test_dev_stack_file_is_small_cheap_and_easy_to_destroy() -> None:
    cfg = load(stack_raw("dev"), region="eu-west-1", stack="dev")
    assert cfg.size == "small" and cfg.replicas == 1
    assert cfg.nat == "single" and not cfg.multi_az
    assert not cfg.deletion_protection and not cfg.final_snapshot
    assert cfg.backup_retention_days == 7


def test_sizes_map_to_capacity() -> None:
    assert [SIZES[s].replicas for s in ("small", "medium", "large")] == [1, 2, 3]
    assert [SIZES[s].nat for s in ("small", "medium", "large")] == ["single", "single", "per_az"]
    assert [SIZES[s].multi_az for s in ("small", "medium", "large")] == [False, True, True]
    for size in SIZES.values():
        cfg = load({"size": next(k for k, v in SIZES.items() if v is size)},
                   region="us-east-1", stack="x")
        assert cfg.db_instance_class == size.db_instance_class
        assert (cfg.task_cpu, cfg.task_memory) == (size.task_cpu, size.task_memory)


def test_defaults_alone_make_a_valid_dev_stack() -> None:
    cfg = load({}, region="us-east-1", stack="dev")
    # One default size for both targets (prodstack/profile.py DEFAULT_SIZE).
    assert cfg.size == "medium" and cfg.deletion_protection and cfg.cdn and cfg.waf


# ---- a negative test per validation ------------------------------------------------------

NEGATIVE = [
    # (raw overrides, region, stack, expected fragment naming key and allowed values)
    ({"replicas": "0"}, "eu-west-1", "dev", "prodstack:replicas: 0 is invalid; allowed: an integer >= 1"),
    ({"replicas": "-2"}, "eu-west-1", "dev", "prodstack:replicas: -2"),
    ({"replicas": "three"}, "eu-west-1", "dev", "prodstack:replicas: 'three' is invalid; allowed: an integer >= 1, or auto"),
    ({"min_replicas": "0"}, "eu-west-1", "dev", "prodstack:min_replicas: 0"),
    ({"min_replicas": "4", "max_replicas": "2", "replicas": "3"}, "eu-west-1", "dev",
     "prodstack:max_replicas: 2 is invalid; allowed: >= min_replicas (4)"),
    ({"replicas": "5", "max_replicas": "4"}, "eu-west-1", "dev", "prodstack:replicas: 5"),
    ({"size": "huge"}, "eu-west-1", "dev", "prodstack:size: 'huge' is invalid; allowed: small | medium | large"),
    ({"db_pool_max": "0"}, "eu-west-1", "dev", "prodstack:db_pool_max: 0 is invalid; allowed: 1-200 (what the app accepts)"),
    ({"web_concurrency": "65"}, "eu-west-1", "dev", "prodstack:web_concurrency: 65 is invalid; allowed: 1-64 (what the app accepts)"),
    ({"deploy_strategy": "canary"}, "eu-west-1", "dev", "prodstack:deploy_strategy: 'canary' is invalid; allowed: rolling | blue_green"),
    ({"vpc_cidr": "10.0.0.0/33"}, "eu-west-1", "dev", "prodstack:vpc_cidr: '10.0.0.0/33' is invalid"),
    ({"vpc_cidr": "10.0.0.1/16"}, "eu-west-1", "dev", "prodstack:vpc_cidr: '10.0.0.1/16'"),
    ({"vpc_cidr": "not-a-cidr"}, "eu-west-1", "dev", "prodstack:vpc_cidr: 'not-a-cidr'"),
    ({"vpc_cidr": "10.0.0.0/24"}, "eu-west-1", "dev", "too small"),
    ({"vpc_cidr": "8.8.0.0/16"}, "eu-west-1", "dev", "private IPv4"),
    ({"vpc_cidr": "10.0.0.0/8"}, "eu-west-1", "dev", "/16 at most"),
    ({"domain": "api.example.com", "cdn": "false"}, "eu-west-1", "dev",
     "prodstack:domain: 'api.example.com' is invalid; allowed: a certificate source"),
    ({"domain": "api.example.com", "certificate_arn":
      "arn:aws:acm:eu-west-1:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"},
     "eu-west-1", "dev", "with cdn, a us-east-1 certificate"),
    ({"domain": "Not A Domain", "hosted_zone_id": ZONE}, "eu-west-1", "dev",
     "prodstack:domain: 'Not A Domain'"),
    ({"domain": "api.example.com", "cdn": "false", "certificate_arn":
      "arn:aws:acm:us-west-2:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"},
     "eu-west-1", "dev", "prodstack:certificate_arn: 'arn:aws:acm:us-west-2"),
    ({"domain": "api.example.com", "cdn_certificate_arn":
      "arn:aws:acm:eu-west-1:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
      "hosted_zone_id": ZONE}, "eu-west-1", "dev", "an ACM certificate ARN in us-east-1"),
    ({"certificate_arn":
      "arn:aws:acm:eu-west-1:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"},
     "eu-west-1", "dev", "only together with domain"),
    ({"hosted_zone_id": "zone-1"}, "eu-west-1", "dev", "prodstack:hosted_zone_id: 'zone-1'"),
    ({}, "mars-north-1", "dev", "aws:region: 'mars-north-1' is invalid; allowed: us-east-1"),
    ({}, None, "dev", "aws:region: not set"),
    ({"nat": "double"}, "eu-west-1", "dev", "prodstack:nat: 'double' is invalid; allowed: none | single | per_az | auto"),
    ({"az_count": "4"}, "eu-west-1", "dev", "prodstack:az_count: 4 is invalid; allowed: 2 or 3"),
    ({"multi_az": "maybe"}, "eu-west-1", "dev", "prodstack:multi_az: 'maybe'"),
    ({"cpu_target_percent": "95"}, "eu-west-1", "dev", "prodstack:cpu_target_percent: 95"),
    ({"requests_per_target": "0"}, "eu-west-1", "dev", "prodstack:requests_per_target: 0"),
    ({"edge_rate_limit_per_minute": "50"}, "eu-west-1", "dev", "allowed: 100-2000000000"),
    ({"rate_limit_per_minute": "0"}, "eu-west-1", "dev", "prodstack:rate_limit_per_minute: 0"),
    ({"storage_gb": "10"}, "eu-west-1", "dev", "prodstack:storage_gb: 10 is invalid; allowed: 20-65536"),
    ({"storage_gb": "100", "max_storage_gb": "105"}, "eu-west-1", "dev",
     "prodstack:max_storage_gb: 105 is invalid; allowed: >= 1.1 x storage_gb (100)"),
    ({"backup_retention_days": "0"}, "eu-west-1", "dev", "prodstack:backup_retention_days: 0"),
    ({"backup_retention_days": "36"}, "eu-west-1", "dev", "allowed: 1-35"),
    ({"log_retention_days": "10"}, "eu-west-1", "dev", "prodstack:log_retention_days: 10"),
    ({"security_log_retention_days": "366"}, "eu-west-1", "dev", "prodstack:security_log_retention_days: 366 is invalid; allowed: 1, 3, 5, 7"),
    ({"alert_email": "ops-at-example"}, "eu-west-1", "dev", "prodstack:alert_email: 'ops-at-example'"),
    ({"log_level": "LOUD"}, "eu-west-1", "dev", "prodstack:log_level: 'LOUD'"),
    ({"image_platform": "linux/s390x"}, "eu-west-1", "dev", "prodstack:image_platform"),
    ({"image_tag": "-bad tag"}, "eu-west-1", "dev", "prodstack:image_tag: '-bad tag'"),
    ({"api_token": "short"}, "eu-west-1", "dev", "prodstack:api_token: '<secret>'"),
    # A pinned image: ECR, by digest, nothing else; hostile text is refused whole.
    ({"image": "prodstack-api:latest"}, "eu-west-1", "dev",
     "prodstack:image: 'prodstack-api:latest' is invalid; allowed: an ECR image pinned by digest"),
    ({"image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/api:v1"}, "eu-west-1", "dev",
     "prodstack:image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/api:v1' is invalid"),
    ({"image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/api@sha256:000000000000000000000000000000000000000000000000000000000000000"},
     "eu-west-1", "dev", "prodstack:image: "),
    ({"image": "docker.io/library/api@sha256:0000000000000000000000000000000000000000000000000000000000000000"}, "eu-west-1", "dev", "prodstack:image: "),
    ({"image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/API@sha256:0000000000000000000000000000000000000000000000000000000000000000"}, "eu-west-1",
     "dev", "prodstack:image: "),
    ({"image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/api@sha256:0000000000000000000000000000000000000000000000000000000000000000\nprodstack:x: 1"},
     "eu-west-1", "dev", "prodstack:image: "),
    ({"image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/api@sha256:0000000000000000000000000000000000000000000000000000000000000000; rm -rf /"},
     "eu-west-1", "dev", "prodstack:image: "),
    ({"image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/api@sha256:0000000000000000000000000000000000000000000000000000000000000000",
       "image_tag": "v1"}, "eu-west-1", "dev",
     "prodstack:image_tag: 'v1' is invalid; allowed: empty when image is set"),
    ({"cdn": "yes"}, "eu-west-1", "dev", "prodstack:cdn: 'yes' is invalid; allowed: true or false"),
    ({"environment": "Prod!"}, "eu-west-1", "dev", "prodstack:environment: 'Prod!'"),
    ({"replicaz": "3"}, "eu-west-1", "dev",
     "prodstack:replicaz: '3' is invalid; allowed: a known key; did you mean `replicas`?"),
    ({"backup_daily_retention_days": "0"}, "eu-west-1", "dev", "prodstack:backup_daily_retention_days: 0 is invalid; allowed: an integer >= 1"),
    ({"backup_weekly_retention_days": "20"}, "eu-west-1", "dev", "prodstack:backup_weekly_retention_days: 20 is invalid; allowed: >= backup_daily_retention_days (30)"),
    ({"backup_monthly_retention_days": "60"}, "eu-west-1", "dev", "prodstack:backup_monthly_retention_days: 60 is invalid; allowed: >= backup_weekly_retention_days (90)"),
    ({"backup_vault_lock": "legal-hold"}, "eu-west-1", "dev", "prodstack:backup_vault_lock: 'legal-hold' is invalid; allowed: none | governance | compliance"),
    ({"backup_copy_region": "eu-west-1"}, "eu-west-1", "dev", "prodstack:backup_copy_region: 'eu-west-1' is invalid; allowed: another Region than eu-west-1"),
    ({"backup_copy_region": "moon-1"}, "eu-west-1", "dev", "prodstack:backup_copy_region: 'moon-1'"),
    ({"restore_to_time": "2026-12-07 05:00"}, "eu-west-1", "dev", "prodstack:restore_to_time: '2026-12-07 05:00' is invalid; allowed: a UTC time YYYY-MM-DDTHH:MM:SSZ"),
    ({"restore_to_time": "2026-12-07T05:00:00+01:00"}, "eu-west-1", "dev", "prodstack:restore_to_time: '2026-12-07T05:00:00+01:00'"),
    ({"restore_to_time": "2026-12-07T05:00:00Z'; DROP TABLE alerts;--"}, "eu-west-1", "dev", "prodstack:restore_to_time: \"2026-12-07T05:00:00Z'; DROP"),
    ({"restore_to_time": "2026-12-07T05:00:00Z\n"}, "eu-west-1", "dev", "prodstack:restore_to_time: '2026-12-07T05:00:00Z\\n'"),
    ({"restore_source": "delete"}, "eu-west-1", "dev", "prodstack:restore_source: 'delete' is invalid; allowed: keep | release"),
    ({"restore_source": "release"}, "eu-west-1", "dev", "prodstack:restore_source: 'release' is invalid; allowed: keep, unless restore_to_time is set"),
    # prod profile: dev-only opt-outs are refused
    ({"environment": "prod", "backup_vault_lock": "none"}, "eu-west-1", "prod", "prodstack:backup_vault_lock: 'none' is invalid; allowed: governance or compliance in prod"),
    ({"environment": "prod", "backup_restore_drill": "false"}, "eu-west-1", "prod", "prodstack:backup_restore_drill: False is invalid; allowed: true in prod"),
    ({"environment": "prod", "backup_daily_retention_days": "7"}, "eu-west-1", "prod", "prodstack:backup_daily_retention_days: 7 is invalid; allowed: >= 30 in prod"),
    ({"environment": "prod", "backup_weekly_retention_days": "35"}, "eu-west-1", "prod", "prodstack:backup_weekly_retention_days: 35 is invalid; allowed: >= 90 in prod"),
    ({"environment": "prod", "backup_monthly_retention_days": "180"}, "eu-west-1", "prod", "prodstack:backup_monthly_retention_days: 180 is invalid; allowed: >= 365 in prod"),
    ({"environment": "prod"}, "eu-west-1", "prod", "prodstack:domain: '' is invalid; allowed: a domain in prod"),
    ({"environment": "prod", "deletion_protection": "false"}, "eu-west-1", "prod",
     "prodstack:deletion_protection: False is invalid; allowed: true in prod"),
    ({"environment": "prod", "final_snapshot": "false"}, "eu-west-1", "prod", "prodstack:final_snapshot"),
    ({"environment": "prod", "flow_logs": "false"}, "eu-west-1", "prod", "prodstack:flow_logs"),
    ({"environment": "prod", "alb_access_logs": "false"}, "eu-west-1", "prod", "prodstack:alb_access_logs"),
    ({"environment": "prod", "security_log_retention_days": "180"}, "eu-west-1", "prod", "prodstack:security_log_retention_days: 180 is invalid; allowed: >= 365 in prod"),
    ({"environment": "prod", "kms_keys": "false"}, "eu-west-1", "prod", "prodstack:kms_keys: False is invalid; allowed: true in prod"),
    ({"kms_keys": "on"}, "eu-west-1", "dev", "prodstack:kms_keys: 'on' is invalid; allowed: true or false"),
    ({"origin_secret_version": "0"}, "eu-west-1", "dev", "prodstack:origin_secret_version: 0 is invalid; allowed: an integer >= 1"),
    ({"origin_secret_version": "2", "origin_secret_retired": "2"}, "eu-west-1", "dev", "prodstack:origin_secret_retired: 2 is invalid; allowed: 0 to 1 (below origin_secret_version)"),
    ({"origin_secret_retired": "-1"}, "eu-west-1", "dev", "prodstack:origin_secret_retired: -1 is invalid; allowed: 0 to 0"),
    ({"origin_secret_version": "2'; rm -rf /"}, "eu-west-1", "dev", "prodstack:origin_secret_version: \"2'; rm -rf /\" is invalid; allowed: an integer"),
    ({"environment": "prod", "multi_az": "false"}, "eu-west-1", "prod", "prodstack:multi_az: 'false' is invalid; allowed: true in prod"),
    ({"environment": "prod", "size": "small"}, "eu-west-1", "prod", "prodstack:min_replicas: 1 is invalid; allowed: >= 2 in prod"),
]


@pytest.mark.parametrize("raw, region, stack, expected", NEGATIVE,
                         ids=[e[3].split(" is ")[0][:60] for e in NEGATIVE])
def test_invalid_config_is_refused_naming_key_value_and_allowed(
    raw: dict, region: str | None, stack: str, expected: str
) -> None:
    found = problems(raw, region=region, stack=stack)
    assert any(expected in line for line in found), found
    assert all("\n" not in line for line in found)


@pytest.mark.parametrize("ref", [
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/prodstack-registry-repo-1a2b3c4@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/api:src-52e5fc285eb405c9@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/api:v1.4.2@sha256:0000000000000000000000000000000000000000000000000000000000000000",
])
def test_pinned_ecr_images_are_accepted(ref: str) -> None:
    assert load({"image": ref}, region="eu-west-1", stack="dev").image == ref


def test_app_context_is_a_directory_with_a_dockerfile(tmp_path: Path) -> None:
    """A user's own app builds instead of app/; the program builds that context."""
    from stacks.config import REPO_ROOT, app_context

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert load({"app_context": str(tmp_path)}, region="eu-west-1", stack="dev").app_context
    assert app_context("") == REPO_ROOT / "app"
    assert app_context("app") == (REPO_ROOT / "app").resolve()
    for bad in (str(tmp_path / "missing"), "docs", "../../etc", "app\nx"):
        found = problems({"app_context": bad}, region="eu-west-1", stack="dev")
        assert any(line.startswith("prodstack:app_context: ") and "with a Dockerfile" in line
                   for line in found), found


def test_all_problems_reported_in_one_run() -> None:
    found = problems(
        {"replicas": "0", "size": "huge", "vpc_cidr": "10.0.0.0/28",
         "domain": "api.example.com", "cdn": "false"},
        region="nowhere-1",
    )
    for key in ("aws:region", "prodstack:replicas", "prodstack:size", "prodstack:vpc_cidr",
                "prodstack:domain"):
        assert any(line.startswith(key + ":") for line in found), (key, found)


def test_entrypoint_refuses_bad_config_before_registering_anything(tmp_path: Path) -> None:
    manifest = run_harness(
        "dev", tmp_path / "bad.json",
        "--set", "replicas=0", "--set", "max_replicas=-1", "--set", "size=huge",
        "--set", "vpc_cidr=300.1.2.3/16", "--set", "domain=api.example.com",
        "--set", "aws:region=moon-1",
    )
    assert manifest["exit_code"] == 1
    assert manifest["resources"] == [] and manifest["invokes"] == []
    lines = manifest["stderr"].strip().splitlines()
    assert lines[0] == "prodstack: invalid configuration:"
    for key in ("aws:region", "prodstack:replicas", "prodstack:size", "prodstack:vpc_cidr",
                "prodstack:domain", "prodstack:max_replicas"):
        assert any(line.strip().startswith(key + ":") for line in lines[1:]), (key, lines)


# ---- connection budget -------------------------------------------------------------


def test_connection_budget_counts_the_deploy_surge_and_the_migrate_task() -> None:
    """db.t4g.micro: max_connections 80, 75 for the app. 10 x 1 x 3 replicas x 2 + 1 = 61
    fits; a fourth replica makes 81, which a deployment at the ceiling could exhaust."""
    ok = {"size": "small", "max_replicas": "3", "replicas": "1", "min_replicas": "1"}
    load(ok, region="eu-west-1", stack="dev")
    found = problems(ok | {"max_replicas": "4"})
    (line,) = [p for p in found if p.startswith("prodstack:db_pool_max:")]
    for figure in ("db.t4g.micro's 75 connections", "max_connections 80 - 5 reserved",
                   "81 = 10 db_pool_max x 1 web_concurrency x 4 max_replicas x 2",
                   "+ 1 migrate task"):
        assert figure in line, line


@pytest.mark.parametrize("raw", [
    {"db_pool_max": "4", "web_concurrency": "2", "max_replicas": "5"},   # 8 x 5 x 2 + 1 = 81
    {"db_pool_max": "38", "max_replicas": "1", "replicas": "1", "min_replicas": "1"},  # 77
])
def test_connection_budget_multiplies_pool_workers_and_replicas(raw: dict) -> None:
    found = problems(raw | {"size": "small"})  # db.t4g.micro
    assert any(p.startswith("prodstack:db_pool_max:") for p in found)


@pytest.mark.parametrize("size", list(SIZES))
def test_every_size_fits_its_own_connection_budget(size: str) -> None:
    from stacks.config import connection_budget

    s = SIZES[size]
    budget = connection_budget(s.db_instance_class, max_replicas=s.max_replicas,
                               web_concurrency=1, db_pool_max=10)
    assert budget["peak"] <= budget["available"], (size, budget)
    load({"size": size}, region="eu-west-1", stack="dev")
