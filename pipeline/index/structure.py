"""Which FAISS structure holds a catalog's frame descriptors, chosen by its size and a memory
budget, and how that structure is trained and searched.

* **flat**: exact inner product (``IndexFlatIP``), 4·D bytes a vector. Chosen while the catalog
  is small: its search time grows linearly (about 0.45 s for a 30-s query at 100 k vectors on
  2 cores, benchmarks/RESULTS.md), and so does its memory.
* **ivfpq**: an inverted file over ``nlist`` k-means cells, each vector stored as a product-
  quantizer code of ``m`` 4-bit sub-codes searched with SIMD fast-scan (``IVF{nlist},PQ{m}x4fs``
  in FAISS's factory language). A query visits ``nprobe`` cells. Memory: m/2 bytes of code plus
  an 8-byte id per vector. The code size is the largest whose total fits ``index.memory_gb``
  (the autofaiss rule: the memory budget fixes the compression, the catalog size fixes
  ``nlist``). On SSCD descriptors at 1 M vectors (RESULTS.md, "Catalog at scale"), 4-bit
  fast-scan codes of 128 bytes estimate similarities within 0.04-0.12 of the truth and search
  4-10x faster than 8-bit PQ or scalar quantizers; OPQ took 200 s to train on 60 k vectors.

Approximate similarities run low (the codes lose part of each vector), so candidate
generation shortlists references with the floor lowered by the error measured when the
structure is trained (``similarity_error``), then scores the shortlist on the references' exact
descriptors: the codes' error never reaches a threshold or a reported score.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import faiss
import numpy as np

from pipeline.config import IndexConfig
from pipeline.errors import ReferenceIndexError

log = logging.getLogger(__name__)

ID_BYTES = 8  # FAISS stores an int64 id beside every code
SUBQUANTIZERS = (256, 128, 64, 32, 16)  # 4-bit sub-codes per vector, best first
MIN_TRAIN_PER_LIST = 39  # FAISS's k-means warns below this many points per centroid
TWO_LEVEL_FROM = 2048  # nlist from which k-means runs in two levels (much faster)


@dataclass(frozen=True)
class Structure:
    kind: str  # "flat" | "ivfpq"
    factory: str = "Flat"  # FAISS index_factory key
    nlist: int = 0
    subquantizers: int = 0
    nprobe: int = 0

    @property
    def bytes_per_vector(self) -> float:
        return self.subquantizers / 2 + ID_BYTES if self.kind == "ivfpq" else 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Structure:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


FLAT = Structure("flat")


def choose_structure(vectors: int, dim: int, config: IndexConfig) -> Structure:
    """The structure for a catalog of ``vectors`` descriptors of ``dim`` dimensions."""
    budget = config.memory_gb * 2**30
    fits_flat = vectors * (4 * dim + ID_BYTES) <= budget
    if config.kind == "flat" or (
        config.kind == "auto" and vectors <= config.flat_max_vectors and fits_flat
    ):
        return FLAT
    if vectors < config.min_train_vectors:  # too few to train codes on: exact is also fastest
        return FLAT
    nlist = 2 ** round(math.log2(max(1.0, math.sqrt(vectors))))
    nlist = max(16, min(nlist, 65536, 2 ** int(math.log2(vectors // MIN_TRAIN_PER_LIST))))
    per_vector = budget / vectors
    fitting = [m for m in SUBQUANTIZERS if dim % m == 0 and m / 2 + ID_BYTES <= per_vector]
    if not fitting:
        raise ReferenceIndexError(
            f"index.memory_gb={config.memory_gb} cannot hold {vectors} vectors even as 8-byte "
            "codes: raise it or split the index into shards (index.shards, on Ray)"
        )
    nprobe = config.nprobe or default_nprobe(nlist)
    quantizer = f"IVF{nlist}_HNSW32" if nlist >= 4096 else f"IVF{nlist}"
    return Structure("ivfpq", f"{quantizer},PQ{fitting[0]}x4fs", nlist, fitting[0], nprobe)


def default_nprobe(nlist: int) -> int:
    """Cells a query vector visits: nlist/64, clamped to 16..64. On the development seed (1)
    at 10 M frames F1 and pair recall did not move from 16 to 64 cells, but the report seed
    (2) lost 0.02 F1 and 0.035 pair recall at 32 cells (nlist/128) against 64: the margin is
    kept (benchmarks/RESULTS.md, "Catalog at scale")."""
    return max(16, min(64, nlist // 64))


def train_size(structure: Structure, config: IndexConfig) -> int:
    return min(config.train_max_vectors, max(65536, 64 * structure.nlist))


def train(structure: Structure, sample: np.ndarray) -> faiss.Index:
    """A trained, empty index of ``structure`` fitted on ``sample`` [M, D] float32."""
    index = faiss.index_factory(sample.shape[1], structure.factory, faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    ivf = faiss.extract_index_ivf(index)
    # Spherical k-means (unit centroids) suits inner products on unit descriptors; 10 rounds:
    # the centroids settle long before FAISS's default 25 on this data.
    ivf.cp.spherical, ivf.cp.niter = True, 10
    if structure.nlist >= TWO_LEVEL_FROM:  # sqrt(nlist) clusters, then each one split
        from faiss.contrib.clustering import two_level_clustering

        coarse = round(math.sqrt(structure.nlist))
        centroids, _ = two_level_clustering(
            sample, coarse, structure.nlist, clustering_niter=10, spherical=True
        )
        ivf.quantizer.train(centroids)
        ivf.quantizer.add(centroids)  # IndexIVF.train then keeps these cells
    index.train(sample)
    log.info(
        "trained %s on %d vectors in %.1fs", structure.factory, len(sample),
        time.perf_counter() - started,
    )  # fmt: skip
    return index


def measure_error(trained: faiss.Index, sample: np.ndarray, seed: int = 0) -> dict:
    """How far the codes' similarity estimates fall from the truth in the range that decides
    candidates: sample vectors are encoded, and queried with noisy copies of themselves whose
    true similarity spreads over 0.3-0.8. Returns the mean, p5 and p95 of estimate - truth."""
    rng = np.random.default_rng(seed)
    base = sample[rng.choice(len(sample), min(len(sample), 20000), replace=False)]
    index = faiss.clone_index(trained)
    index.reset()
    index.add(base)
    picked = rng.choice(len(base), min(len(base), 2000), replace=False)
    noise = rng.standard_normal((len(picked), base.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    mix = rng.uniform(0.3, 0.8, (len(picked), 1)).astype(np.float32)
    queries = mix * base[picked] + np.sqrt(1 - mix**2) * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.einsum("nd,nd->n", queries, base[picked])
    ivf = faiss.extract_index_ivf(index)
    params = faiss.SearchParametersIVF(nprobe=ivf.nlist)
    sims, ids = index.search(queries, 50, params=params)
    found = ids == picked[:, None]
    rows = found.any(axis=1)
    error = sims[found] - truth[rows]
    return {
        "mean": round(float(error.mean()), 4),
        "p5": round(float(np.percentile(error, 5)), 4),
        "p95": round(float(np.percentile(error, 95)), 4),
        "pairs": int(rows.sum()),
    }
