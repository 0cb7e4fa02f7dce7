"""`prodstack check-image` against our image and small images built here, each breaking one
clause of the contract. Real PostgreSQL and Redis (started by check-image itself), a real
Docker engine; the small images are built on the Debian-built Python base, no registry."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from prodstack.check_image import check_image
from prodstack.cli import main
from tests.support.docker import python_base_image

pytestmark = [pytest.mark.docker]

# A contract-sized app of someone else's: stdlib only. MODE breaks one clause on purpose.
SMALL_APP = r'''
import http.server, os, signal, sys, threading
mode = os.environ.get("MODE", "good")
command = sys.argv[1] if len(sys.argv) > 1 else "serve"
if command == "migrate":
    sys.exit(0)
if command != "serve":
    sys.exit(2)
if mode == "write-root":
    with open("/srv/state.db", "w") as f:
        f.write("state")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path in ("/health/live", "/health/ready")
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"")

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler)
if mode == "ignore-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
server.serve_forever()
sys.exit(0)
'''
DOCKERFILE = """FROM {base}
COPY app.py /srv/app.py
RUN chown 10001:10001 /srv
ENV MODE={mode}
USER {user}
ENTRYPOINT ["python3", "/srv/app.py"]
CMD ["serve"]
"""
# Short, so an image that ignores SIGTERM costs seconds here, not the contract's 30.
STOP_TIMEOUT = 5


@pytest.fixture(scope="module")
def small_image(docker_engine, tmp_path_factory):
    base = python_base_image()

    def build(mode: str, user: str = "10001:10001") -> str:
        context = tmp_path_factory.mktemp(f"small-{mode}")
        (context / "app.py").write_text(SMALL_APP)
        (context / "Dockerfile").write_text(DOCKERFILE.format(base=base, mode=mode, user=user))
        tag = f"prodstack-check-image-test:{mode}-{user.split(':')[0]}"
        subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], check=True,
                       capture_output=True)  # fmt: skip
        return tag

    return build


def statuses(results) -> dict[str, str]:
    return {r.clause: r.status for r in results}


def test_our_image_meets_the_contract(app_image, capsys):
    assert main(["check-image", app_image]) == 0
    out = capsys.readouterr().out.splitlines()
    clauses = [line for line in out if line.startswith("- ")]
    assert [line.split()[1] for line in clauses] == ["PASS"] * 8, out
    assert any("schema-version: the database is at 0001_create_alerts" in c for c in clauses)


def test_a_small_image_of_your_own_meets_it(small_image):
    results = check_image(small_image("good"), STOP_TIMEOUT)
    assert {c for c, s in statuses(results).items() if s == "fail"} == set()
    # What it does not provide is said, and is not a failure.
    assert statuses(results)["schema-version"] == "skip"
    assert statuses(results)["metrics"] == "skip"


def test_an_image_ignoring_sigterm_fails_the_sigterm_clause(small_image, capsys):
    image = small_image("ignore-sigterm")
    assert main(["check-image", image, "--stop-timeout", str(STOP_TIMEOUT)]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("- FAIL")]
    assert failed == [f"- FAIL sigterm: still running {STOP_TIMEOUT}s after SIGTERM (the drain "
                      "time): it would be killed mid-request"]  # fmt: skip
    assert "1 of 8 clauses failed: sigterm" in out


def test_an_image_writing_its_root_fails_the_read_only_clause(small_image):
    results = check_image(small_image("write-root"), STOP_TIMEOUT)
    failed = {r.clause: r.detail for r in results if r.status == "fail"}
    assert list(failed) == ["read-only root"]
    assert "it serves only with a writable root; it wrote /srv/state.db" in failed["read-only root"]


def test_an_image_running_as_root_fails_the_non_root_clause(small_image):
    results = check_image(small_image("good", user="0"), STOP_TIMEOUT)
    failed = {r.clause: r.detail for r in results if r.status == "fail"}
    assert list(failed) == ["non-root"]
    assert "runs as root" in failed["non-root"]


def test_a_missing_image_is_a_usage_error(docker_engine, capsys):
    assert main(["check-image", "prodstack-no-such-image:nope"]) == 2
    assert "not on this machine's Docker engine" in capsys.readouterr().err


def test_contract_doc_holds_the_contract_table():
    from prodstack import image_contract

    doc = (Path(__file__).resolve().parents[2] / "docs" / "image-contract.md").read_text()
    assert image_contract.markdown() in doc
