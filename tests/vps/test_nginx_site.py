"""The rendered nginx site, served by a real nginx on loopback in front of a stand-in
replica: the TLS curves it offers, which paths the per-client rate limit covers, and
what a client is to that limit (an IPv4 address, an IPv6 /64). The test's nginx takes
the client's address from a header (the realip module), so one loopback client can be
any address."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading

import httpx
import pytest
from tasks.config import settings_for

from prodstack.local_services import free_port, wait_for_port
from tests.vps.test_templates import render

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


class Replica(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    """(https port, openssl s_client target) of nginx serving the rendered site; the site's
    80 and 443 become free loopback ports, and loopback is not exempt from the limit."""
    from tests.vps.conftest import SECRETS, defaults

    tmp = tmp_path_factory.mktemp("nginx-site")
    replica = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Replica)
    threading.Thread(target=replica.serve_forever, daemon=True).start()
    data = {**defaults(), "domain": "api.example.com", "rate_limit_exempt_cidrs": [],
            "edge_rate_limit_per_minute": 60, "rate_limit_burst": 5, "grafana": True,
            "grafana_allowed_cidrs": ["203.0.113.0/24"]}  # fmt: skip
    environ = {f"PRODSTACK_{k}": v for k, v in SECRETS.items()}
    environ["PRODSTACK_GRAFANA_ADMIN_PASSWORD"] = "grafana-admin-0123456789"
    cfg = settings_for(data, {"web", "db"}, environ=environ)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=api.example.com",
         "-keyout", tmp / "key.pem", "-out", tmp / "cert.pem"],
        check=True, capture_output=True,
    )  # fmt: skip
    upstream = tmp / "upstream-servers.conf"
    upstream.write_text(f"server 127.0.0.1:{replica.server_address[1]};\n")
    http_port, https_port, status_port, echo_port = (free_port() for _ in range(4))
    text = render("nginx-site.j2.conf", cfg, cert=str(tmp / "cert.pem"),
                  key=str(tmp / "key.pem"), webroot=str(tmp), upstream_servers=str(upstream),
                  ipv6=False, status_port=status_port,
                  grafana_port=replica.server_address[1])  # fmt: skip
    text = text.replace("listen 80 default_server", f"listen 127.0.0.1:{http_port}")
    text = text.replace("listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl")
    (tmp / "site.conf").write_text(text)
    (tmp / "nginx.conf").write_text(
        f"pid {tmp}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp}/site.conf;\n"
        "  set_real_ip_from 127.0.0.1;\n  real_ip_header X-Client;\n"
        f"  server {{ listen 127.0.0.1:{echo_port};\n"
        "    location / { return 200 $prodstack_client; } }\n"
        "}\n"
    )
    nginx = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf"),
                              "-g", "daemon off;"], stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for_port(https_port, timeout=10)
        wait_for_port(echo_port, timeout=10)
        yield https_port, echo_port
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        replica.shutdown()


def handshake(site, curves: str) -> bool:
    port = site[0]
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
         "api.example.com", "-curves", curves, "-brief"],
        input="", capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return result.returncode == 0 and "Protocol version" in result.stderr


@pytest.mark.parametrize("curve", ["X25519", "prime256v1", "secp384r1"])
def test_the_intermediate_profiles_curves_are_offered(site, curve):
    assert handshake(site, curve)


@pytest.mark.parametrize("curve", ["X448", "secp521r1"])
def test_curves_outside_the_intermediate_profile_are_refused(site, curve):
    assert not handshake(site, curve)


def statuses(site, path: str, clients=("127.0.0.1",), n: int = 15) -> list[int]:
    with httpx.Client(base_url=f"https://127.0.0.1:{site[0]}", verify=False) as c:
        return [c.get(path, headers={"Host": "api.example.com",
                                     "X-Client": clients[i % len(clients)]}).status_code
                for i in range(n)]  # fmt: skip


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("2001:db8:1:2:3:4:5:6", b"2001:db8:1:2"),
        ("2001:db8:1:2::6", b"2001:db8:1:2"),
        ("2001:db8:1::6", b"2001:db8:1:0"),
        ("2001:db8::6", b"2001:db8:0:0"),
        ("2001::2:3:4:5:6", b"2001:0:0:2"),
        ("2001::3:4:5:6", b"2001:0:0:0"),
        ("::1:2:3:4:5:6", b"0:0:1:2"),
        ("::2:3:4:5:6", b"0:0:0:2"),
        ("::1", b"0:0:0:0"),
        ("fe80:0:0:1::", b"fe80:0:0:1"),
        ("203.0.113.7", bytes([203, 0, 113, 7])),
    ],
)
def test_a_client_is_its_ipv6_slash_64_or_its_ipv4_address(site, address, key):
    # The realip module writes the address back in nginx's own compressed form.
    answer = httpx.get(f"http://127.0.0.1:{site[1]}/", headers={"X-Client": address})
    assert answer.content == key


def test_addresses_of_one_slash_64_share_one_limit(site):
    one = ("2001:db8:aa:1::1", "2001:db8:aa:1:ffff:ffff:ffff:fffe")
    assert 429 in statuses(site, "/api/v1/alerts", one, n=10)


def test_neighbouring_slash_64s_each_have_their_own_limit(site):
    two = ("2001:db8:bb:1::1", "2001:db8:bb:2::1")
    assert set(statuses(site, "/api/v1/alerts", two, n=10)) == {200}


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready"])
def test_the_apps_health_paths_are_not_rate_limited(site, path):
    assert set(statuses(site, path)) == {200}


@pytest.mark.parametrize("path", ["/healthz", "/health/live/../../api/v1/alerts", "/health/x"])
def test_other_paths_under_health_are_rate_limited(site, path):
    assert 429 in statuses(site, path)


def test_grafana_answers_only_its_allowed_addresses(site):
    """grafana_allowed_cidrs: 203.0.113.0/24 reaches Grafana (the stand-in here); any
    other address, IPv6 included, gets 403 before nginx passes anything on."""
    assert statuses(site, "/grafana/login", ("203.0.113.9",), n=1) == [200]
    for outsider in ("198.51.100.7", "2001:db8:cc::1"):
        assert statuses(site, "/grafana/login", (outsider,), n=1) == [403]
