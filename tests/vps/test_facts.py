"""The deploy's own facts (pyinfra/tasks/facts.py), their shell commands run by a real
shell against real files, as pyinfra runs them on a host."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from tasks.facts import PgbackrestCipherDigest

# /etc/pgbackrest.conf as the Debian 12 package installs it, before any deploy.
DEBIAN_DEFAULT_CONF = """[demo]
pg1-path=/var/lib/postgresql/13/main

[global]
repo1-path=/var/lib/pgbackrest
"""
HOSTILE = "it's a \"pass\" $(touch /tmp/x) `id` \\n; and a very long tail " + "x" * 400


def cipher_digest(path: Path) -> str | None:
    fact = PgbackrestCipherDigest()
    out = subprocess.run(["sh", "-c", fact.command(path=str(path))],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return fact.process(out.splitlines())


def test_cipher_digest_is_none_without_a_pgbackrest_conf(tmp_path):
    assert cipher_digest(tmp_path / "absent.conf") is None


def test_cipher_digest_is_none_for_the_packages_own_conf_so_a_stopped_first_deploy_reruns(
    tmp_path,
):
    """The digest of an empty passphrase would read as "the passphrase changed", and the
    deploy would refuse every later run of a host whose first deploy stopped after apt."""
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text(DEBIAN_DEFAULT_CONF)
    assert cipher_digest(conf) is None


@pytest.mark.parametrize("passphrase", ["plain-passphrase-0123456789", HOSTILE])
def test_cipher_digest_is_the_sha256_of_the_first_repositorys_passphrase(tmp_path, passphrase):
    conf = tmp_path / "it's pgbackrest.conf"
    conf.write_text(f"[global]\nrepo1-cipher-pass={passphrase}\nrepo1-cipher-type=aes-256-cbc\n"
                    "repo2-cipher-pass=another\n")  # fmt: skip
    assert cipher_digest(conf) == hashlib.sha256(passphrase.encode()).hexdigest()
