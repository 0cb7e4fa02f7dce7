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
{% if cfg.db_tls %}
# The private CA: systemd's copy under the unit's sandbox, the file itself when run by hand.
ca="${CREDENTIALS_DIRECTORY:+$CREDENTIALS_DIRECTORY/ca.crt}"
export ca="${ca:-{{ ca_file }}}"
{% endif %}
check "redis ping" sh -c 'redis-cli -h 127.0.0.1 -p {{ cfg.redis_port }}{% if cfg.db_tls %} --tls --cacert "$ca"{% endif %} --user {{ cfg.redis_health_user }} --no-auth-warning ping | grep -qx PONG'
{% endif %}
{% if cfg.is_web %}
# The certificate's expiry, for the CertificateExpiresSoon alert: node exporter reads it
# from its textfile directory (temp file, then rename, so it never sees half a file).
# The unit gets the certificate as a systemd credential; run by hand, the file itself.
cert="${CREDENTIALS_DIRECTORY:+$CREDENTIALS_DIRECTORY/tls-certificate}"
cert="${cert:-{{ cert }}}"
if [ -r "$cert" ] && [ -d {{ textfile_dir }} ]; then
    end="$(date -d "$(openssl x509 -enddate -noout -in "$cert" | cut -d= -f2)" +%s)" || end=""
    if [ -n "$end" ]; then
        tmp="$(mktemp {{ textfile_dir }}/.prodstack_tls.XXXXXX)"
        printf '# HELP prodstack_tls_certificate_expiry_timestamp_seconds When the served certificate expires.\n# TYPE prodstack_tls_certificate_expiry_timestamp_seconds gauge\nprodstack_tls_certificate_expiry_timestamp_seconds{path="%s"} %s\n' {{ cert }} "$end" >"$tmp"
        chmod 644 "$tmp" && mv "$tmp" {{ textfile_dir }}/prodstack_tls.prom
    fi
fi
{% endif %}
check "disk below 90%" sh -c '[ "$(df --output=pcent / | tail -n 1 | tr -dc 0-9)" -lt 90 ]'
exit "$failed"
