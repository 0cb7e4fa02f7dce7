"""Defaults for every host. A host needs only an address and an SSH key on top of these.

Override per environment in `group_data/<group>.py` (differences only), per host in the
inventory, or per run with `pyinfra ... --data key=value`. `tasks/config.py` validates
everything before the deploy changes anything.
"""

# --- Profile: the same key names as the cloud profile --------------------------------
# small | medium | large: per-replica memory/CPU limits and the default replica count
# (2, 3, 4). medium runs three replicas (docs/targets.md).
size = "medium"
# API containers per web host. Default: from `size`. Must be >= 1.
replicas = None
# Public DNS name of the API, e.g. "api.example.com". Default: none (serves any name on
# a self-signed certificate).
domain = None
# Days of point-in-time recovery kept in the local pgBackRest repository: full backups
# (and the WAL after them) expire once a newer full is this many days old (docs/targets.md: 30).
backup_retention_days = 30
# The longer tiers in the local repository (docs/targets.md: weekly copies kept 3 months, monthly
# copies 1 year): every full backup younger than backup_weekly_retention_days, and the first
# full of each month younger than backup_monthly_retention_days, without their WAL.
backup_weekly_retention_days = 90
backup_monthly_retention_days = 365

# --- TLS -------------------------------------------------------------------------------
# auto: Let's Encrypt when `domain` is public and `letsencrypt_email` is set, else the
# files in tls_certificate_file/tls_key_file if given, else a self-signed certificate.
tls = "auto"
letsencrypt_email = None
tls_certificate_file = None
tls_key_file = None

# --- API image and containers ------------------------------------------------------------
# Image reference to run. Default: $PRODSTACK_IMAGE, else built locally from app/ with
# scripts/build-image.sh and shipped over SSH (docker save | docker load, no registry).
image = None
# True: `docker pull` the image from its registry instead of shipping it over SSH.
image_pull = False
# Replica i listens on 127.0.0.1:(app_port_base + i); a replacement starts on the spare
# port (app_spare_port_base + i) and the two alternate on each deploy.
app_port_base = 8001
app_spare_port_base = 8101
container_memory_mb = None  # default: from `size`
container_cpus = None  # default: from `size`
# The app's LOG_LEVEL (DEBUG | INFO | WARNING | ERROR) and its own rate limit per client
# per minute: the cloud profile's keys (prodstack/profile.py; formerly app_log_level and
# app_rate_limit_per_minute).
log_level = "INFO"
rate_limit_per_minute = 100
# A new replica must answer /health/ready within this time, or the deploy aborts.
ready_timeout_seconds = 60
# `python -m app migrate` must finish within this time (a migration stuck on a lock is
# stopped), or the deploy aborts before any replica is replaced.
migrate_timeout_seconds = 300
# Seconds an old replica keeps serving in-flight requests after nginx stops routing to it.
drain_seconds = 5
# rolling | blue_green (the cloud profile's key and values). rolling: one replica at a
# time. blue_green: the whole new set on the spare ports, each replica gated on
# /health/ready, then one atomic nginx switch; needs memory for two full sets (checked).
deploy_strategy = "rolling"
# blue_green: seconds the old set keeps running after the switch, for an instant
# rollback (`rollback.py`); 0 stops it right away.
bake_seconds = 600
# Release images each web host keeps (2-100): the newest N releases in its history, the
# serving one always among them; `rollback.py --data rollback_to=VERSION` takes any of them.
keep_releases = 5
# A build context of your own app instead of app/ (a directory with a Dockerfile that
# meets docs/image-contract.md), built on this machine when `image` is not set. The cloud
# profile's key of the same name.
app_context = None
# Private bridge the containers run on; PostgreSQL and Redis listen on its gateway.
docker_subnet = "172.30.232.0/24"
docker_bridge = "prodstack0"

# --- Access ---------------------------------------------------------------------------------
deploy_user = "deploy"
# Default: the public half of `ssh_key`.
deploy_user_public_keys = None
# auto: keys-only root login while pyinfra connects as root (the first deploy), then "no"
# from the first run as `deploy_user` (PRODSTACK_SSH_USER=deploy). Or no | prohibit-password.
ssh_permit_root_login = "auto"
# Moving SSH to another port, in two deploys: with ssh_next_port = 2222 while pyinfra still
# connects on the current port, sshd listens on both and ufw and fail2ban take on 2222;
# then a deploy connecting on 2222 (PRODSTACK_SSH_PORT=2222; the key unset or 2222) closes
# the old port in ufw and drops it from sshd. docs/vps.md "SSH port".
ssh_next_port = None

# --- nginx ----------------------------------------------------------------------------------
# Requests per client IP per minute nginx lets through (formerly rate_limit_rps, per second:
# 600 is 10 r/s), the cloud's WAF limit of the same name; rate_limit_burst more may queue.
edge_rate_limit_per_minute = 600
rate_limit_burst = 20
# Clients never rate limited: the host itself (health checks, smoke tests on loopback).
rate_limit_exempt_cidrs = ["127.0.0.0/8", "::1/128"]
# A TCP load balancer in front of several web hosts (docs/vps.md, "In front of several web
# hosts"): its addresses here, and the balancer set to send the PROXY protocol to
# proxy_protocol_port. nginx serves TLS there too and takes the client's address from the
# PROXY header, so the rate limit and the logs see clients, not the balancer; ufw opens the
# port to these addresses only. Default: none (the port stays closed).
proxy_protocol_from = []
proxy_protocol_port = 8443
# An HTTP proxy or CDN in front instead (Cloudflare, a provider's HTTP balancer): its
# addresses here, and nginx takes the client's address from the X-Forwarded-For they set
# (theirs only; the nearest untrusted address wins). Not together with proxy_protocol_from.
forwarded_for_from = []
client_max_body_size = "1m"

# --- PostgreSQL and Redis -----------------------------------------------------------------
postgres_db = "prodstack"
postgres_user = "prodstack"
postgres_port = 5432
postgres_version = None  # default: the distribution's (15 on Debian 12, 16 on Ubuntu 24.04)
# Share of RAM PostgreSQL plans for (shared_buffers is a quarter of it), and connections.
postgres_memory_percent = 50
postgres_max_connections = 200
redis_port = 6379
redis_memory_percent = 10
# Split layout only: the db host's private address and the web hosts allowed to reach it.
private_address = None
db_client_cidrs = []
# Split layout: the private CA for PostgreSQL/Redis TLS, kept on the operator's machine
# (the CA key never goes to a host; see docs/vps.md). Default: `pki/` next to secrets_file.
pki_dir = None

# --- Backups (pgBackRest, docs/vps.md "Backup and restore") ------------------------------
# Longest gap between archived WAL segments while the database is idle, in seconds
# (PostgreSQL's archive_timeout): the RPO when writes are rare. 0 switches it off.
backup_archive_timeout_seconds = 60
# systemd calendar expressions (`systemd-analyze calendar` checks them): a weekly full,
# a daily differential on the other days, and the daily restore drill.
backup_full_calendar = "Sun *-*-* 02:00:00"
backup_diff_calendar = "Mon..Sat *-*-* 02:00:00"
backup_drill_calendar = "*-*-* 04:30:00"
# With backup_s3_bucket: the off-site repository's restore drill, after Sunday's full.
backup_offsite_drill_calendar = "Sun *-*-* 08:00:00"
# Off-site repository 2 on S3-compatible storage. Both repositories are encrypted
# (aes-256-cbc) with the secret BACKUP_CIPHER_PASSPHRASE; the S3 key is the secrets
# BACKUP_S3_ACCESS_KEY_ID/BACKUP_S3_SECRET_ACCESS_KEY and needs no delete right.
backup_s3_bucket = None
backup_s3_prefix = "prodstack"  # the repository's path in the bucket; one per host
backup_s3_endpoint_url = None  # https only, e.g. https://s3.eu-central-1.wasabisys.com
backup_s3_region = "us-east-1"
# host: BUCKET.endpoint (AWS, most providers); path: endpoint/BUCKET (MinIO and the like).
backup_s3_uri_style = "host"
# A local PEM file of the CA that signed the endpoint's certificate, when it is not one
# of the system's CAs. Default: the system's CAs.
backup_s3_ca_file = None

# --- Monitoring and alerting (docs/vps.md, "Monitoring") ------------------------------
# Prometheus keeps metrics this many days, and never more than this share of the disk
# that holds /var/lib/prometheus: whichever limit is reached first wins.
metrics_retention_days = 30
metrics_retention_disk_percent = 10
# Clients that may read the API's /metrics and /openapi.json through nginx, besides the
# host itself (an outside Prometheus, for example). Default: none.
metrics_allowed_cidrs = []
# Where alerts go. With neither alert_email nor the secret ALERT_WEBHOOK_URL, alerts only
# show in Alertmanager (on loopback) and every deploy warns.
alert_email = None  # e.g. "ops@example.com"; needs alert_smarthost
alert_email_from = None  # default: prodstack@<domain>, else prodstack@localhost
alert_smarthost = None  # SMTP relay "host:port", e.g. "smtp.example.com:587" (STARTTLS)
alert_smarthost_user = None  # with a user, the password is the secret ALERT_SMTP_PASSWORD
# Two more receivers are secrets, because their URLs carry a token (tasks/config.py
# refuses them, and anything that looks like a credential, as data):
# - ALERT_WEBHOOK_URL: a Slack incoming webhook (hooks.slack.com), or any receiver of
#   Alertmanager's webhook JSON (ntfy-style bridges, Teams through a bridge);
# - ALERT_HEARTBEAT_URL: a dead man's switch (healthchecks.io-style ping URL) that gets the
#   always-firing Watchdog every few minutes; without one, Watchdog goes to the receivers
#   once a day.
# Grafana from Grafana's signed apt repository, on loopback (an SSH tunnel reaches it, as
# Prometheus), with its own login (admin password: the secret GRAFANA_ADMIN_PASSWORD).
grafana = False
# Addresses that may also reach it at https://<host>/grafana/ (rate limited); none: tunnel only.
grafana_allowed_cidrs = []

# --- Secrets ----------------------------------------------------------------------------------
# KEY=value file, outside git (see .gitignore); PRODSTACK_<KEY> in the environment wins.
secrets_file = "secrets.env"
