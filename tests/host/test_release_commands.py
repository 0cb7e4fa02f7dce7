"""The commands prodstack-release builds for every API container, without a host."""

from __future__ import annotations

from prodstack.host import release


def test_replicas_and_migrate_run_confined():
    cfg = {"memory_mb": 384, "cpus": 1.0, "env_file": "/etc/prodstack/app.env",
           "network": "prodstack"}  # fmt: skip
    args = release.confined(cfg)
    assert "--read-only" in args
    assert args[args.index("--tmpfs") + 1].startswith("/tmp:")
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert "--memory" in args and "--pids-limit" in args


def test_migrate_is_bounded_on_the_server_too():
    env = release.migrate_env(300)
    assert env == ["--env", "MIGRATE_LOCK_TIMEOUT_SECONDS=10",
                   "--env", "MIGRATE_STATEMENT_TIMEOUT_SECONDS=300"]  # fmt: skip
    # A lock wait never outlasts the run itself.
    assert "MIGRATE_LOCK_TIMEOUT_SECONDS=5" in release.migrate_env(5)
