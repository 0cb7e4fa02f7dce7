#!/bin/sh
# Managed by prodstack: after certbot obtains or renews the certificate, install it where
# nginx reads it and reload nginx.
set -eu
lineage="${RENEWED_LINEAGE:-/etc/letsencrypt/live/{{ cfg.domain }}}"
install -m 644 "$lineage/fullchain.pem" /etc/prodstack/tls/fullchain.pem
install -m 600 "$lineage/privkey.pem" /etc/prodstack/tls/privkey.pem
nginx -t -q && systemctl reload nginx
