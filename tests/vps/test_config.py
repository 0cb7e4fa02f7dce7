"""Inventory data is validated before anything changes, with messages that name the key."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace

import pytest
from tasks.config import SIZES, SettingsError, settings_for
from tasks.postgres import scram_matches, scram_verifier, tuning

SINGLE = {"web", "db"}


def test_defaults_work_from_an_address_and_a_key(data, environ):
    cfg = settings_for(data, SINGLE, environ=environ)
    assert cfg.size == "medium" and cfg.replicas == 3  # three replicas (docs/targets.md)
    assert cfg.tls == "selfsigned" and cfg.server_name == "_"
    assert cfg.app_ports == [8001, 8002, 8003]
    assert cfg.app_spare_ports == [8101, 8102, 8103]
    assert cfg.db_address == "172.30.232.1"
    assert cfg.db_listen_addresses == ("127.0.0.1", "172.30.232.1")
    assert cfg.db_client_cidrs == ("172.30.232.0/24",)
    assert cfg.backup_retention_days == 30
    assert cfg.postgres_login_roles == ("prodstack_a", "prodstack_b")
    login = replace(cfg, postgres_login="prodstack_b")
    assert login.database_url.startswith("postgresql://prodstack_b:pg-password-")
    assert cfg.redis_url == "redis://prodstack:redis-password-0123456789@172.30.232.1:6379/0"


@pytest.mark.parametrize("size", list(SIZES))
def test_sizes_share_the_cloud_names_and_set_replicas(data, environ, size):
    cfg = settings_for({**data, "size": size}, SINGLE, environ=environ)
    assert cfg.replicas == SIZES[size]["replicas"]
    assert cfg.container_memory_mb == SIZES[size]["container_memory_mb"]


def test_explicit_replicas_win_over_size(data, environ):
    assert settings_for({**data, "replicas": 5}, SINGLE, environ=environ).replicas == 5


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"replicas": 0}, "`replicas`"),
        ({"replicas": -2}, "`replicas`"),
        ({"replicas": "three"}, "`replicas`"),
        ({"size": "huge"}, "`size`"),
        ({"domain": "https://api.example.com"}, "`domain`"),
        ({"domain": "api_example.com"}, "`domain`"),
        ({"domain": "localhost"}, "`domain`"),
        ({"domain": "API.example.com"}, "`domain`"),
        ({"app_port_base": 5432}, "collides"),
        ({"app_spare_port_base": 8002}, "collides"),
        ({"redis_port": 5432}, "collides"),
        ({"app_port_base": 443}, "`app_port_base`"),
        ({"tls": "letsencrypt"}, "`tls`"),
        ({"tls": "provided"}, "`tls_certificate_file`"),
        ({"letsencrypt_email": "nobody"}, "`letsencrypt_email`"),
        ({"docker_subnet": "10.0.0.0/30"}, "`docker_subnet`"),
        ({"postgres_user": "app-user"}, "`postgres_user`"),
        ({"ssh_permit_root_login": "yes"}, "`ssh_permit_root_login`"),
        ({"client_max_body_size": "lots"}, "`client_max_body_size`"),
        ({"image": "Not An Image"}, "`image`"),
        ({"deploy_strategy": "canary"}, "`deploy_strategy`"),
        ({"deploy_strategy": "blue-green"}, "`deploy_strategy`"),
        ({"bake_seconds": -1}, "`bake_seconds`"),
        ({"bake_seconds": 86401}, "`bake_seconds`"),
        ({"migrate_timeout_seconds": 5}, "`migrate_timeout_seconds`"),
        ({"migrate_timeout_seconds": "soon"}, "`migrate_timeout_seconds`"),
        # Operator data that reaches a command line or a config file, hostile on purpose.
        ({"image": "--privileged"}, "`image`"),
        ({"image": "-v/:/host"}, "`image`"),
        ({"image": "a" * 300}, "`image`"),
        ({"backup_s3_bucket": "b-1", "backup_s3_region": "eu-west-1\nrepo2-type=posix"},
         "`backup_s3_region`"),
        ({"backup_s3_bucket": "b-1", "backup_s3_region": "eu west 1"}, "`backup_s3_region`"),
        ({"alert_email": "ops@example.com", "alert_smarthost": "smtp.example.com:587",
          "alert_smarthost_user": 'ops"\n  smtp_require_tls: false'}, "`alert_smarthost_user`"),
        ({"postgres_version": "15; rm -rf /"}, "`postgres_version`"),
        ({"postgres_version": "9"}, "`postgres_version`"),
        ({"deploy_user_public_keys": ['command="sh" ssh-ed25519 AAAAC3Nza x']},
         "`deploy_user_public_keys`"),
        ({"deploy_user_public_keys": ["ssh-ed25519 AAAA x\nssh-rsa AAAA evil"]},
         "`deploy_user_public_keys`"),
        ({"deploy_user_public_keys": ["ssh-ed25519 notbase64 x"]}, "`deploy_user_public_keys`"),
        ({"docker_bridge": "br0; iptables -F"}, "`docker_bridge`"),
        ({"ssh_user": "admin; reboot"}, "`ssh_user`"),
        ({"ssh_user": "admin\n"}, "`ssh_user`"),
        ({"postgres_user": "a" * 62}, "`postgres_user`"),
        ({"backup_s3_region": "eu-west-1\n"}, "`backup_s3_region`"),
        ({"docker_bridge": "a-bridge-name-too-long"}, "`docker_bridge`"),
    ],
)  # fmt: skip
def test_invalid_data_fails_naming_the_key(data, environ, override, key):
    with pytest.raises(SettingsError) as error:
        settings_for({**data, **override}, SINGLE, environ=environ)
    # A shared key's problem is a line of its own, as the cloud prints it (prodstack/profile.py).
    message = str(error.value)
    assert key in message or f"\n{message}".count(f"\n{key.strip('`')}: ") == 1, message


@pytest.mark.parametrize("secret", ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "API_TOKEN"])
def test_missing_secret_fails_naming_it(data, environ, tmp_path, secret):
    del environ[f"PRODSTACK_{secret}"]
    data["secrets_file"] = str(tmp_path / "absent.env")
    with pytest.raises(SettingsError, match=f"^{secret}: None is invalid; allowed: a secret, "):
        settings_for(data, SINGLE, environ=environ)


def test_s3_credentials_are_required_with_a_bucket(data, environ):
    del environ["PRODSTACK_BACKUP_S3_SECRET_ACCESS_KEY"]
    with pytest.raises(SettingsError, match="BACKUP_S3_SECRET_ACCESS_KEY"):
        settings_for({**data, "backup_s3_bucket": "backups"}, SINGLE, environ=environ)


def test_weak_secret_is_refused(data, environ):
    environ["PRODSTACK_API_TOKEN"] = "changethis"
    with pytest.raises(SettingsError, match="^API_TOKEN: \\(value not shown\\) is invalid"):
        settings_for(data, SINGLE, environ=environ)


def test_secrets_file_is_read_and_env_wins(data, tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text(
        "# comment\nPOSTGRES_PASSWORD=from-file-0123456789\n"
        "REDIS_PASSWORD='quoted-0123456789abc'\nAPI_TOKEN=file-token-0123456789\n"
        "BACKUP_CIPHER_PASSPHRASE=file-passphrase-0123456789\n"
    )
    env = {"PRODSTACK_API_TOKEN": "env-token-0123456789abc"}
    cfg = settings_for({**data, "secrets_file": str(path)}, SINGLE, environ=env)
    assert cfg.secrets["POSTGRES_PASSWORD"] == "from-file-0123456789"
    assert cfg.secrets["REDIS_PASSWORD"] == "quoted-0123456789abc"
    assert cfg.secrets["API_TOKEN"] == "env-token-0123456789abc"
    assert "0123456789" not in repr(cfg)  # secrets stay out of reprs and logs


def test_letsencrypt_only_for_public_domains_with_email(data, environ):
    public = {**data, "domain": "api.example.com", "letsencrypt_email": "ops@example.com"}
    assert settings_for(public, SINGLE, environ=environ).tls == "letsencrypt"
    private = {**public, "domain": "api.prodstack.test"}
    assert settings_for(private, SINGLE, environ=environ).tls == "selfsigned"
    assert settings_for({**public, "letsencrypt_email": None}, SINGLE, environ=environ).tls == (
        "selfsigned"
    )


def test_split_layout_uses_private_addresses(data, environ):
    db = {**data, "private_address": "10.0.0.20", "db_client_cidrs": ["10.0.0.10/32"]}
    web_cfg = settings_for({**data, "private_address": "10.0.0.10"}, {"web"}, db_data=db,
                           environ=environ)  # fmt: skip
    assert web_cfg.is_web and not web_cfg.is_db
    assert web_cfg.db_address == "10.0.0.20"
    db_cfg = settings_for(db, {"db"}, environ=environ)
    assert db_cfg.db_listen_addresses == ("127.0.0.1", "10.0.0.20")
    assert db_cfg.db_client_cidrs == ("10.0.0.10/32",)
    with pytest.raises(SettingsError, match="^db_client_cidrs: "):
        settings_for({**db, "db_client_cidrs": []}, {"db"}, environ=environ)


def test_postgres_tuning_matches_the_seed_on_its_host():
    # The reference database host (docs/targets.md): 8 GB, 4 cores -> 2GB / 6GB / 512MB.
    seed = tuning(8192, 4, 100, 200)
    assert seed["shared_buffers"] == "2048MB"
    assert seed["effective_cache_size"] == "6144MB"
    assert seed["maintenance_work_mem"] == "512MB"
    assert seed["wal_buffers"] == "16MB"
    assert seed["checkpoint_completion_target"] == "0.9"
    assert seed["max_connections"] == 200
    # A 4 GB single host gives PostgreSQL half: 512MB shared_buffers.
    assert tuning(4096, 2, 50, 200)["shared_buffers"] == "512MB"


# What PostgreSQL 15 (Debian 12's) stored for `CREATE ROLE ... PASSWORD 's3cret-password'`
# under scram-sha-256: the check is against the server's own verifier, not a second copy
# of the deploy's formula.
POSTGRES_VERIFIER = (
    "SCRAM-SHA-256$4096:FD3xnOsGL3FlFNIbSI4x1Q==$YOHz9LxLm4k/2AVHGkU2gd9TwxWRU06oXdPt+z+jQW0="
    ":rwkRWwOg2/+C3NNmCAa5cCccnqd3VIRwFMK59IkoR/4="
)


def test_role_password_is_compared_with_the_scram_verifier():
    assert scram_matches(POSTGRES_VERIFIER, "s3cret-password")
    assert not scram_matches(POSTGRES_VERIFIER, "other-password")
    assert scram_matches(scram_verifier("s3cret-password"), "s3cret-password")
    assert not scram_matches(None, "s3cret-password")
    assert not scram_matches("md5abcdef", "s3cret-password")


# --- Unknown data keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "closest"),
    [("replica", "replicas"), ("backup_retention_day", "backup_retention_days"),
     ("ssh_prot", "ssh_port")],
)  # fmt: skip
def test_unknown_key_is_refused_naming_the_closest_known_key(data, environ, typo, closest):
    with pytest.raises(SettingsError) as error:
        settings_for({**data, typo: 4}, SINGLE, environ=environ)
    message = str(error.value)
    assert message.startswith(f"{typo}: 4 is invalid; allowed: a known key")
    assert f"did you mean `{closest}`?" in message


def test_a_key_from_no_version_is_refused_without_a_guess(data, environ):
    with pytest.raises(
        SettingsError, match="^zzz_unheard_of: 1 is invalid; allowed: a known key \\("
    ):
        settings_for({**data, "zzz_unheard_of": 1}, SINGLE, environ=environ)


def test_pyinfra_connector_and_argument_keys_are_allowed(data, environ):
    connector = {"ssh_user": "deploy", "ssh_port": 2222, "ssh_key": "/dev/null",
                 "ssh_known_hosts_file": "/dev/null", "ssh_strict_host_key_checking": "off",
                 "_sudo": True, "_sudo_user": "root", "restore_to": "latest",
                 "fake_delay": 0}  # fmt: skip
    settings_for({**data, **connector}, SINGLE, environ=environ)


def test_group_data_defaults_are_read_as_data_without_running_the_file(tmp_path, monkeypatch):
    import tasks.config as config
    from pyinfra.api.exceptions import DeployError

    (tmp_path / "group_data").mkdir()
    all_py = tmp_path / "group_data" / "all.py"
    monkeypatch.setattr(config, "PYINFRA_DIR", tmp_path)
    all_py.write_text('"""doc"""\nsize = "small"\nports = [1, 2]\nname = "a\'b\\nc"\n')
    assert config.data_defaults() == {"size": "small", "ports": [1, 2], "name": "a'b\nc"}
    for line, words in (
        ("import os\n", "only `name = value`"),
        (f"size = __import__('os').system('touch {tmp_path}/pwned')\n", "`size` must be a literal"),
        ("a = b = 1\n", "only `name = value`"),
    ):
        all_py.write_text(line)
        with pytest.raises(DeployError, match=words) as error:
            config.data_defaults()
        assert "all.py:1" in str(error.value)
    assert not (tmp_path / "pwned").exists()


def test_known_keys_are_group_data_names(data):
    from tasks.config import known_keys

    assert set(data) - {"deploy_user_public_keys"} <= known_keys()
    assert "replica" not in known_keys()


# --- Credentials are never data -------------------------------------------------------------

TOKEN = "SECRETTOKEN-0123456789abcdef"
# Every way a credential arrives as data, and the key the refusal names. Values carry
# quotes and newlines: what would break a config file if it ever reached one.
CREDENTIALS_AS_DATA = [
    ({"alert_webhook_url": f"https://hooks.slack.com/services/T000/B000/{TOKEN}"},
     "alert_webhook_url"),
    ({"alert_heartbeat_url": f"https://hc-ping.com/{TOKEN}"}, "alert_heartbeat_url"),
    ({"POSTGRES_PASSWORD": f'"{TOKEN}"\n'}, "POSTGRES_PASSWORD"),
    ({"alert_smtp_password": TOKEN}, "alert_smtp_password"),
    ({"backup_s3_secret_access_key": TOKEN}, "backup_s3_secret_access_key"),
    ({"BACKUP_S3_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}, "BACKUP_S3_ACCESS_KEY_ID"),
    ({"SLACK_TOKEN": TOKEN}, "SLACK_TOKEN"),
    ({"MY_API_KEY": TOKEN}, "MY_API_KEY"),
    ({"domain": f"https://user:{TOKEN}@example.com"}, "domain"),
    ({"metrics_allowed_cidrs": ["10.0.0.1/32", f"https://discord.com/api/webhooks/1/{TOKEN}"]},
     "metrics_allowed_cidrs"),
    ({"image": "AKIAIOSFODNN7EXAMPLE"}, "image"),
    ({"app_log_level": f"xoxb-{TOKEN}"}, "app_log_level"),
    ({"letsencrypt_email": f"ghp_{'a1' * 18}'\n"}, "letsencrypt_email"),
    ({"tls_key_file": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{TOKEN}\n"}, "tls_key_file"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "key"), CREDENTIALS_AS_DATA,
                         ids=[key for _, key in CREDENTIALS_AS_DATA])  # fmt: skip
def test_a_credential_as_data_is_refused_by_name_without_its_value(data, environ, override, key):
    with pytest.raises(SettingsError) as error:
        settings_for({**data, **override}, SINGLE, environ=environ)
    message = str(error.value)
    assert message.startswith(f"{key}: (value not shown) is invalid; allowed: ")
    assert "\n" not in message
    for secret in (TOKEN, "AKIAIOSFODNN7EXAMPLE", "a1a1a1a1"):
        assert secret not in message


def test_a_secrets_key_as_data_names_the_secret_it_belongs_in(data, environ):
    with pytest.raises(SettingsError) as error:
        settings_for({**data, "alert_webhook_url": "https://ntfy.example.com/alerts"}, SINGLE,
                     environ=environ)  # fmt: skip
    assert "ALERT_WEBHOOK_URL=..." in str(error.value)
    assert "PRODSTACK_ALERT_WEBHOOK_URL" in str(error.value)


# A well-formed key whose blob reads as text, with AKIA (an AWS key ID's start) in it.
PUBLIC_KEY_WITH_AKIA = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEFLSUEtbG9va3MtbGlrZS1hbi1hd3Mta2V5LWlkLTAw op@example"
)


def test_legitimate_keys_that_mention_keys_and_urls_are_accepted(data, environ):
    """Lower-case names with key or password in them are pyinfra's own (a path, an SSH
    setting) or ours; public keys, https endpoints and e-mail addresses are not secrets."""
    legitimate = {
        "ssh_key": "~/.ssh/id_ed25519", "ssh_password": "typed-by-the-operator",
        "ssh_key_password": "passphrase-of-the-key", "ssh_strict_host_key_checking": "off",
        "deploy_user_public_keys": [PUBLIC_KEY_WITH_AKIA],
        "backup_s3_bucket": "backups", "backup_s3_endpoint_url": "https://s3.example.net:9000",
        "alert_email": "ops@example.com", "alert_smarthost": "smtp.example.com:587",
        "alert_smarthost_user": "ops@example.com", "domain": "api.example.com",
        "letsencrypt_email": "ops@example.com", "image": "registry.example.com/api:1a2b",
    }  # fmt: skip
    environ = {**environ, "PRODSTACK_ALERT_SMTP_PASSWORD": "smtp-password-0123456789",
               "PRODSTACK_BACKUP_S3_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
               "PRODSTACK_BACKUP_S3_SECRET_ACCESS_KEY": "s3-secret-0123456789abcdef",
               "PRODSTACK_BACKUP_CIPHER_PASSPHRASE": "cipher-pass-0123456789abcdef"}  # fmt: skip
    cfg = settings_for({**data, **legitimate}, SINGLE, environ=environ)
    assert cfg.backup_s3_bucket == "backups"


def test_webhook_and_heartbeat_come_from_the_secrets_file(data, environ, tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text(f"ALERT_WEBHOOK_URL=https://hooks.slack.com/services/T000/B000/{TOKEN}\n"
                    f"ALERT_HEARTBEAT_URL=https://hc-ping.com/{TOKEN}\n")  # fmt: skip
    cfg = settings_for({**data, "secrets_file": str(path)}, SINGLE, environ=environ)
    assert cfg.alert_webhook_url.endswith(TOKEN) and cfg.alert_heartbeat_url.endswith(TOKEN)
    assert cfg.alert_receivers == ("webhook",)
    assert TOKEN not in repr(cfg)


# --- The SSH port pyinfra connects on -----------------------------------------------------


def test_ssh_port_defaults_to_22_and_follows_the_connection(data, environ):
    assert settings_for(data, SINGLE, environ=environ).ssh_port == 22
    assert settings_for({**data, "ssh_port": 2222}, SINGLE, environ=environ).ssh_port == 2222


@pytest.mark.parametrize(
    ("override", "key"),
    [({"ssh_port": 2222, "redis_port": 2222}, "redis_port"),
     ({"ssh_port": 8001}, "app_port_base"),
     ({"ssh_port": 443}, "ssh_port"),
     ({"ssh_port": 70000}, "ssh_port")],
)  # fmt: skip
def test_ssh_port_is_reserved_in_the_port_checks(data, environ, override, key):
    with pytest.raises(SettingsError) as error:
        settings_for({**data, **override}, SINGLE, environ=environ)
    assert [problem.key for problem in error.value.problems] == [key]


def test_ufw_opens_the_proxy_protocol_port_to_the_balancers_only(data, environ):
    from tasks.firewall import stale_sources, wanted_rules

    cfg = settings_for({**data, "proxy_protocol_from": ["10.0.0.5/32", "10.0.1.0/24"]},
                       SINGLE, environ=environ)  # fmt: skip
    rules = [line for _, line in wanted_rules(cfg)]
    assert "8443/tcp ALLOW IN 10.0.0.5" in rules and "8443/tcp ALLOW IN 10.0.1.0/24" in rules
    assert not any(line.startswith("8443/tcp ALLOW IN Anywhere") for line in rules)
    # A balancer taken out of the list loses the port.
    added = ["ufw allow from 10.0.0.9 to any port 8443 proto tcp"]
    assert stale_sources(cfg, added) == [("10.0.0.9", 8443)]
    # Without balancers the port stays closed.
    closed = settings_for(data, SINGLE, environ=environ)
    assert not any(line.startswith("8443/") for _, line in wanted_rules(closed))


def test_the_proxy_protocol_port_must_not_collide(data, environ):
    with pytest.raises(SettingsError, match="`proxy_protocol_port`"):
        settings_for({**data, "proxy_protocol_from": ["10.0.0.5/32"],
                      "proxy_protocol_port": data["app_port_base"]}, SINGLE,
                     environ=environ)  # fmt: skip


def test_ufw_opens_the_ssh_port_pyinfra_connects_on(data, environ):
    from tasks.firewall import stale_ports, wanted_rules

    cfg = settings_for({**data, "ssh_port": 2222}, SINGLE, environ=environ)
    rules = [line for _, line in wanted_rules(cfg)]
    assert "2222/tcp ALLOW IN Anywhere" in rules
    assert "22/tcp ALLOW IN Anywhere" not in rules
    # Moving from 22: the old rule goes, after the new one is in.
    added = [
        "ufw allow 22/tcp",
        "ufw allow 80/tcp",
        "ufw allow 443/tcp",
        "ufw allow from 172.30.232.0/24 to any port 5432 proto tcp",
    ]
    assert stale_ports(cfg, added) == [22]


# --- Moving SSH in two deploys (ssh_next_port) --------------------------------------------


def test_ssh_next_port_adds_a_port_until_pyinfra_connects_on_it(data, environ):
    assert settings_for(data, SINGLE, environ=environ).ssh_ports == (22,)
    step_one = settings_for({**data, "ssh_next_port": "2222"}, SINGLE, environ=environ)
    assert step_one.ssh_ports == (22, 2222)
    # Step two: connected on the new port, the key left set is the same as unset.
    for leftover in ({"ssh_next_port": 2222}, {}):
        step_two = settings_for({**data, "ssh_port": 2222, **leftover}, SINGLE, environ=environ)
        assert step_two.ssh_ports == (2222,) and step_two.ssh_next_port is None


@pytest.mark.parametrize(
    "value",
    [80, 443, 8001, 8103, 5432, 6379, 9100, 0, -1, 65536, True, 22.5, "two", "",
     "2222\nPort 23", "2222; rm -rf /", "2222 # '\"", "9" * 10_000],
)  # fmt: skip
def test_ssh_next_port_refuses_a_taken_or_malformed_port_by_name(data, environ, value):
    with pytest.raises(SettingsError) as error:
        settings_for({**data, "ssh_next_port": value}, SINGLE, environ=environ)
    assert [problem.key for problem in error.value.problems] == ["ssh_next_port"]
    assert str(error.value).startswith("ssh_next_port: ")


def test_ssh_next_port_is_refused_over_the_proxy_protocol_port(data, environ):
    with pytest.raises(SettingsError,
                       match="^ssh_next_port: 8443 is invalid; .*`proxy_protocol_port`"):
        settings_for({**data, "proxy_protocol_from": ["10.0.0.5/32"], "ssh_next_port": 8443},
                     SINGLE, environ=environ)  # fmt: skip


def test_moving_ssh_opens_the_next_port_first_and_closes_the_old_one_only_from_it(data, environ):
    from tasks.firewall import ufw_commands as all_commands

    def ufw_commands(cfg, status):  # the rules open to anyone (SSH, 80, 443)
        return [c for c in all_commands(cfg, status) if re.fullmatch(r"ufw .*allow \d+/tcp", c)]

    status = {"active": True, "defaults": "deny (incoming), allow (outgoing)",
              "rules": ["22/tcp ALLOW IN Anywhere", "80/tcp ALLOW IN Anywhere",
                        "443/tcp ALLOW IN Anywhere"],
              "added": ["ufw allow 22/tcp", "ufw allow 80/tcp", "ufw allow 443/tcp"]}  # fmt: skip
    step_one = settings_for({**data, "ssh_next_port": 2222}, SINGLE, environ=environ)
    assert ufw_commands(step_one, status) == ["ufw allow 2222/tcp"]
    # Step two, connected on 2222: 22 goes, after 2222 is known to be in.
    status["rules"].append("2222/tcp ALLOW IN Anywhere")
    status["added"].append("ufw allow 2222/tcp")
    step_two = settings_for({**data, "ssh_port": 2222}, SINGLE, environ=environ)
    assert ufw_commands(step_two, status) == ["ufw delete allow 22/tcp"]
    # A deploy back on 22 without the key abandons the move: 2222 closes, 22 stays.
    assert ufw_commands(settings_for(data, SINGLE, environ=environ), status) == [
        "ufw delete allow 2222/tcp"
    ]


def test_ufw_allows_before_it_denies_so_an_active_permissive_firewall_keeps_ssh(data, environ):
    from tasks.firewall import ufw_commands

    cfg = settings_for({**data, "ssh_port": 2222}, SINGLE, environ=environ)
    # An active ufw that allowed everything incoming, with the old SSH port open.
    status = {"active": True, "defaults": "allow (incoming), allow (outgoing)",
              "rules": ["22/tcp ALLOW IN Anywhere"], "added": ["ufw allow 22/tcp"]}  # fmt: skip
    commands = ufw_commands(cfg, status)
    deny = commands.index("ufw default deny incoming")
    assert commands.index("ufw allow 2222/tcp") < deny < commands.index("ufw delete allow 22/tcp")
    assert "ufw --force enable" not in commands


def test_ufw_closes_a_database_port_to_a_web_host_no_longer_listed(data, environ):
    from tasks.firewall import ufw_commands

    db = {**data, "private_address": "10.0.0.20", "db_client_cidrs": ["10.0.0.10/32"]}
    cfg = settings_for(db, {"db"}, environ=environ)
    added = ["ufw allow 22/tcp",
             "ufw allow from 10.0.0.10 to any port 5432 proto tcp",
             "ufw allow from 10.0.0.10 to any port 6379 proto tcp",
             "ufw allow from 10.0.0.11 to any port 5432 proto tcp",
             "ufw allow from 10.0.0.11 to any port 6379 proto tcp"]  # fmt: skip
    rules = ["22/tcp ALLOW IN Anywhere", "5432/tcp ALLOW IN 10.0.0.10",
             "6379/tcp ALLOW IN 10.0.0.10"]  # fmt: skip
    status = {"active": True, "defaults": "deny (incoming), allow (outgoing)", "rules": rules,
              "added": added}  # fmt: skip
    assert ufw_commands(cfg, status) == [
        "ufw delete allow from 10.0.0.11 to any port 5432 proto tcp",
        "ufw delete allow from 10.0.0.11 to any port 6379 proto tcp",
    ]


# --- Root login ends up `no` --------------------------------------------------------------


def test_root_login_follows_the_two_step_first_deploy(data, environ):
    as_root = settings_for({**data, "ssh_user": "root"}, SINGLE, environ=environ)
    assert as_root.ssh_permit_root_login == "prohibit-password"
    as_deploy = settings_for({**data, "ssh_user": "deploy", "_sudo": True}, SINGLE,
                             environ=environ)  # fmt: skip
    assert as_deploy.ssh_permit_root_login == "no"
    pinned = {**data, "ssh_user": "deploy", "ssh_permit_root_login": "prohibit-password"}
    assert settings_for(pinned, SINGLE, environ=environ).ssh_permit_root_login == (
        "prohibit-password"
    )


# --- The role password never on a command line -------------------------------------------


def test_role_password_is_sent_as_a_fresh_scram_verifier_never_the_password():
    from tasks.postgres import role_password

    password = "s3cret-password-0123456789"
    sent = role_password(None, password)
    assert password not in sent
    assert sent.startswith("SCRAM-SHA-256$4096:")
    assert scram_matches(sent, password)
    assert role_password(sent, password) is None  # converged: postgres.role changes nothing
    assert scram_matches(role_password(sent, "rotated-password-0123456789"),
                         "rotated-password-0123456789")  # fmt: skip


# --- PostgreSQL connection budget --------------------------------------------------------


def test_app_pool_defaults_the_budget_counts_are_the_apps():
    """The VPS deploy leaves DB_POOL_MAX and WEB_CONCURRENCY at the app's defaults."""
    from tasks.config import APP_DB_POOL_MAX, APP_WEB_CONCURRENCY

    from app.core.config import INT_SETTINGS

    assert INT_SETTINGS["DB_POOL_MAX"][0] == APP_DB_POOL_MAX
    assert INT_SETTINGS["WEB_CONCURRENCY"][0] == APP_WEB_CONCURRENCY


def test_rolling_budget_counts_one_replica_more_than_replicas(data, environ):
    # 19 replicas alive x 10 + 1 migrate + 3 host clients = 194 <= 200 - 3 reserved.
    assert settings_for({**data, "replicas": 18}, SINGLE, environ=environ).replicas == 18
    with pytest.raises(SettingsError, match="postgres_max_connections") as error:
        settings_for({**data, "replicas": 19}, SINGLE, environ=environ)
    assert "room for 204 connections = 20 replicas alive" in str(error.value)
    assert "leaves 197" in str(error.value)
    more = {**data, "replicas": 19, "postgres_max_connections": 300}
    assert settings_for(more, SINGLE, environ=environ).postgres_max_connections == 300


def test_blue_green_budget_counts_both_sets(data, environ):
    blue_green = {**data, "deploy_strategy": "blue_green"}
    # 2 x 9 alive x 10 + 4 = 184 fits; 2 x 10 x 10 + 4 = 204 does not.
    assert settings_for({**blue_green, "replicas": 9}, SINGLE, environ=environ).replicas == 9
    with pytest.raises(SettingsError, match=r"room for 204 .*\(10 blue_green\)"):
        settings_for({**blue_green, "replicas": 10}, SINGLE, environ=environ)
    # The same replicas deploy rolling within it.
    assert settings_for({**data, "replicas": 10}, SINGLE, environ=environ).replicas == 10


def test_db_host_budget_counts_every_web_hosts_replicas(data, environ):
    db = {**data, "private_address": "10.0.0.20", "db_client_cidrs": ["10.0.0.10/32"]}
    web = {**data, "replicas": 6, "deploy_strategy": "blue_green"}
    # Two web hosts: 2 x 12 alive x 10 + 2 migrate + 3 = 245 > 197.
    with pytest.raises(SettingsError, match=r"room for 245 .*\(6 blue_green, 6 blue_green\)"):
        settings_for(db, {"db"}, web_data=[web, web], environ=environ)
    assert settings_for(db, {"db"}, web_data=[web], environ=environ).roles == {"db"}
    # A web-only host's own check is the db host's business: it is not refused here.
    assert settings_for(web, {"web"}, db_data=db, environ=environ).replicas == 6


def test_a_real_public_key_with_a_comment_is_accepted(data, environ, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops laptop",
                    "-f", str(tmp_path / "k")], check=True)  # fmt: skip
    key = (tmp_path / "k.pub").read_text()
    cfg = settings_for({**data, "deploy_user_public_keys": [key]}, SINGLE, environ=environ)
    assert cfg.deploy_user_public_keys == (key.strip(),)


# --- Every problem at once, in the one format -----------------------------------------------

# One line per problem, as prodstack/profile.py's Problem prints it on both targets.
PROBLEM_LINE = re.compile(r"^(?P<key>\w+): (?P<value>.+) is invalid; allowed: (?P<allowed>.+)$")
# Bad values for VPS-only keys and shared ones together, hostile where a value reaches a
# config file or a command: quotes, newlines, a 10,000-character string.
MANY_BAD = {
    "app_port_base": "8001'; DROP TABLE x; --",
    "backup_full_calendar": "daily\nExecStart=/bin/sh -c 'touch /tmp/pwned'",
    "docker_bridge": "b" * 10_000,
    "ssh_user": 'root"\nPermitRootLogin yes',
    "postgres_memory_percent": 95,
    "tls": "sometimes",
    "client_max_body_size": '1m"; include /etc/shadow;',
    "backup_s3_uri_style": "virtual",
    "keep_releases": 1,
    "replicas": 0,
    "log_level": "LOUD",
}


def problem_lines(error: pytest.ExceptionInfo[SettingsError]) -> dict[str, str]:
    """Each line of the error by the key it names; every line in the one format."""
    lines = str(error.value).split("\n")
    assert len(lines) == len(error.value.problems)
    matches = [PROBLEM_LINE.match(line) for line in lines]
    assert all(matches), lines
    return {m["key"]: m.group(0) for m in matches if m}


def test_every_bad_key_is_named_once_in_one_error(data, environ):
    with pytest.raises(SettingsError) as error:
        settings_for({**data, **MANY_BAD}, SINGLE, environ=environ)
    lines = problem_lines(error)
    assert sorted(problem.key for problem in error.value.problems) == sorted(MANY_BAD)
    assert sorted(lines) == sorted(MANY_BAD)
    # The long value is cut, not printed whole; a newline in a value stays escaped.
    assert lines["docker_bridge"].startswith("docker_bridge: 'bbbb")
    assert len(lines["docker_bridge"]) < 300 and "(10002 characters)" in lines["docker_bridge"]
    assert "\\nExecStart" in lines["backup_full_calendar"]


def test_a_check_that_reads_a_bad_key_is_skipped_not_repeated(data, environ):
    cases = [
        # Let's Encrypt needs a domain: a malformed one is named, and only it.
        ({"tls": "letsencrypt", "domain": "not a domain", "letsencrypt_email": "a@b.io"},
         ["domain"]),
        # A port base that is no number collides with nothing.
        ({"app_port_base": "eighty", "app_spare_port_base": 1024}, ["app_port_base"]),
        # The weekly tier is compared only with a daily tier that is valid.
        ({"backup_retention_days": 0, "backup_weekly_retention_days": 1},
         ["backup_retention_days"]),
        # A bad size is named once, not again by the replicas it would set.
        ({"size": "huge"}, ["size"]),
    ]  # fmt: skip
    for override, keys in cases:
        with pytest.raises(SettingsError) as error:
            settings_for({**data, **override}, SINGLE, environ=environ)
        assert [problem.key for problem in error.value.problems] == keys, str(error.value)


def test_a_credential_stops_the_check_before_any_value_is_shown(data, environ):
    with pytest.raises(SettingsError) as error:
        settings_for({**data, **MANY_BAD, "alert_smarthost_user": f"xoxb-{TOKEN}",
                      "SLACK_TOKEN": TOKEN}, SINGLE, environ=environ)  # fmt: skip
    lines = problem_lines(error)
    assert sorted(lines) == ["SLACK_TOKEN", "alert_smarthost_user"]
    assert TOKEN not in str(error.value) and "DROP TABLE" not in str(error.value)
    assert all(": (value not shown) is invalid" in line for line in lines.values())
