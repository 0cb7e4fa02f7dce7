"""prodstack on a VPS: `pyinfra INVENTORY deploy.py` (run from pyinfra/, see docs/vps.md).

Thin on purpose: validate this host's data (before any change), then apply each concern
from tasks/ by inventory group: `web` runs the API containers and nginx, `db` runs
PostgreSQL, Redis and the backups. A single host is in both groups.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyinfra import host, inventory, logger  # noqa: E402
from pyinfra.operations import files  # noqa: E402

from tasks.audit import audit_log, record_config_push, refuse_if_locked  # noqa: E402
from tasks.templates import no_diff_of_secrets  # noqa: E402

# First, before the other tasks load, any validation or change: someone else's deploy lock
# stops the run at once.
refuse_if_locked()
no_diff_of_secrets()

from tasks.acct import acct  # noqa: E402
from tasks.aide import aide  # noqa: E402
from tasks.api import service  # noqa: E402
from tasks.base import hardening, packages  # noqa: E402
from tasks.config import settings_for  # noqa: E402
from tasks.docker import engine  # noqa: E402
from tasks.firewall import firewall  # noqa: E402
from tasks.healthcheck import observability  # noqa: E402
from tasks.nginx import load_balancer  # noqa: E402
from tasks.os_hardening import os_hardening  # noqa: E402
from tasks.pgbackrest import backup, backup_finish  # noqa: E402
from tasks.postgres import database, database_finish, with_app_login  # noqa: E402
from tasks.prometheus import monitoring  # noqa: E402
from tasks.pwquality import pwquality  # noqa: E402
from tasks.redis import cache, cache_finish  # noqa: E402

db_hosts = inventory.get_group("db", None) or []
cfg = settings_for(
    host.data.dict(),
    set(host.groups),
    db_data=db_hosts[0].data.dict() if db_hosts and db_hosts[0] is not host else None,
    web_data=[web.data.dict() for web in inventory.get_group("web", None) or []] or None,
)
for warning in cfg.warnings:
    logger.warning(f"prodstack: {warning}")
# Which PostgreSQL login role the replicas use: read from the db host's roles (every host
# the same answer), before any change; an unfinished rotation stops the run here.
cfg = with_app_login(cfg)

packages_op = packages(cfg)
hardening(cfg)
audit_log(cfg)
os_hardening(cfg, packages_op=packages_op)
acct(cfg)
pwquality(cfg)
firewall(cfg)
if cfg.is_web:
    engine(cfg)
if cfg.is_db:
    database(cfg)
    cache(cfg)
    backup_ops = backup(cfg)
# Every host runs this operation, so pyinfra orders each host's operations above before
# any below: PostgreSQL and Redis on the db host are up before a web host deploys the API.
# (Between hosts, pyinfra otherwise advances each host's list one operation at a time.)
files.directory(name="Config directory", path="/etc/prodstack", mode="750")
if cfg.is_web:
    service(cfg)
    load_balancer(cfg, packages_op=packages_op)
observability(cfg)
monitoring(cfg)
# Every host runs this too (a second point where all hosts meet): each web host's replicas
# and the exporter use a new Redis password, and the replicas a new PostgreSQL login,
# before the db host drops the old ones.
files.directory(name="Config directory (every client has the new Redis password)",
                path="/etc/prodstack", mode="750")  # fmt: skip
if cfg.is_db:
    cache_finish(cfg)
    database_finish(cfg)
    # Last: a repository that cannot be used must not stop the API's deploy (tasks/pgbackrest.py).
    backup_finish(cfg, backup_ops)
# Last: AIDE's first database is of the host as this deploy leaves it.
aide(cfg)
record_config_push()
