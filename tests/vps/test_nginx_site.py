"""The rendered nginx site, served by a real nginx on loopback in front of a stand-in
replica: the TLS curves it offers, which paths the per-client rate limit covers, and
what a client is to that limit (an IPv4 address, an IPv6 /64). The test's nginx takes
the client's address from a header (the realip module), so one loopback client can be
any address."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import socket
import ssl
import subprocess
import threading

import httpx
import pytest
from tasks.config import settings_for

from prodstack.local_services import free_port, wait_for_port
from tests.vps.test_templates import render

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


class Replica(http.server.BaseHTTPRequestHandler):
    """Answers with the client address nginx passed on (the last X-Forwarded-For entry)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = (self.headers.get("X-Forwarded-For") or "").split(",")[-1].strip().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_site(tmp, **overrides):
    """nginx serving the site rendered from defaults + `overrides`, in front of a Replica.
    Yields (https port, echo port); the site's 80 and 443 become free loopback ports."""
    from tests.vps.conftest import SECRETS, defaults

    replica = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Replica)
    threading.Thread(target=replica.serve_forever, daemon=True).start()
    data = {**defaults(), "domain": "api.example.com", **overrides}
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


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site with loopback not exempt from the limit, a limit of 60 a minute (burst 5),
    and Grafana for one documentation network. The test's nginx takes the client's
    address from X-Client."""
    with serve_site(tmp_path_factory.mktemp("nginx-site"), rate_limit_exempt_cidrs=[],
                    edge_rate_limit_per_minute=60, rate_limit_burst=5, grafana=True,
                    grafana_allowed_cidrs=["203.0.113.0/24"]) as ports:  # fmt: skip
        yield ports


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


# --- Behind a TCP load balancer: the PROXY protocol ------------------------------------------


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """The site with proxy_protocol_from = loopback (the balancer) on its own port; no
    client is exempt from the limit of 60 a minute (burst 5)."""
    port = free_port()
    with serve_site(tmp_path_factory.mktemp("nginx-proxied"), rate_limit_exempt_cidrs=[],
                    edge_rate_limit_per_minute=60, rate_limit_burst=5,
                    proxy_protocol_from=["127.0.0.1/32"],
                    proxy_protocol_port=port) as (https_port, _):  # fmt: skip
        wait_for_port(port, timeout=10)
        yield https_port, port


def through_balancer(port: int, client: str, path: str = "/") -> tuple[int, str]:
    """One request as a balancer sends it: a PROXY v1 header naming `client`, then TLS."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 443\r\n".encode())
        with context.wrap_socket(raw, server_hostname="api.example.com") as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: api.example.com\r\n"
                        "Connection: close\r\n\r\n".encode())  # fmt: skip
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
    head, _, body = response.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_the_balancers_proxy_header_gives_the_app_the_clients_address(proxied):
    assert through_balancer(proxied[1], "198.51.100.7") == (200, "198.51.100.7")


def test_behind_the_balancer_each_client_has_its_own_rate_limit(proxied):
    codes = [through_balancer(proxied[1], "198.51.100.20")[0] for _ in range(12)]
    assert 429 in codes and codes[0] == 200
    assert through_balancer(proxied[1], "198.51.100.21")[0] == 200


def test_a_direct_connection_keeps_its_own_address(proxied):
    with httpx.Client(base_url=f"https://127.0.0.1:{proxied[0]}", verify=False) as c:
        r = c.get("/", headers={"Host": "api.example.com"})
    assert (r.status_code, r.text) == (200, "127.0.0.1")


def test_a_proxy_header_from_outside_proxy_protocol_from_is_not_believed(tmp_path):
    # The balancer is 10.9.9.9; this connection comes from loopback with a forged header.
    port = free_port()
    with serve_site(tmp_path, proxy_protocol_from=["10.9.9.9/32"], proxy_protocol_port=port):
        wait_for_port(port, timeout=10)
        assert through_balancer(port, "198.51.100.7") == (200, "127.0.0.1")


def test_everyone_as_a_balancer_is_refused():
    from tasks.config import SettingsError

    from tests.vps.conftest import SECRETS, defaults

    environ = {f"PRODSTACK_{k}": v for k, v in SECRETS.items()}
    with pytest.raises(SettingsError, match="^proxy_protocol_from: .*pose as any client"):
        settings_for({**defaults(), "proxy_protocol_from": ["0.0.0.0/0"]}, {"web", "db"},
                     environ=environ)  # fmt: skip


# --- Behind an HTTP proxy or CDN: X-Forwarded-For from trusted addresses only -----------------


def via_http_proxy(port: int, forwarded_for: str) -> tuple[int, str]:
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False) as c:
        r = c.get("/", headers={"Host": "api.example.com", "X-Forwarded-For": forwarded_for})
    return r.status_code, r.text


def test_behind_a_trusted_http_proxy_the_client_is_the_nearest_untrusted_address(tmp_path):
    # The proxy is loopback; a client behind it claims to be 10.0.0.1 (a hop it added itself
    # before the proxy's entry): the proxy's own entry, the last untrusted one, wins.
    with serve_site(tmp_path, forwarded_for_from=["127.0.0.1/32"]) as (port, _):
        assert via_http_proxy(port, "198.51.100.7") == (200, "198.51.100.7")
        assert via_http_proxy(port, "10.0.0.1, 198.51.100.7") == (200, "198.51.100.7")


def test_x_forwarded_for_from_an_untrusted_address_is_ignored(tmp_path):
    with serve_site(tmp_path, forwarded_for_from=["10.9.9.9/32"]) as (port, _):
        assert via_http_proxy(port, "198.51.100.7") == (200, "127.0.0.1")


def test_one_source_of_the_client_address_at_a_time():
    from tasks.config import SettingsError

    from tests.vps.conftest import SECRETS, defaults

    environ = {f"PRODSTACK_{k}": v for k, v in SECRETS.items()}
    for data in ({"forwarded_for_from": ["::/0"]},
                 {"forwarded_for_from": ["10.0.0.0/8"], "proxy_protocol_from": ["10.0.0.5"]}):
        with pytest.raises(SettingsError, match="^forwarded_for_from: "):
            settings_for({**defaults(), **data}, {"web", "db"}, environ=environ)
