"""The deploy's refusal of an off-site bucket that would let the host's key overwrite the
history it cannot delete: `prodstack-backup bucket` asks the S3 API with the host's own
key through botocore (Debian's python3-botocore on the host), against moto's server with
its IAM checks on (a bad signature or a key without the right is refused by moto as it
would be by S3)."""

from __future__ import annotations

import json

import boto3
import pytest
from tasks.config import settings_for

from prodstack.host import backup as backup_module
from tests.support.moto import moto_server
from tests.vps.e2e import free_port
from tests.vps.test_templates import render

# moto lets this many requests through unsigned, then checks every signature against
# the IAM users it knows: enough to create the admin user, its policy and its key.
UNAUTHENTICATED = 3
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


@pytest.fixture(scope="module")
def moto_iam(tmp_path_factory):
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with moto_server(log, env={"INITIAL_NO_AUTH_ACTION_COUNT": str(UNAUTHENTICATED)}) as url:
        yield from _admin(url)


def _admin(url: str):
    anon = {"endpoint_url": url, "region_name": "us-east-1",
            "aws_access_key_id": "x", "aws_secret_access_key": "x"}  # fmt: skip
    iam = boto3.client("iam", **anon)
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="all",
                        PolicyDocument=json.dumps(ADMIN_POLICY))  # fmt: skip
    admin = iam.create_access_key(UserName="admin")["AccessKey"]
    keys = {"aws_access_key_id": admin["AccessKeyId"],
            "aws_secret_access_key": admin["SecretAccessKey"]}  # fmt: skip
    yield url, {**anon, **keys}


def host_key(moto_iam, name, actions):
    """A key like the host's: the rights the docs' policy gives it, and `actions`."""
    url, admin = moto_iam
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*"}]}  # fmt: skip
    iam.put_user_policy(UserName=name, PolicyName="host", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


CHECK = ["s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration"]


def bucket(moto_iam, name, versioning=None, **create):
    url, admin = moto_iam
    s3 = boto3.client("s3", **admin)
    s3.create_bucket(Bucket=name, **create)
    if versioning:
        s3.put_bucket_versioning(Bucket=name,
                                 VersioningConfiguration={"Status": versioning})  # fmt: skip
    return url


def settings(url, name, key, secret):
    # moto serves plain HTTP here; the host's URL is https (s3_settings, tested below).
    return {"endpoint": url, "addressing": "path", "bucket": name, "region": "us-east-1",
            "key": key, "secret": secret, "ca_file": None}  # fmt: skip


@pytest.fixture(scope="module")
def script():
    return backup_module


@pytest.mark.parametrize(
    ("versioning", "create", "state"),
    [
        ("Enabled", {}, "versioned"),
        # Object Lock implies versioning: either answer is a bucket that keeps old versions.
        (None, {"ObjectLockEnabledForBucket": True}, "versioned"),
        (None, {}, "unprotected"),
        ("Suspended", {}, "unprotected"),
    ],
)  # fmt: skip
def test_the_bucket_is_read_through_the_s3_api_with_the_hosts_key(
    script, moto_iam, versioning, create, state
):
    name = f"b-{state}-{versioning or 'none'}-{len(create)}".lower()
    url = bucket(moto_iam, name, versioning, **create)
    key, secret = host_key(moto_iam, f"host-{name}", CHECK)
    assert script.bucket_protection(settings(url, name, key, secret))[0] == state


def test_a_bad_signature_is_not_taken_for_a_versioned_bucket(script, moto_iam):
    url = bucket(moto_iam, "b-badsig", "Enabled")
    key, secret = host_key(moto_iam, "host-badsig", CHECK)
    state, detail = script.bucket_protection(settings(url, "b-badsig", key, secret + "x"))
    assert state == "denied", detail


def test_a_key_without_the_read_right_is_refused_naming_the_rights(script, moto_iam):
    url = bucket(moto_iam, "b-noright", "Enabled")
    key, secret = host_key(moto_iam, "host-noright", ["s3:GetObject", "s3:PutObject"])
    state, detail = script.bucket_protection(settings(url, "b-noright", key, secret))
    assert state == "denied"
    assert "s3:GetBucketVersioning" in detail


def test_an_unreachable_endpoint_is_left_to_init(script):
    closed = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    assert script.bucket_protection(settings(closed, "b", "k", "s"))[0] == "unreachable"


def test_an_unversioned_bucket_refuses_the_deploy_naming_the_key_and_the_fix(
    script, moto_iam, monkeypatch
):
    url = bucket(moto_iam, "b-refused")
    key, secret = host_key(moto_iam, "host-refused", CHECK)
    monkeypatch.setattr(script, "s3_settings",
                        lambda path: settings(url, "b-refused", key, secret))  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        script.bucket({})
    message = str(refused.value)
    for needle in ("backup_s3_bucket `b-refused`", "BACKUP_S3_ACCESS_KEY_ID",
                   "put-bucket-versioning --bucket b-refused", "Object Lock"):  # fmt: skip
        assert needle in message


@pytest.mark.parametrize(
    ("extra", "endpoint", "addressing"),
    [
        ({}, "https://s3.eu-west-1.amazonaws.com", "virtual"),
        ({"backup_s3_endpoint_url": "https://minio.internal:9000", "backup_s3_uri_style": "path"},
         "https://minio.internal:9000", "path"),
    ],
)  # fmt: skip
def test_the_check_reads_the_rendered_pgbackrest_conf(script, data, environ, tmp_path, extra,
                                                      endpoint, addressing):  # fmt: skip
    data = {**data, "backup_s3_bucket": "prodstack-backups", "backup_s3_region": "eu-west-1",
            **extra}  # fmt: skip
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text(render("pgbackrest.j2.conf", cfg))
    s3 = script.s3_settings(str(conf))
    assert (s3["endpoint"], s3["addressing"], s3["bucket"]) == (
        endpoint, addressing, "prodstack-backups")
    assert s3["region"] == "eu-west-1"
    assert s3["key"] == cfg.secrets["BACKUP_S3_ACCESS_KEY_ID"]
    assert s3["secret"] == cfg.secrets["BACKUP_S3_SECRET_ACCESS_KEY"]


def test_init_refuses_an_unversioned_bucket_before_it_creates_anything(
    script, moto_iam, monkeypatch
):
    url = bucket(moto_iam, "b-init")
    key, secret = host_key(moto_iam, "host-init", CHECK)
    monkeypatch.setattr(script, "s3_settings", lambda path: settings(url, "b-init", key, secret))

    def untouched(*args, **kwargs):
        raise AssertionError("init read or created a repository before the bucket check")

    monkeypatch.setattr(script, "repo_states", untouched)
    monkeypatch.setattr(script, "pgbackrest", untouched)
    with pytest.raises(SystemExit, match="backup_s3_bucket `b-init`"):
        script.init({"repos": 2})
    assert json.loads(json.dumps(script.bucket_state({})))["state"] == "unprotected"
