"""`prodstack plan --profile vps`: the real deploy.py, run by pyinfra against a fake
reference host. Every plan here comes from real pyinfra; nothing of ours is mocked."""

from __future__ import annotations

import hashlib
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from prodstack import planfile
from prodstack.errors import UsageError
from prodstack.vps_plan import (
    PLACEHOLDER_PUBLIC_KEY,
    REFERENCE_HOSTS,
    parse_data,
    placeholder_secret,
    plan_vps,
)

REPO = Path(__file__).resolve().parents[2]
PYINFRA_DIR = REPO / "pyinfra"
if str(PYINFRA_DIR) not in sys.path:
    sys.path.append(str(PYINFRA_DIR))

from tasks import config as task_config  # noqa: E402
from tasks import nginx  # noqa: E402
from tasks.postgres import tuning  # noqa: E402
from tasks.redis import wanted_users  # noqa: E402

SECRET_NAMES = (*task_config.REQUIRED_SECRETS, *task_config.DB_SECRETS, *task_config.S3_SECRETS)
PG_CONF = "/etc/postgresql/15/main/conf.d/prodstack.conf"


@pytest.fixture(scope="module")
def medium() -> dict:
    return plan_vps({}, root=REPO)


def files(plan: dict) -> dict[str, str]:
    return {r["name"]: r["inputs"]["content"] for r in plan["resources"] if r["type"] == "vps:file"}


def resource(plan: dict, rid: str) -> dict:
    (found,) = [r for r in plan["resources"] if r["id"] == rid]
    return found


def conf_lines(text: str) -> dict[str, str]:
    pairs = (line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    return dict(pairs)


def redacted(text: str) -> str:
    for name in SECRET_NAMES:
        text = text.replace(placeholder_secret(name), planfile.secret_marker(name))
    return text


def render(name: str, **context) -> str:
    """The template as the deploy renders it, without pyinfra: the same jinja2 settings."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string((PYINFRA_DIR / "templates" / name).read_text()).render(**context)


def expected_cfg(**overrides):
    data = {
        k: v
        for k, v in runpy.run_path(str(PYINFRA_DIR / "group_data" / "all.py")).items()
        if not k.startswith("__")
    }
    data.update(deploy_user_public_keys=[PLACEHOLDER_PUBLIC_KEY], secrets_file=os.devnull)
    data.update(overrides)
    environ = {f"PRODSTACK_{name}": placeholder_secret(name) for name in SECRET_NAMES}
    return task_config.settings_for(data, {"web", "db"}, environ=environ)


def copy_checkout(tmp_path: Path) -> Path:
    """The parts of a checkout a VPS plan reads: pyinfra/ and app/."""
    root = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "secrets.env")
    for part in ("pyinfra", "app"):
        shutil.copytree(REPO / part, root / part, ignore=ignore)
    return root


# --- No drift: the files are what the deploy's templates render ----------------------------


def test_postgres_redis_and_nginx_files_are_the_templates_rendered_for_the_reference_host(
    medium,
):
    cfg = expected_cfg()
    host = REFERENCE_HOSTS["medium"]
    rendered = files(medium)
    settings = tuning(host["host_memory_mb"], host["host_cpus"], 50, 200)
    assert rendered[PG_CONF] == redacted(
        render("postgresql.j2.conf", cfg=cfg, settings=settings)
    )
    assert rendered["/etc/redis/redis.conf"] == redacted(
        render("redis.j2.conf", cfg=cfg, maxmemory_mb=host["host_memory_mb"] * 10 // 100,
               users=wanted_users(cfg))  # fmt: skip
    )
    assert rendered["/etc/nginx/sites-available/prodstack.conf"] == redacted(
        render(
            "nginx-site.j2.conf",
            cfg=cfg,
            cert=nginx.CERT,
            key=nginx.KEY,
            webroot=nginx.WEBROOT,
            upstream_servers=nginx.UPSTREAM_SERVERS,
            ipv6=True,
            status_port=nginx.MONITORING_PORTS["nginx stub_status"],
            grafana_port=nginx.MONITORING_PORTS["grafana"],
        )
    )
    # The host tools' archive: each member named with its digest, so a diff names the tool.
    archive = rendered["/usr/local/lib/prodstack/prodstack-host.pyz"]
    release_py = (REPO / "prodstack" / "host" / "release.py").read_bytes()
    assert (f"prodstack/host/release.py  {len(release_py)} bytes  "
            f"sha256 {hashlib.sha256(release_py).hexdigest()[:16]}") in archive  # fmt: skip
    link = resource(medium, "link:/usr/local/sbin/prodstack-release")["inputs"]
    assert link["target"] == "/usr/local/lib/prodstack/prodstack-host.pyz"


def test_reference_host_is_a_fresh_debian_12_of_the_size(medium):
    host = resource(medium, "host:reference")["inputs"]
    assert host["host_memory_mb"] == 8192 and host["host_cpus"] == 4
    assert host["host_distribution"] == "debian-12" and host["postgres_version"] == "15"
    assert medium["settings"]["host_memory_mb"] == 8192
    cluster = resource(medium, "postgres:main")
    assert cluster["type"] == "vps:postgres_cluster"
    assert cluster["inputs"] == {"version": "15", "data_directory": "/var/lib/postgresql/15/main"}
    # A fresh host: everything is installed, one apt transaction after an update.
    (install,) = [op for op in medium["operations"] if op["operation"] == "apt.packages"]
    assert install["commands"][0] == "apt-get update"
    assert "package:postgresql" in install["writes"] and install["component"] == "Base packages"
    assert resource(medium, "user:deploy")["inputs"]["public_keys"] == [PLACEHOLDER_PUBLIC_KEY]


def test_every_resource_kind_is_recorded_with_its_component(medium):
    kinds = {r["type"] for r in medium["resources"]}
    assert kinds >= {
        "vps:file", "vps:directory", "vps:package", "vps:user", "vps:firewall", "vps:service",
        "vps:postgres_role", "vps:postgres_database", "vps:postgres_cluster", "vps:host",
        "vps:api_replicas",
    }  # fmt: skip
    assert resource(medium, f"file:{PG_CONF}")["component"] == "PostgreSQL"
    assert resource(medium, f"file:{PG_CONF}")["inputs"]["template"] == "postgresql.j2.conf"
    assert resource(medium, "file:/etc/redis/redis.conf")["inputs"]["mode"] == "640"
    assert resource(medium, "service:redis-server.service")["inputs"]["running"] is True
    from tasks.firewall import wanted_rules

    rules = {r["name"] for r in medium["resources"] if r["type"] == "vps:firewall"}
    assert rules == {args for args, _ in wanted_rules(expected_cfg())}
    ids = {r["id"] for r in medium["resources"]}
    for op in medium["operations"]:
        assert set(op["writes"]) <= ids, op["name"]
        assert set(op) >= {"name", "component", "operation", "kwargs", "commands", "writes",
                           "triggers", "effects"}  # fmt: skip


# --- Settings drive the plan --------------------------------------------------------------


def test_size_changes_postgres_tuning_and_the_reference_host():
    small, large = (plan_vps({"size": size}, root=REPO) for size in ("small", "large"))
    small_pg, large_pg = (conf_lines(files(p)[PG_CONF]) for p in (small, large))
    assert small_pg["shared_buffers"] == "512MB" and large_pg["shared_buffers"] == "2048MB"
    assert small_pg["max_parallel_workers"] == "2" and large_pg["max_parallel_workers"] == "8"
    assert resource(small, "host:reference")["inputs"]["host_memory_mb"] == 4096
    assert resource(large, "host:reference")["inputs"]["host_cpus"] == 8
    assert resource(small, "api:replicas")["inputs"]["replicas"] == 2


def test_host_memory_override_changes_shared_buffers_only_through_the_host(medium):
    bigger = plan_vps({"host_memory_mb": 16384}, root=REPO)
    assert conf_lines(files(medium)[PG_CONF])["shared_buffers"] == "1024MB"
    assert conf_lines(files(bigger)[PG_CONF])["shared_buffers"] == "2048MB"
    assert "maxmemory 1638mb" in files(bigger)["/etc/redis/redis.conf"]
    host = resource(bigger, "host:reference")["inputs"]
    assert host["host_memory_mb"] == 16384 and host["host_cpus"] == 4  # still medium's


def test_replicas_change_the_release_settings(medium):
    five = plan_vps(parse_data(["replicas=5"]), root=REPO)
    release = json.loads(files(five)["/etc/prodstack/release.json"])
    assert release["replicas"] == 5
    assert json.loads(files(medium)["/etc/prodstack/release.json"])["replicas"] == 3
    replicas = resource(five, "api:replicas")["inputs"]
    assert replicas["replicas"] == 5 and replicas["ports"] == [8001, 8002, 8003, 8004, 8005]


def test_ubuntu_reference_host_gets_its_postgres_version():
    plan = plan_vps({"host_distribution": "ubuntu-24.04"}, root=REPO)
    assert resource(plan, "postgres:main")["inputs"]["version"] == "16"
    assert "file:/etc/postgresql/16/main/conf.d/prodstack.conf" in {
        r["id"] for r in plan["resources"]
    }


def test_a_sudo_ssh_user_joins_the_ssh_group_so_the_deploy_keeps_it_able_to_log_in():
    plan = plan_vps({"ssh_user": "admin"}, root=REPO)
    (join,) = [op for op in plan["operations"] if op["name"] == "SSH user admin in ssh-users"]
    assert join["operation"] == "server.user"
    assert join["kwargs"]["groups"] == ["ssh-users"] and join["kwargs"]["append"] is True


# --- Restarts: which operations an `_if` reads --------------------------------------------


def test_postgres_restart_is_triggered_by_the_postgresql_conf_template(medium):
    ops = {op["name"]: op for op in medium["operations"]}
    (conf,) = [op for op in ops.values() if f"file:{PG_CONF}" in op["writes"]]
    assert conf["operation"] == "files.template" and conf["component"] == "PostgreSQL"
    (restart,) = [
        op for op in ops.values() if "postgresql@15-main.service" in op["effects"]["restart"]
    ]
    assert restart["component"] == "PostgreSQL" and restart["triggers"] == [conf["name"]]
    assert restart["changed"] is True  # a fresh host: the file changes, so it restarts
    names = list(ops)
    assert names.index(conf["name"]) < names.index(restart["name"])
    # Both sides of `hba.did_change() and not conf.did_change()` are read.
    (reload,) = [
        op for op in ops.values() if "postgresql@15-main.service" in op["effects"]["reload"]
    ]
    assert conf["name"] in reload["triggers"] and len(reload["triggers"]) == 2
    # `any(...)` over the units: every unit is a trigger, not only the first that changed.
    (daemon_reload,) = [op for op in ops.values() if op["name"] == "Reload systemd units (backups)"]
    assert len(daemon_reload["triggers"]) == 8  # tasks/pgbackrest.py UNITS


def test_an_app_change_is_a_new_image_and_a_rolling_deploy(tmp_path, medium):
    root = copy_checkout(tmp_path)
    (root / "app" / "added.py").write_text("CHANGED = True\n")
    changed = plan_vps({}, root=root)
    before = resource(medium, "api:replicas")["inputs"]["image"]
    after = resource(changed, "api:replicas")["inputs"]["image"]
    assert before != after and after.startswith("prodstack-api:src-")
    (deploy,) = [op for op in changed["operations"] if op["effects"]["rolling_deploy"]]
    assert after in deploy["commands"][0] and deploy["writes"] == ["api:replicas"]
    ship = [op for op in changed["operations"] if op["name"].startswith("Ship ")]
    assert ship and ship[0]["operation"] == "files.put"


def test_two_checkouts_in_one_process_do_not_mix(tmp_path, medium):
    root = copy_checkout(tmp_path)
    template = root / "pyinfra" / "templates" / "redis.j2.conf"
    template.write_text(template.read_text() + "# only in the other checkout\n")
    task = root / "pyinfra" / "tasks" / "redis.py"
    task.write_text(task.read_text().replace('label="Redis"', 'label="Redis (other)"'))
    other = plan_vps({}, root=root)
    assert files(other)["/etc/redis/redis.conf"].endswith("# only in the other checkout\n")
    assert "Restart Redis (other) for the new configuration" in {
        op["name"] for op in other["operations"]
    }
    again = plan_vps({}, root=REPO)
    assert planfile.dumps(again) == planfile.dumps(medium)


# --- Secrets ------------------------------------------------------------------------------


def test_no_secret_placeholder_survives_anywhere():
    plan = plan_vps(
        {"backup_s3_bucket": "backups", "backup_s3_endpoint_url": "https://s3.example.net",
         "domain": "api.example.com",
         "letsencrypt_email": "ops@example.com"},
        root=REPO,
    )  # fmt: skip
    text = planfile.dumps(plan)
    for name in SECRET_NAMES:
        assert placeholder_secret(name) not in text
        assert "placeholder" not in text.replace("PLANPLACEHOLDERKEY", "")
    rendered = files(plan)
    assert "API_TOKEN=[secret:API_TOKEN]" in rendered["/etc/prodstack/app.env"]
    assert "[secret:POSTGRES_PASSWORD]@" in rendered["/etc/prodstack/app.env"]  # in the URL
    # Redis keeps only SHA-256 hashes of its users' passwords: no secret in redis.conf.
    assert "requirepass" not in rendered["/etc/redis/redis.conf"]
    assert "[secret:" not in rendered["/etc/redis/redis.conf"]
    assert "user default off" in rendered["/etc/redis/redis.conf"]
    pgbackrest = rendered["/etc/pgbackrest.conf"]
    assert "repo2-s3-key-secret=[secret:BACKUP_S3_SECRET_ACCESS_KEY]" in pgbackrest
    assert "repo1-cipher-pass=[secret:BACKUP_CIPHER_PASSPHRASE]" in pgbackrest
    (owner,) = [
        op for op in plan["operations"]
        if op["operation"] == "postgres.role" and op["kwargs"]["role"] != "prometheus"
    ]  # fmt: skip
    # The owner never logs in; its login role gets the password, as a SCRAM verifier.
    assert owner["kwargs"]["login"] is False and "password" not in owner["kwargs"]
    (login,) = [op for op in plan["operations"] if op["name"].startswith("App login role")]
    command_line, script = login["commands"][0].split("\n", 1)
    assert "\\set verifier '[secret:POSTGRES_PASSWORD]'\n" in script
    assert "\\set login 'prodstack_a'\n" in script
    assert "secret" not in command_line and "verifier" not in command_line


def test_set_secrets_are_read_only_for_a_version_and_never_reach_the_deploy(
    tmp_path, monkeypatch
):
    root = copy_checkout(tmp_path)
    (root / "pyinfra" / "secrets.env").write_text("API_TOKEN=file-token-value-0123456789\n")
    monkeypatch.setenv("PRODSTACK_REDIS_PASSWORD", "env-redis-value-0123456789")
    plan = plan_vps({}, root=root)
    text = planfile.dumps(plan)
    assert "file-token-value" not in text and "env-redis-value" not in text
    token = planfile.value_version("API_TOKEN", "file-token-value-0123456789")
    redis = planfile.value_version("REDIS_PASSWORD", "env-redis-value-0123456789")
    app_env = files(plan)["/etc/prodstack/app.env"]
    assert f"API_TOKEN=[secret:API_TOKEN@{token}]" in app_env
    assert f"[secret:REDIS_PASSWORD@{redis}]@" in app_env  # in REDIS_URL
    # Not set anywhere: a placeholder with no version.
    assert "[secret:POSTGRES_PASSWORD]@" in app_env
    assert os.environ["PRODSTACK_REDIS_PASSWORD"] == "env-redis-value-0123456789"
    assert "PRODSTACK_API_TOKEN" not in os.environ


def test_a_malformed_secrets_file_is_the_deploys_error_naming_the_file(tmp_path):
    root = copy_checkout(tmp_path)
    secrets = root / "pyinfra" / "secrets.env"
    secrets.write_text("API_TOKEN=file-token-value-0123456789\nnot a pair\n")
    with pytest.raises(UsageError, match="secrets_file.*line 2 is not KEY=value") as error:
        plan_vps({}, root=root)
    assert "file-token-value" not in str(error.value)


def test_the_plan_runs_no_process(monkeypatch):
    """No docker, no image build, no ssh-keygen: nothing outside this process."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"the plan started a process: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    plan_vps({"ssh_key": "~/.ssh/id_ed25519"}, root=REPO)


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"sise": "small"}, "sise"),
        ({"size": "huge"}, "size"),
        ({"replicas": 0}, "replicas"),
        ({"postgres_port": 22}, "postgres_port"),
        ({"host_memory_mb": "lots"}, "host_memory_mb"),
        ({"host_distribution": "arch"}, "host_distribution"),
        ({"host_distribution": "debian-11"}, "postgres_version"),
        ({"host_ipv6": "maybe"}, "host_ipv6"),
    ],
)
def test_bad_data_is_one_usage_error_naming_the_key(overrides, named):
    with pytest.raises(UsageError) as error:
        plan_vps(overrides, root=REPO)
    message = str(error.value)
    # Named as the cloud names a key: `key: value is invalid; ...`, on one line.
    assert message.startswith(f"invalid configuration: {named}: ") and "\n" not in message


def test_every_bad_key_is_named_once_on_the_exit_2_line():
    """VPS-only keys, shared keys, the reference host's keys and an unknown key, bad at
    once, hostile where a value would reach a config file: one line names each once."""
    from tests.plan.test_cli import one_line_error, prodstack

    bad = {
        "sise": "small",
        "host_cpus": "0",
        "host_ipv6": "maybe",
        "replicas": "0",
        "app_port_base": "'8001; DROP TABLE x'",
        "ssh_user": 'root"\nPermitRootLogin yes',
        "backup_full_calendar": "daily\nExecStart=/bin/sh",
        "docker_bridge": "b" * 10_000,
        "client_max_body_size": '1m"; include /etc/shadow;',
        "tls": "sometimes",
    }
    args = [arg for key, value in bad.items() for arg in ("--data", f"{key}={value}")]
    proc = prodstack("plan", "--profile", "vps", *args)
    line = one_line_error(proc, "prodstack: invalid configuration: ")
    for key in bad:
        assert len(re.findall(rf"(?<!\w){key}: .+? is invalid; allowed: ", line)) == 1, key
    assert line.count(" is invalid; allowed: ") == len(bad)
    assert "b" * 200 not in line and "(10002 characters)" in line


def test_connector_keys_are_accepted_and_passwords_never_shown():
    plan = plan_vps({"ssh_user": "admin", "ssh_port": 2222, "ssh_password": "hunter2-xyz"},
                    root=REPO)  # fmt: skip
    assert plan["settings"]["ssh_port"] == 2222
    assert "hunter2-xyz" not in planfile.dumps(plan)


def test_parse_data_parses_values_like_pyinfra():
    assert parse_data(
        ["replicas=5", "image_pull=true", 'db_client_cidrs=["10.0.0.1/32"]', "domain=a=b.c"]
    ) == {"replicas": 5, "image_pull": True, "db_client_cidrs": ["10.0.0.1/32"], "domain": "a=b.c"}
    with pytest.raises(UsageError, match="'size'.*key=value"):
        parse_data(["size"])


def test_not_a_checkout_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="pyinfra/deploy.py"):
        plan_vps({}, root=tmp_path)


# --- Determinism ----------------------------------------------------------------------------


def test_byte_identical_in_one_process_and_across_hash_seeds_and_time_zones(medium):
    text = planfile.dumps(medium)
    assert planfile.dumps(plan_vps({}, root=REPO)) == text
    assert str(REPO) not in text and "/tmp/" not in text
    script = (
        "import sys; from pathlib import Path; from prodstack import planfile; "
        "from prodstack.vps_plan import plan_vps; "
        f"sys.stdout.write(planfile.dumps(plan_vps({{}}, root=Path({str(REPO)!r}))))"
    )
    for seed, tz in (("1", "UTC"), ("4242", "Pacific/Chatham")):
        env = {**os.environ, "PYTHONHASHSEED": seed, "TZ": tz}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd="/", capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        assert out.stdout == text


def test_a_provided_private_key_is_never_in_the_plan(tmp_path):
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\ncertificate-body\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nkey-material-xyz\n-----END PRIVATE KEY-----\n")
    plan = plan_vps(
        {"tls": "provided", "tls_certificate_file": str(cert), "tls_key_file": str(key)},
        root=REPO,
    )
    assert "key-material-xyz" not in planfile.dumps(plan)
    assert files(plan)[nginx.KEY] == planfile.secret_marker("tls_key_file")
    assert "certificate-body" in files(plan)[nginx.CERT]


def test_the_plan_leaves_the_process_unpatched():
    """pyinfra's CLI package patches the stdlib for gevent, which would hang the cloud plan
    (Pulumi's mocks) later in the same process; the planner must not trigger it."""
    script = (
        "import sys; from pathlib import Path; import gevent.monkey as m; "
        "from prodstack.vps_plan import parse_data, plan_vps; "
        f"plan_vps(parse_data(['size=small']), root=Path({str(REPO)!r})); "
        "print(m.is_module_patched('socket'), m.is_module_patched('threading'))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.split() == ["False", "False"]
