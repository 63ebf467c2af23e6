"""Index shards held by Ray actors: beyond one node, each shard's segments live in the memory of
an actor somewhere on the cluster and every frame search fans out to all of them at once.

An index is split into ``index.shards`` shards by compaction (pipeline/index/compaction.py);
each segment belongs to one. A ``ShardActor`` holds its shard's segments with the same
``LocalSearcher`` a single process uses, following the catalog as references are added or
removed; ``RayShards`` asks every shard for its ``k`` best and merges them with the one total
order of ``merge_topk``, so the answer is exactly what one node searching everything returns.
The index directory must be reachable at the same path from every node (a shared file system):
the actors read their segments there, the driver and aligners read descriptors there.

A shard actor that dies is restarted by Ray (``ray.max_restarts``), reloads its shard from the
directory, and the search is retried (``ray.max_task_retries``): searches are read-only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.index.segments import merge_topk

log = logging.getLogger(__name__)


class ShardActor:
    def __init__(self, index_dir: str, shard: int, config: dict):
        from pipeline.index.catalog import Catalog
        from pipeline.index.segments import LocalSearcher

        index = Config.from_dict(config).index
        root = Path(index_dir)
        self.shard = shard
        self.searcher = LocalSearcher(root, Catalog(root / "catalog.sqlite"), index.nprobe, [shard])
        self.searcher.refresh()  # load now, not on the first query
        log.info("shard %d of %s loaded: %d vectors", shard, index_dir, self.searcher.vectors)

    def pid(self) -> int:
        return os.getpid()

    def approximate(self) -> bool:
        return self.searcher.approximate

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.searcher.search(x, k)

    def search_audio(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.searcher.search_audio(hashes)


class RayShards:
    """A ``Searcher`` over shard actors (see the module docstring)."""

    def __init__(self, actors: list):
        self.actors = actors

    @classmethod
    def start(cls, index_dir: str | Path, config: Config) -> RayShards:
        """One actor per shard of the index in ``index_dir``; waits until all are loaded."""
        import ray

        from pipeline.index.catalog import Catalog

        catalog = Catalog(Path(index_dir) / "catalog.sqlite")
        shards = int(catalog.meta("shards") or config.index.shards)
        catalog.close()
        remote = ray.remote(ShardActor).options(
            num_cpus=config.ray.shard_cpus,
            max_restarts=config.ray.max_restarts,
            max_task_retries=config.ray.max_task_retries,
        )
        plain = config.to_dict()
        actors = [remote.remote(str(Path(index_dir).resolve()), s, plain) for s in range(shards)]
        ray.get([a.pid.remote() for a in actors])
        log.info("%d shard actor(s) hold %s", shards, index_dir)
        return cls(actors)

    @property
    def approximate(self) -> bool:
        import ray

        return any(ray.get([a.approximate.remote() for a in self.actors]))

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import ray

        x = np.ascontiguousarray(x, dtype=np.float32)
        parts = ray.get([a.search.remote(x, k) for a in self.actors])
        return merge_topk(parts, k)

    def search_audio(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every shard's postings of the hashes (each reference lives in one shard)."""
        import ray

        parts = ray.get([a.search_audio.remote(hashes) for a in self.actors])
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def shard_searcher(index_dir: str | Path, config: Config, address: str | None) -> RayShards | None:
    """The index's shards on Ray actors when a cluster is named (``--ray-address`` or
    ``ray.address``); None: the calling process searches the index itself."""
    address = address or config.ray.address
    if not address:
        return None
    from workers.ray_runtime import init_ray

    init_ray(config, address)
    return RayShards.start(index_dir, config)
