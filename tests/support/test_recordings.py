"""The session memo of Pulumi recordings: one recording per input digest, never a stale one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support import recorder as recorder_module
from tests.support import recordings

PARTS = ("Pulumi.yaml", "Pulumi.dev.yaml", "stacks", "components", "policies", "app",
         "pyinfra/files/prodstack-alerts.yml")  # fmt: skip


def checkout(dest: Path) -> Path:
    for part in PARTS:
        source = recordings.REPO / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / part)
    return dest


def digest(root: Path, **changes) -> str:
    call = {"overrides": None, "root": root, "plan": False, "secrets": None,
            "image_tag": None} | changes  # fmt: skip
    return recordings.input_digest("dev", **call)


def test_the_key_follows_contents_not_the_checkout_path(tmp_path):
    a, b = checkout(tmp_path / "a"), checkout(tmp_path / "b")
    assert digest(a) == digest(b) == digest(recordings.REPO)
    (b / "components" / "network.py").write_text(
        (b / "components" / "network.py").read_text() + "\n# changed\n")
    assert digest(b) != digest(a)
    (a / "Pulumi.dev.yaml").write_text((a / "Pulumi.dev.yaml").read_text() + "\n")
    assert digest(a) != digest(b) != digest(recordings.REPO)


@pytest.mark.parametrize("change", [
    {"overrides": {"replicas": "5"}}, {"plan": True}, {"image_tag": "x"},
    {"secrets": {"prodstack:api_token": "t"}},
])  # fmt: skip
def test_every_argument_is_part_of_the_key(change):
    assert digest(recordings.REPO, **change) != digest(recordings.REPO)


def test_one_recording_per_digest_and_each_caller_gets_its_own_copy(tmp_path, monkeypatch):
    calls = []

    def recorder(stack, out, overrides=None, **kwargs):
        calls.append((stack, overrides))
        out.write_text(json.dumps({"stack": stack, "n": len(calls)}))
        return json.loads(out.read_text())

    monkeypatch.setattr(recorder_module, "record_isolated", recorder)
    monkeypatch.setattr(recordings, "_directory", None)
    recordings.use_session_directory(tmp_path / "memo")
    first = recordings.record_isolated("dev", tmp_path / "1.json")
    first["n"] = 99  # a caller's edits stay its own
    again = recordings.record_isolated("dev", tmp_path / "2.json")
    other = recordings.record_isolated("dev", tmp_path / "3.json", {"replicas": "2"})
    assert calls == [("dev", None), ("dev", {"replicas": "2"})]
    assert again == {"stack": "dev", "n": 1} and other["n"] == 2
    assert (tmp_path / "2.json").read_text() == (tmp_path / "1.json").read_text()


def test_outside_a_session_every_call_records(tmp_path, monkeypatch):
    calls = []

    def recorder(stack, out, overrides=None, **kwargs):
        calls.append(stack)
        out.write_text("{}")
        return {}

    monkeypatch.setattr(recorder_module, "record_isolated", recorder)
    monkeypatch.setattr(recordings, "_directory", None)
    recordings.record_isolated("dev", tmp_path / "1.json")
    recordings.record_isolated("dev", tmp_path / "2.json")
    assert calls == ["dev", "dev"]
