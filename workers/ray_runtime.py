"""Starting or joining Ray: one place, for the audit, the ingest and the shard actors."""

from __future__ import annotations

import os

from pipeline.config import Config


def init_ray(config: Config, address: str | None = None) -> None:
    """Connect to ``address`` (a cluster) or start a local Ray sized by the config."""
    import ray

    if ray.is_initialized():
        return
    address = address or config.ray.address or None
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster
    ray.init(
        num_cpus=config.ray.num_cpus or os.cpu_count(),
        object_store_memory=config.ray.object_store_mb * 2**20,
        include_dashboard=False,
        log_to_driver=False,
    )
