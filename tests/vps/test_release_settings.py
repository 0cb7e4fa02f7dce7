"""The release settings a deploy refuses or passes to the host (release.json), and the
app context it builds an image from."""

from __future__ import annotations

import json
import subprocess

import pytest
from tasks.config import SettingsError, settings_for


@pytest.mark.parametrize("value", [1, 0, 101, "five", 2.5, True])
def test_keep_releases_out_of_range_is_refused(data, environ, value):
    with pytest.raises(SettingsError, match=r"^keep_releases: .*from 2 to 100"):
        settings_for({**data, "keep_releases": value}, {"web", "db"}, environ=environ)


def test_keep_releases_defaults_to_five_and_reaches_release_json(data, environ):
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    assert cfg.keep_releases == 5
    cfg = settings_for({**data, "keep_releases": 3}, {"web", "db"}, environ=environ)
    assert cfg.keep_releases == 3


def test_app_context_must_be_a_directory_with_a_dockerfile(data, environ, tmp_path):
    with pytest.raises(SettingsError, match=r"^app_context: .*Dockerfile"):
        settings_for({**data, "app_context": str(tmp_path)}, {"web", "db"}, environ=environ)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    cfg = settings_for({**data, "app_context": str(tmp_path)}, {"web", "db"}, environ=environ)
    assert cfg.app_context == tmp_path.resolve()


@pytest.mark.docker
def test_app_context_builds_an_image_tagged_by_its_id(tmp_path):
    from tests.support.docker import ensure_dockerd

    ensure_dockerd()
    from tasks.api import build_context

    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY hello /hello\n")
    (tmp_path / "hello").write_text(f"{tmp_path}\n")  # a context no other test builds
    tag = build_context(tmp_path)
    inspect = subprocess.run(["docker", "image", "inspect", tag], check=True,
                             capture_output=True, text=True)  # fmt: skip
    image = json.loads(inspect.stdout)[0]
    assert tag == "prodstack-app:" + image["Id"].removeprefix("sha256:")[:12]
    assert "org.opencontainers.image.revision" in image["Config"]["Labels"]
    subprocess.run(["docker", "rmi", tag], check=True, capture_output=True)
