"""End to end, timed: the host is lost after writes, and a new host with the same bucket
and the same secrets takes over from the off-site repository (docs/vps.md, "Disaster
recovery runbook").

It loses the session's shared host (conftest.py's `stack`), so it runs after every other
test that uses that host: its marker, `destroys_shared_host`, sorts it last
(tests/vps/conftest.py). The replacement is booted and deployed while the old host still
serves (as an operator can, once a host looks lost), so the figure for "minutes to serve"
is the restore alone; the deploy's own time is printed beside it.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.vps.conftest import S3_TEST_NAME
from tests.vps.e2e import Stack
from tests.vps.host import boot, destroy, provisioned_image
from tests.vps.test_e2e_pitr import alert_ids, start_unit

pytestmark = [
    pytest.mark.docker,
    pytest.mark.e2e,
    pytest.mark.destroys_shared_host,
    pytest.mark.timeout(2700),
]


class Writer(threading.Thread):
    """Creates an alert every `interval` seconds through the API until stopped or the host
    goes away; keeps (time acknowledged, id) of every write the API confirmed."""

    def __init__(self, stack: Stack, interval: float = 0.5):
        super().__init__(daemon=True)
        self.stack = stack
        self.interval = interval
        self.done = threading.Event()
        self.writes: list[tuple[float, str]] = []

    def run(self) -> None:
        with self.stack.client() as c:
            while not self.done.is_set():
                try:
                    r = c.post("/api/v1/alerts", json={"message": "before the loss",
                                                       "type": "dr", "priority": "low",
                                                       "region": "eu"}, timeout=3)  # fmt: skip
                except Exception:  # noqa: BLE001 - the host is gone: the writes end here
                    if self.done.is_set():
                        return
                    time.sleep(self.interval)
                    continue
                if r.status_code == 201:
                    self.writes.append((time.time(), r.json()["id"]))
                time.sleep(self.interval)


def states(stack: Stack) -> dict:
    return json.loads(stack.host.run("/usr/local/sbin/prodstack-backup states").stdout)


def test_a_lost_host_is_restored_onto_a_new_host_from_the_offsite_repository(
    stack, moto, tmp_path_factory
):
    workdir = tmp_path_factory.mktemp("vps-e2e-replacement")
    name = f"{stack.host.name}-new"
    new = Stack(boot(name, stack.host.key, image=provisioned_image("single")), workdir,
                dict(stack.data), stack.secrets)
    new.host.run(f"echo '{moto.address} {S3_TEST_NAME}' >> /etc/hosts")
    try:
        # The replacement's deploy completes while the bucket holds the old host's history:
        # it creates no stanza (repository 1 stays free for the restore) and says so.
        started = time.monotonic()
        deployed = new.pyinfra()
        deploy_s = time.monotonic() - started
        assert deployed.returncode == 0, deployed.stdout[-5000:]
        assert "repository 2 holds another cluster's backups" in deployed.stdout
        assert [s[0] for _, s in sorted(states(new).items())] == ["empty", "foreign"]
        new.host.run("test -x /usr/local/sbin/prodstack-release")
        assert new.version()

        # Writes on the old host until it is lost (killed, with its disk).
        writer = Writer(stack)
        writer.start()
        time.sleep(80)  # more than archive_timeout (60 s): at least one segment switch
        destroy(stack.host.name)
        writer.done.set()
        writer.join(timeout=30)
        assert len(writer.writes) > 50

        started = time.monotonic()
        result = new.pyinfra("restore.py", restore_to="latest", restore_repo=2, confirm="yes")
        rto = time.monotonic() - started
        assert result.returncode == 0, result.stdout[-5000:]

        restored = alert_ids(new)
        written = [(t, i) for t, i in writer.writes]
        present = [t for t, i in written if i in restored]
        assert present, "no write made before the loss came back"
        last = max(present)
        # Only a tail is lost: every write up to the last one restored is there.
        assert all(i in restored for t, i in written if t <= last)
        # RPO: how much acknowledged writing is gone, from the last write restored to the
        # last write the old host confirmed.
        rpo = max(t for t, _ in written) - last
        assert rpo <= 60 + 30, f"{rpo:.0f} s of writes lost (archive_timeout is 60 s)"
        # The API on the new host serves the restored data.
        newest = max((t, i) for t, i in written if i in restored)[1]
        with new.client() as c:
            assert c.get(f"/api/v1/alerts/{newest}").status_code == 200
        # Repository 1 is this cluster's again, with a backup, and WAL archives to both.
        assert [s[0] for _, s in sorted(states(new).items())] == ["ours", "ours"]
        new.host.run("runuser -u postgres -- pgbackrest --stanza=prodstack check")
        assert start_unit(new, "prodstack-restore-drill.service") == (0, 0)
        print(
            f"host lost: RPO {rpo:.0f} s of writes lost ({len(written)} writes, "
            f"{len(written) - len(present)} lost); RTO {rto / 60:.1f} min from the loss to "
            f"the API serving the restored data (restore.py), with the replacement "
            f"deployed beforehand in {deploy_s / 60:.1f} min (from a host image with the "
            "packages installed: a fresh host's deploy takes longer, docs/vps.md section 8)"
        )
    finally:
        destroy(name)
