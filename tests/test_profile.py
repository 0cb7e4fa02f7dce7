"""The keys both targets share (prodstack/profile.py): one name, one unit, one meaning, and
one message for a bad value, whether it reaches `Pulumi.<stack>.yaml` or the VPS deploy's
data. Every case runs against both loaders, stacks/config.py and pyinfra/tasks/config.py."""

from __future__ import annotations  # noqa: I001 (tasks.config after the path glue below)

import pytest

from prodstack.profile import RATE_LIMIT_MAX, SHOWN_MAX, Problem, Problems
from stacks.config import ConfigError, load
from tests.vps.conftest import SECRETS, defaults

# tests/vps/conftest puts pyinfra/ on the path, as pyinfra does for its deploy.
from tasks.config import SettingsError, settings_for

SINGLE = {"web", "db"}
ENVIRON = {f"PRODSTACK_{k}": v for k, v in SECRETS.items()}


def cloud(overrides: dict):
    """Pulumi passes every config value as text."""
    return load({k: str(v) for k, v in overrides.items()}, region="eu-west-1", stack="dev")


def vps(overrides: dict):
    return settings_for({**defaults(), **overrides}, SINGLE, environ=ENVIRON)


def cloud_lines(overrides: dict) -> list[str]:
    with pytest.raises(ConfigError) as error:
        cloud(overrides)
    return error.value.problems


def vps_lines(overrides: dict) -> list[str]:
    with pytest.raises(SettingsError) as error:
        vps(overrides)
    return str(error.value).splitlines()


# (key, value, what is allowed): refused by both targets with this one line. Hostile values
# (a newline that would add a line to the app's env file or nginx's config, quotes, a very
# long name) are among them.
DNS = "a lowercase DNS name such as api.example.com"
BAD = [
    ("rate_limit_per_minute", 50_000_000, f"1-{RATE_LIMIT_MAX} (what the app accepts)"),
    ("rate_limit_per_minute", 0, f"1-{RATE_LIMIT_MAX} (what the app accepts)"),
    ("log_level", "loud", "DEBUG | INFO | WARNING | ERROR (any case)"),
    ("log_level", "info\nAPI_TOKEN=x", "DEBUG | INFO | WARNING | ERROR (any case)"),
    ("size", "huge", "small | medium | large"),
    ("replicas", 0, None),
    ("replicas", "three", None),
    ("deploy_strategy", "canary", "rolling | blue_green"),
    ("domain", "https://api.example.com", DNS),
    ("domain", "API.example.com", DNS),
    ("domain", "api.example.com;\nserver_name evil", DNS),
    ("domain", "a" * 64 + ".example.com", DNS),
    ("alert_email", "ops-at-example", "an email address"),
    ("alert_email", 'o"ps@example.com\nBcc: x@evil.test', "an email address"),
    ("metrics_retention_days", 0, "1-3650"),
    ("metrics_retention_days", 3651, "1-3650"),
    ("backup_retention_days", 0, None),
    ("edge_rate_limit_per_minute", 0, None),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD,
                         ids=[f"{k}={v!r}"[:50] for k, v, _ in BAD])  # fmt: skip
def test_a_bad_shared_value_is_refused_by_both_targets_with_one_message(key, value, allowed):
    cloud_found = [line for line in cloud_lines({key: value})
                   if line.startswith(f"prodstack:{key}:")]  # fmt: skip
    vps_found = [line for line in vps_lines({key: value}) if line.startswith(f"{key}:")]
    assert len(cloud_found) == 1 and len(vps_found) == 1, (cloud_found, vps_found)
    if allowed is not None:  # the same words on both targets
        line = str(Problem(key, value, allowed))
        assert cloud_found == [f"prodstack:{line}"]
        assert vps_found == [line]
    else:  # the platform's own range (RDS, the WAF, pyinfra's 32 replicas)
        assert cloud_found[0].removeprefix("prodstack:").startswith(f"{key}: {value!r} is invalid")
        assert vps_found[0].startswith(f"{key}: {value!r} is invalid")


def test_the_apps_maximum_rate_is_named_before_any_change():
    (line,) = vps_lines({"rate_limit_per_minute": 50_000_000})
    assert line == ("rate_limit_per_minute: 50000000 is invalid; "
                    f"allowed: 1-{RATE_LIMIT_MAX} (what the app accepts)")


def test_every_bad_shared_key_is_reported_at_once_on_both_targets():
    bad = {"size": "huge", "log_level": "loud", "rate_limit_per_minute": 0, "alert_email": "x"}
    for lines, prefix in ((cloud_lines(bad), "prodstack:"), (vps_lines(bad), "")):
        named = {line.removeprefix(prefix).split(":")[0] for line in lines}
        assert set(bad) <= named, lines


def test_every_shared_key_means_the_same_on_both_targets():
    given = {"size": "large", "replicas": 4, "domain": "api.example.com",
             "deploy_strategy": "blue_green", "log_level": "warning",
             "rate_limit_per_minute": 5000, "edge_rate_limit_per_minute": 1200,
             "backup_retention_days": 14, "metrics_retention_days": 90,
             "alert_email": "ops@example.com"}  # fmt: skip
    c = cloud({**given, "hosted_zone_id": "Z0123456789ABC", "min_replicas": 2})
    v = vps({**given, "alert_smarthost": "smtp.example.com:587"})
    for key, value in given.items():
        want = value.upper() if key == "log_level" else value
        assert getattr(c, key) == want, key
        assert getattr(v, key) == want, key
    # 1200 a minute at the edge: the WAF counts per minute, nginx 20 a second.
    assert v.nginx_limit_rate == "20r/s"


def test_nginx_gets_a_per_minute_rate_that_seconds_cannot_express():
    assert vps({"edge_rate_limit_per_minute": 90}).nginx_limit_rate == "90r/m"
    assert vps({}).nginx_limit_rate == "10r/s"  # the default, 600 a minute


def test_one_default_size_on_both_targets():
    assert cloud({}).size == vps({}).size == "medium"


@pytest.mark.parametrize(("old", "value", "new", "converted"), [
    ("app_log_level", "debug", "log_level", "DEBUG"),
    ("app_rate_limit_per_minute", 250, "rate_limit_per_minute", 250),
    ("rate_limit_rps", 5, "edge_rate_limit_per_minute", 300),
])  # fmt: skip
def test_a_vps_key_under_its_old_name_still_works_with_a_warning(old, value, new, converted):
    data = defaults()
    del data[new]  # an inventory written before the rename has only the old name
    settings = settings_for({**data, old: value}, SINGLE, environ=ENVIRON)
    assert getattr(settings, new) == converted
    (warning,) = settings.warnings
    assert f"`{old}` is renamed `{new}`" in warning


def test_a_vps_old_name_beside_the_defaults_new_name_wins_over_the_default():
    # pyinfra merges group_data/all.py under the host's data: the new key is there at its
    # default, and the old one the operator set must not be ignored.
    assert vps({"rate_limit_rps": 2}).edge_rate_limit_per_minute == 120


@pytest.mark.parametrize(("old", "value", "new", "converted"), [
    ("alarm_email", "ops@example.com", "alert_email", "ops@example.com"),
    ("waf_rate_limit_per_minute", 900, "edge_rate_limit_per_minute", 900),
])  # fmt: skip
def test_a_cloud_key_under_its_old_name_still_works_with_a_warning(old, value, new, converted):
    cfg = cloud({old: value})
    assert getattr(cfg, new) == converted
    (warning,) = cfg.warnings
    assert f"`{old}` is renamed `{new}`" in warning


def test_an_old_name_keeps_its_value_out_of_range_refused_naming_the_old_key():
    (line,) = vps_lines({"app_rate_limit_per_minute": 50_000_000})
    assert line.startswith("app_rate_limit_per_minute: 50000000 is invalid; allowed: 1-")
    assert "as `rate_limit_per_minute`, its new name" in line


def test_both_the_old_and_the_new_name_set_is_refused():
    lines = cloud_lines({"alarm_email": "a@example.com", "alert_email": "b@example.com"})
    assert any(line.startswith("prodstack:alarm_email:") and "both are set" in line
               for line in lines)  # fmt: skip
    lines = vps_lines({"rate_limit_rps": 5, "edge_rate_limit_per_minute": 1200})
    assert any(line.startswith("rate_limit_rps:") and "both are set" in line for line in lines)


def test_a_boolean_is_not_a_count():
    assert any(line.startswith("replicas:") for line in vps_lines({"replicas": True}))
    assert any(line.startswith("prodstack:replicas:") for line in cloud_lines({"replicas": True}))


def test_the_vps_defaults_file_holds_the_models_defaults():
    # pyinfra reads group_data/all.py, not the model: the two must say the same, for the
    # shared keys and the VPS model's own.
    from prodstack.profile import VpsProfile

    data = defaults()
    for key, field in VpsProfile.model_fields.items():
        assert data[key] == field.default, key
        assert key in VpsProfile.ALLOWED, key


def test_a_problem_can_hide_its_value_and_cuts_a_long_one():
    hidden = Problem("api_token", "s3cr3t", "nothing: credentials are never data", shown=False)
    assert str(hidden) == ("api_token: (value not shown) is invalid; allowed: nothing: "
                           "credentials are never data")  # fmt: skip
    long = str(Problem("domain", "a" * 10_000, "a DNS name"))
    assert long.startswith("domain: 'aaa") and long.endswith("(10002 characters) is invalid; "
                                                             "allowed: a DNS name")  # fmt: skip
    assert len(long) < SHOWN_MAX + 80
    # A newline or quote in a value stays escaped: one problem is one line.
    assert "\n" not in str(Problem("domain", 'a"\nb', "a DNS name"))


def test_problems_say_which_keys_are_still_good_for_a_later_check():
    found = Problems()
    found.add("app_port_base", "x", "a port")
    assert not found.ok("app_port_base", "redis_port") and found.ok("redis_port")
    assert found == [Problem("app_port_base", "x", "a port")]
