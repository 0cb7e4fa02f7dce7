"""What `small`, `medium` and `large` mean, on both targets: the one size table.

The cloud program (stacks/config.py), the VPS deploy (pyinfra/tasks/config.py), the VPS
planner's reference hosts (prodstack/vps_plan.py), `prodstack cost` and `prodstack choose`
all read this table; `size` is a shared key (prodstack/profile.py). What each size costs
is in prodstack/data/prices.toml and `prodstack cost`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CloudSize:
    """AWS capacity a size stands for. Every value can be overridden by its own config key."""

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


@dataclass(frozen=True)
class VpsSize:
    """A VPS web host's API containers for a size, and the host the size is planned on."""

    replicas: int
    """API containers per web host (``replicas``)."""
    container_memory_mb: int
    """Memory limit of each container (``container_memory_mb``)."""
    container_cpus: float
    """CPU limit of each container (``container_cpus``)."""
    host_cpus: int
    """vCPUs of the reference host `prodstack plan --profile vps` plans against."""
    host_memory_mb: int
    """Memory of that reference host."""


@dataclass(frozen=True)
class Size:
    cloud: CloudSize
    vps: VpsSize


SIZES: dict[str, Size] = {
    # Dev and small production: one small task, single NAT, burstable database and cache,
    # no standby; a 2 vCPU / 4 GB VPS with two replicas.
    "small": Size(
        CloudSize("256", "512", 1, 1, 2, 2, "single", False, "db.t4g.micro", 20, "cache.t4g.micro"),
        VpsSize(2, 256, 0.5, 2, 4096),
    ),
    # Production: a 4-core / 8 GB database class, Multi-AZ, two tasks; a 4 vCPU / 8 GB VPS
    # with three replicas.
    "medium": Size(
        CloudSize("512", "1024", 2, 2, 6, 2, "single", True, "db.m7g.large", 50, "cache.t4g.small"),
        VpsSize(3, 384, 1.0, 4, 8192),
    ),
    # Larger production: three tasks, three AZs, NAT per AZ; an 8 vCPU / 16 GB VPS and up.
    "large": Size(
        CloudSize("1024", "2048", 3, 3, 12, 3, "per_az", True,
                  "db.m7g.xlarge", 100, "cache.m7g.large"),
        VpsSize(4, 512, 1.5, 8, 16384),
    ),
}  # fmt: skip
NAMES = tuple(SIZES)
CLOUD = {name: size.cloud for name, size in SIZES.items()}
VPS = {name: size.vps for name, size in SIZES.items()}
