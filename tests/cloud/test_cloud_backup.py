"""AWS Backup, the restore drill, the data-tier events and a point-in-time restore, on the
real program under mocks: prod and dev from their stack files, and the variants the stack
files don't take (compliance lock with a second Region, a restore, its release)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prodstack_cloud_harness import Manifest, run_all, run_harness

from components.backup import TIER_SCHEDULES, BackupArgs
from components.database import restored_identifier
from components.observability import RDS_EVENT_CATEGORIES

WHEN = "2026-12-07T05:00:00Z"
RESTORED = restored_identifier("prodstack-prod", WHEN)
VARIANTS = {
    "compliance-copy": ("prod", "--set", "backup_vault_lock=compliance",
                        "--set", "backup_copy_region=eu-central-1"),
    "restore": ("prod", "--set", f"restore_to_time={WHEN}"),
    "release": ("prod", "--set", f"restore_to_time={WHEN}", "--set", "restore_source=release"),
}


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Manifest]:
    tmp: Path = tmp_path_factory.mktemp("cloud-backup")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_harness, args[0], tmp / f"{name}.json", *args[1:])
                   for name, args in VARIANTS.items()}
        result = {name: Manifest(f.result()) for name, f in futures.items()}
    for name, m in result.items():
        assert m.data["exit_code"] == 0, (name, m.data["stderr"])
    return result


def _deps(resource: dict, key: str) -> list[str]:
    return resource["property_dependencies"].get(key, [])


def test_prod_keeps_the_backup_targets_in_a_locked_encrypted_vault(prod: Manifest) -> None:
    vault = prod.named("prodstack-backup-vault")
    assert vault["inputs"]["name"] == "prodstack-prod" and vault["inputs"]["forceDestroy"] is False
    assert _deps(vault, "kmsKeyArn") == ["aws:kms/key:Key::prodstack-backup-key"]
    assert prod.one("kms/key:Key", "prodstack-backup-key")["enableKeyRotation"] is True
    lock = prod.named("prodstack-backup-vault-lock")
    assert _deps(lock, "backupVaultName") == ["aws:backup/vault:Vault::prodstack-backup-vault"]
    # governance: no changeable window (that would make it compliance)
    assert lock["inputs"]["minRetentionDays"] == 30 and lock["inputs"]["maxRetentionDays"] == 365
    assert "changeableForDays" not in lock["inputs"]
    rules = {r["ruleName"]: r for r in prod.one("backup/plan:Plan")["rules"]}
    assert {t: r["lifecycle"]["deleteAfter"] for t, r in rules.items()} == {
        "daily": 30, "weekly": 90, "monthly": 365}
    assert {t: r["schedule"] for t, r in rules.items()} == TIER_SCHEDULES
    assert all("copyActions" not in r for r in rules.values())
    selection = prod.named("prodstack-backup-selection")
    assert _deps(selection, "resources") == ["aws:rds/instance:Instance::prodstack-db-instance"]
    assert _deps(selection, "planId") == ["aws:backup/plan:Plan::prodstack-backup-plan"]
    # RDS's own automated backups stay for point-in-time restore.
    assert prod.one("rds/instance:Instance")["backupRetentionPeriod"] == 30


def test_prod_drills_a_restore_daily_and_alarms_when_it_fails_or_goes_missing(
        prod: Manifest) -> None:
    drill = prod.one("backup/restoreTestingPlan:RestoreTestingPlan")
    assert drill["recoveryPointSelection"]["algorithm"] == "LATEST_WITHIN_WINDOW"
    assert drill["scheduleExpression"] == "cron(0 9 * * ? *)"
    tested = prod.named("prodstack-backup-drill-rds")
    assert tested["inputs"]["protectedResourceType"] == "RDS"
    assert _deps(tested, "protectedResourceArns") == [
        "aws:rds/instance:Instance::prodstack-db-instance"]
    missing = prod.one("cloudwatch/metricAlarm:MetricAlarm", "prodstack-backup-drill-missing")
    assert missing["metricName"] == "NumberOfRestoreJobsCompleted"
    assert missing["treatMissingData"] == "breaching" and missing["alarmActions"]
    failed = prod.one("cloudwatch/metricAlarm:MetricAlarm", "prodstack-backup-drill-failed")
    assert failed["metricName"] == "NumberOfRestoreJobsFailed" and failed["threshold"] == 0
    pattern = json.loads(prod.one("cloudwatch/eventRule:EventRule",
                                  "prodstack-backup-job-failures")["eventPattern"])
    assert pattern["source"] == ["aws.backup"]
    assert {"FAILED", "EXPIRED"} <= set(pattern["detail"]["$or"][0]["state"])
    assert {"FAILED", "EXPIRED"} <= set(pattern["detail"]["$or"][1]["status"])


def test_dev_takes_the_cheap_form(dev: Manifest) -> None:
    rules = {r["ruleName"]: r["lifecycle"]["deleteAfter"]
             for r in dev.one("backup/plan:Plan")["rules"]}
    assert rules == {"daily": 7, "weekly": 35, "monthly": 90}
    assert not dev.all("backup/vaultLockConfiguration:VaultLockConfiguration")
    assert not dev.all("backup/restoreTestingPlan:RestoreTestingPlan")
    assert dev.one("backup/vault:Vault")["forceDestroy"] is True
    assert len(dev.all("backup/vault:Vault")) == 1


def test_data_tier_events_reach_the_topic_its_key_and_policy_admit(prod: Manifest) -> None:
    subscription = prod.named("prodstack-prod-obs-rds-events")
    assert set(RDS_EVENT_CATEGORIES) >= {"failure", "failover", "low storage", "maintenance"}
    assert subscription["inputs"]["eventCategories"] == list(RDS_EVENT_CATEGORIES)
    assert _deps(subscription, "sourceIds") == [
        "aws:rds/instance:Instance::prodstack-db-instance"]
    assert _deps(subscription, "snsTopic") == ["aws:sns/topic:Topic::prodstack-prod-obs-alarms"]
    pattern = json.loads(prod.one("cloudwatch/eventRule:EventRule",
                                  "prodstack-prod-obs-cache-events")["eventPattern"])
    assert pattern["source"] == ["aws.elasticache"]
    policy = json.loads(prod.one("sns/topicPolicy:TopicPolicy")["policy"])
    key = json.loads(prod.one("kms/key:Key", "prodstack-prod-obs-key")["policy"])
    for document in (policy, key):
        services = {s["Principal"]["Service"]: s for s in document["Statement"]
                    if "Service" in s.get("Principal", {})}
        for service in ("events.amazonaws.com", "events.rds.amazonaws.com"):
            condition = services[service]["Condition"]
            assert condition["StringEquals"]["aws:SourceAccount"]
            assert condition["ArnLike"]["aws:SourceArn"].startswith(
                "arn:aws:events:" if service == "events.amazonaws.com" else "arn:aws:rds:")


def test_compliance_lock_and_a_second_region_copy_every_tier(
        variants: dict[str, Manifest]) -> None:
    m = variants["compliance-copy"]
    assert run_all(m) == []
    locks = {r["name"]: r["inputs"] for r in m.all("backup/vaultLockConfiguration:"
                                                   "VaultLockConfiguration")}
    assert set(locks) == {"prodstack-backup-vault-lock", "prodstack-backup-copy-vault-lock"}
    assert all(lock["changeableForDays"] == 3 for lock in locks.values())
    copy = m.named("prodstack-backup-copy-vault")
    assert copy["inputs"]["region"] == "eu-central-1" and copy["inputs"]["name"] == (
        "prodstack-prod-copy")
    assert m.one("kms/key:Key", "prodstack-backup-copy-key")["region"] == "eu-central-1"
    for rule in m.one("backup/plan:Plan")["rules"]:
        (action,) = rule["copyActions"]
        assert action["lifecycle"]["deleteAfter"] == rule["lifecycle"]["deleteAfter"]


def test_backup_args_refuse_a_compliance_vault_that_destroy_would_have_to_empty() -> None:
    with pytest.raises(ValueError, match="force_destroy"):
        BackupArgs(vault_name="v1", db_instance_arn="arn", alarm_topic_arn="arn",
                   vault_lock="compliance", force_destroy=True)
    for bad in ("bad name'", "v" * 41, "x"):
        with pytest.raises(ValueError, match="vault_name"):
            BackupArgs(vault_name=bad, db_instance_arn="arn", alarm_topic_arn="arn")


def test_restore_creates_a_new_instance_from_the_current_one_and_switches_to_it(
        variants: dict[str, Manifest]) -> None:
    m = variants["restore"]
    assert run_all(m) == []
    restored = m.named("prodstack-db-restored")["inputs"]
    assert restored["identifier"] == RESTORED == "prodstack-prod-r2612070500"
    assert restored["restoreToPointInTime"] == {
        "sourceDbInstanceIdentifier": "prodstack-prod", "restoreTime": WHEN}
    assert "dbName" not in restored and "username" not in restored  # from the source
    for key in ("storageEncrypted", "deletionProtection", "iamDatabaseAuthenticationEnabled",
                "multiAz", "manageMasterUserPassword"):
        assert restored[key] is True, key
    # The original stays, marked, and the program never deletes it.
    original = m.named("prodstack-db-instance")
    assert original["inputs"]["tags"]["prodstack:restore-source"] == "kept"
    # Everything that reads the database follows the restored instance.
    api = m.containers("prodstack-prod")["api"]
    host = {e["name"]: e["value"] for e in api["environment"]}["DB_HOST"]
    assert host.startswith(f"{RESTORED}.")
    restored_urn = "aws:rds/instance:Instance::prodstack-db-restored"
    for name, key in (("prodstack-backup-selection", "resources"),
                      ("prodstack-backup-drill-rds", "protectedResourceArns"),
                      ("prodstack-prod-obs-rds-events", "sourceIds")):
        assert _deps(m.named(name), key) == [restored_urn], name
    assert m.one("cloudwatch/logGroup:LogGroup",
                 "prodstack-db-restored-log-postgresql")["name"] == (
        f"/aws/rds/instance/{RESTORED}/postgresql")


def test_release_drops_the_original_from_the_stack_only(variants: dict[str, Manifest]) -> None:
    m = variants["release"]
    assert run_all(m) == []
    assert [r["name"] for r in m.all("rds/instance:Instance")] == ["prodstack-db-restored"]


def test_restored_identifier_fits_rds_and_differs_per_time() -> None:
    longest = "a" * 50  # DatabaseArgs allows 50
    assert len(restored_identifier(longest, WHEN)) <= 63
    assert restored_identifier("db", WHEN) != restored_identifier("db", "2026-12-07T05:01:00Z")
