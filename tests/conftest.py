"""Session-wide real services (one PostgreSQL and one Redis for the app tests, per
worker), the session's memo of Pulumi recordings, and how the suite splits across
pytest-xdist workers (scripts/test.sh runs it that way)."""

from __future__ import annotations

import os

import pytest

from prodstack.local_services import PostgresServer, RedisServer
from tests.support import recordings

# Fixtures that reach the Docker engine: a test using any of them needs Docker, so it is
# marked `docker` whatever its file says (`scripts/test.sh --fast` deselects those).
DOCKER_FIXTURES = {"docker_engine", "app_image", "images", "stack"}
# The fixture of the host that tests/vps/test_e2e*.py files share, in file order. Three
# such hosts boot in parallel on three workers (each xdist worker has its own session
# fixture): host 1 takes every file not listed here. The groups take about as long (12-15
# minutes each on a loaded 2-core machine), where one host for every file was the suite's
# critical path at 24 minutes.
SHARED_HOST = "stack"
SHARED_HOST_GROUP = "vps-shared-host"
OTHER_HOST_FILES = {
    "tests/vps/test_e2e_hardening.py": 2,
    "tests/vps/test_e2e_monitoring.py": 2,
    "tests/vps/test_e2e_pitr.py": 3,
    "tests/vps/test_e2e_host_lost.py": 3,
}


# This group's host boots the bare host image, so that every run proves a first deploy
# onto a fresh Debian 12 host; the other groups' hosts boot one with the deploy's packages
# already installed (tests/vps/host.py, `provisioned_image`).
FRESH_HOST_GROUP = f"{SHARED_HOST_GROUP}-1"
SETUP_GROUP = pytest.StashKey[str]()


def shared_host_group(item: pytest.Item) -> str:
    return f"{SHARED_HOST_GROUP}-{OTHER_HOST_FILES.get(item.nodeid.split('::')[0], 1)}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Note the group of the test being set up, before its fixtures: the session's shared
    host is set up by the first test of its worker's group, and boots that group's image."""
    item.config.stash[SETUP_GROUP] = shared_host_group(item)


def _fixtures(item: pytest.Item) -> set[str]:
    """The fixtures a test uses, directly or not; a parametrized argument of the same name
    (tests/cloud's `stack` is "prod" or "dev") is not one."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return set(getattr(item, "fixturenames", ())) - set(params)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark Docker users; give every test an xdist group and put the long groups first.

    Under `--dist loadgroup` a group runs on one worker, in collection order. Tests of a
    shared host form a group (they hand the host from file to file); every other file
    is a group of its own, so its module fixtures run once. The e2e groups go first
    (longest first, by their files' own order), so their hosts boot and wait on apt while
    the other workers take the CPU-bound files.
    """
    for item in items:
        fixtures = _fixtures(item)
        if fixtures & DOCKER_FIXTURES:
            item.add_marker(pytest.mark.docker)
        group = shared_host_group(item) if SHARED_HOST in fixtures else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
    if not hasattr(config, "workerinput"):
        return  # a serial run keeps pytest's own order

    def rank(item: pytest.Item) -> int:
        if SHARED_HOST in _fixtures(item):
            return 0
        if item.get_closest_marker("e2e"):
            return 1
        return 2

    items.sort(key=rank)  # stable: file order and order within a file are kept


@pytest.fixture(scope="session", autouse=True)
def _recordings_memo(tmp_path_factory: pytest.TempPathFactory):
    """One memo of Pulumi recordings per session, in the temporary directory that the
    session's xdist workers share (each worker's own is a subdirectory of it)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    recordings.use_session_directory(shared / "pulumi-recordings")
    # The product's own plan cache, for every `prodstack` the tests run: one per session
    # (never the user's ~/.cache), shared by the workers, so a stack planned by one test is
    # planned once. tests/plan/test_plancache.py gives each of its tests a cache of its own.
    saved = os.environ.get("PRODSTACK_PLAN_CACHE")
    os.environ["PRODSTACK_PLAN_CACHE"] = str(shared / "plan-cache")
    yield
    recordings.use_session_directory(None)
    if saved is None:
        os.environ.pop("PRODSTACK_PLAN_CACHE", None)
    else:
        os.environ["PRODSTACK_PLAN_CACHE"] = saved


@pytest.fixture(scope="session")
def pg():
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def docker_engine():
    from tests.support.docker import ensure_dockerd

    ensure_dockerd()


@pytest.fixture(scope="session")
def app_image(docker_engine):
    """The API image, built once per session from app/Dockerfile on a Debian-built base."""
    from tests.support.docker import build_app_image

    return build_app_image()
