#!/bin/bash
# Managed by prodstack: one line per check to the journal; exits non-zero on any failure.
#   journalctl -u prodstack-healthcheck     systemctl list-timers prodstack-healthcheck
set -u
failed=0
check() {
    local what="$1"; shift
    if out="$("$@" 2>&1)"; then
        echo "ok: $what"
    else
        echo "FAIL: $what: $(echo "$out" | tail -n 1)"
        failed=1
    fi
}
{% if cfg.is_web %}
check "api /health through nginx" curl -fsS -k --max-time 5 -o /dev/null https://127.0.0.1/health
{% endif %}
{% if cfg.is_db %}
check "postgresql" pg_isready -q -h 127.0.0.1 -p {{ cfg.postgres_port }} -d {{ cfg.postgres_db }} -U {{ cfg.postgres_user }}
check "redis ping" sh -c 'redis-cli -h 127.0.0.1 -p {{ cfg.redis_port }}{% if cfg.db_tls %} --tls --cacert {{ ca_file }}{% endif %} --user {{ cfg.redis_health_user }} --no-auth-warning ping | grep -qx PONG'
{% endif %}
{% if cfg.is_web %}
# The served certificate's expiry, for the CertificateExpiresSoon alert: read from nginx
# on 443 (what clients get, even before a reload), so the check needs no key directory.
# Node exporter reads it from its textfile directory (temp file, then rename, so it never
# sees half a file).
if [ -d {{ textfile_dir }} ]; then
    end="$(openssl s_client -connect 127.0.0.1:443{% if cfg.server_name != "_" %} -servername {{ cfg.server_name }}{% endif %} </dev/null 2>/dev/null \
        | openssl x509 -enddate -noout 2>/dev/null | cut -d= -f2)"
    end="$( [ -n "$end" ] && date -d "$end" +%s)" || end=""
    if [ -n "$end" ]; then
        tmp="$(mktemp {{ textfile_dir }}/.prodstack_tls.XXXXXX)"
        printf '# HELP prodstack_tls_certificate_expiry_timestamp_seconds When the served certificate expires.\n# TYPE prodstack_tls_certificate_expiry_timestamp_seconds gauge\nprodstack_tls_certificate_expiry_timestamp_seconds{path="%s"} %s\n' {{ cert }} "$end" >"$tmp"
        chmod 644 "$tmp" && mv "$tmp" {{ textfile_dir }}/prodstack_tls.prom
    fi
fi
{% endif %}
# A pending reboot (a kernel, or a library in a service needrestart holds back), for the
# RebootRequired alert: Debian's kernel hooks create /run/reboot-required.
if [ -d {{ textfile_dir }} ]; then
    pending=0
    [ -e /run/reboot-required ] && pending=1
    tmp="$(mktemp {{ textfile_dir }}/.prodstack_reboot.XXXXXX)"
    printf '# HELP prodstack_reboot_required 1 while an installed update waits for a reboot.\n# TYPE prodstack_reboot_required gauge\nprodstack_reboot_required %s\n' "$pending" >"$tmp"
    chmod 644 "$tmp" && mv "$tmp" {{ textfile_dir }}/prodstack_reboot.prom
fi
check "disk below 90%" sh -c '[ "$(df --output=pcent / | tail -n 1 | tr -dc 0-9)" -lt 90 ]'
exit "$failed"
