"""T-shirt sizes, after the seeds' startup / production / enterprise profiles.

The VPS profile (pyinfra) uses the same three names; here each maps to AWS capacity.
Seed profiles: startup $35/month (2 CPU / 4 GB host, managed PG 2 GB), production
$85/month (4 CPU / 8 GB, PG 4 GB + Redis 1 GB), enterprise $200/month (HA, several hosts).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    """Capacity a size stands for. Every value can be overridden by its own config key."""

    task_cpu: str
    """Fargate task CPU units."""
    task_memory: str
    """Fargate task memory (MiB)."""
    replicas: int
    """Initial task count (``replicas``)."""
    min_replicas: int
    """Autoscaling floor (``min_replicas``)."""
    max_replicas: int
    """Autoscaling ceiling (``max_replicas``)."""
    az_count: int
    """Availability zones (``az_count``)."""
    nat: str
    """NAT strategy (``nat``)."""
    multi_az: bool
    """RDS Multi-AZ and a cache replica with failover (``multi_az``)."""
    db_instance_class: str
    """RDS instance class."""
    storage_gb: int
    """Initial RDS storage (``storage_gb``)."""
    cache_node_type: str
    """ElastiCache node type. (What a size costs: `prodstack cost`, docs/cost.md.)"""


SIZES: dict[str, Size] = {
    # startup: one small task, single NAT, burstable DB/cache, no standby.
    "small": Size("256", "512", 1, 1, 2, 2, "single", False,
                  "db.t4g.micro", 20, "cache.t4g.micro"),
    # production: the seed's 4-core/8 GB database class, Multi-AZ, two tasks.
    "medium": Size("512", "1024", 2, 2, 6, 2, "single", True,
                   "db.m7g.large", 50, "cache.t4g.small"),
    # enterprise: three tasks (the seed's topology), three AZs, NAT per AZ.
    "large": Size("1024", "2048", 3, 3, 12, 3, "per_az", True,
                  "db.m7g.xlarge", 100, "cache.m7g.large"),
}
