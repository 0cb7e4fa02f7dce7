"""Shared fixtures for the VPS profile's tests: `pyinfra/` is put on sys.path as pyinfra
itself does when it runs deploy.py, so `tasks.*` imports the same modules."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYINFRA_DIR = REPO / "pyinfra"
if str(PYINFRA_DIR) not in sys.path:
    sys.path.append(str(PYINFRA_DIR))

SECRETS = {
    "POSTGRES_PASSWORD": "pg-password-0123456789",
    "REDIS_PASSWORD": "redis-password-0123456789",
    "API_TOKEN": "api-token-0123456789abcdef",
    "BACKUP_S3_ACCESS_KEY_ID": "testing-access-key",
    "BACKUP_S3_SECRET_ACCESS_KEY": "testing-secret-key",
}


def defaults() -> dict:
    """group_data/all.py as pyinfra loads it, plus an SSH key and public key."""
    data = {
        k: v
        for k, v in runpy.run_path(str(PYINFRA_DIR / "group_data" / "all.py")).items()
        if not k.startswith("__")
    }
    data["deploy_user_public_keys"] = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest test@example"]
    return data


@pytest.fixture
def data() -> dict:
    return defaults()


@pytest.fixture
def environ() -> dict:
    return {f"PRODSTACK_{k}": v for k, v in SECRETS.items()}
