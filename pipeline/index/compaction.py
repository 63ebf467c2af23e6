"""Compaction: encode, merge and clean segments without stopping readers or writers.

What it does, by the catalog's size (``structure.choose_structure``):

* a catalog that outgrew exact search gets a quantizer trained on a sample of its own
  descriptors (``quantizer.faiss``; the record is in ``index info``), and every sealed flat
  segment is encoded into a coded segment; a catalog grown far past what the quantizer was
  trained for (4x the cells) is retrained and re-encoded from its descriptor files;
* coded segments of a shard are merged (codes are copied, not re-encoded) when a shard holds
  more than ``index.merge_factor`` of them, or tombstones hold a fifth of one; ``copyspan index
  compact`` merges each shard into one segment and drops every tombstone;
* a change of ``index.shards`` spreads every reference over the new shards (by number);
* the whitening is refitted when the catalog changed enough since it was fitted.

Nobody has to run it by hand: ``index add``/``import`` start ``index compact --if-due`` in the
background, and work committed while a compaction runs is compacted by it (``compact``: the
one that finds it busy leaves a request, the running one makes another pass). ``index info``
shows whether one is running and since when (``compaction_state``).

The work runs outside the writer lock: the lock is held only to seal the open flat segment
and read what to compact, and again to commit the swap in one transaction. References removed
meanwhile keep a tombstone, moved onto the new segment. New segment files get fresh names and
old ones are unlinked after the commit, so a crash at any point leaves a readable index (the
next writer sweeps the leftovers) and running compaction again finishes the job.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from pipeline import atomic
from pipeline.audio.postings import Postings, postings_path
from pipeline.config import IndexConfig, WhitenConfig
from pipeline.errors import TransientError
from pipeline.index.catalog import Catalog, Reference, Segment, Tombstone, now
from pipeline.index.segments import frame_ids
from pipeline.index.structure import (
    Structure,
    choose_structure,
    measure_error,
    train,
    train_size,
)
from pipeline.index.vectors import read_member
from pipeline.index.whitening import Whitening

log = logging.getLogger(__name__)

RETRAIN_GROWTH = 4  # retrain when the chosen structure has this many times the trained cells
TOMBSTONE_SHARE = 0.2  # a coded segment this much removed is rewritten by a background pass
ENCODE_BATCH = 65536  # vectors encoded per FAISS call


class ReferenceIndex(Protocol):
    """What compaction needs of an index (pipeline/index/reference_index.py implements it)."""

    root: Path
    config: IndexConfig
    catalog: Catalog

    @property
    def shards(self) -> int: ...
    def structure(self) -> Structure: ...
    def write_lock(self) -> contextlib.AbstractContextManager[None]: ...
    def change(self) -> contextlib.AbstractContextManager[list[Path]]: ...
    def storage_errors(self) -> contextlib.AbstractContextManager[None]: ...
    def repair(self) -> list[str]: ...
    def whitening(self, config: WhitenConfig) -> Whitening | None: ...
    def sample(self, limit: int, seed: int = 0) -> tuple[np.ndarray, int]: ...


class CompactionBusy(TransientError):
    """Another compaction of this index is running."""


@dataclass
class Plan:
    structure: Structure  # what the catalog should be made of now
    retrain: bool  # a (new) quantizer is trained first
    rebuild: bool  # every consumed segment is rebuilt from descriptors, over index.shards
    groups: dict[int, list[Segment]] = field(default_factory=dict)  # shard -> merged into one

    @property
    def worthwhile(self) -> bool:
        return any(self.groups.values())


def plan_compaction(index: ReferenceIndex, full: bool) -> Plan:
    """Which segments to rebuild, per shard (``full``: everything that can be improved)."""
    config, catalog = index.config, index.catalog
    dim = int(catalog.meta("dim") or 512)
    trained = index.structure()
    wanted = choose_structure(catalog.totals()[1], dim, config)
    if trained.kind == "ivfpq" and config.kind != "flat" and wanted.kind == "flat":
        wanted = trained  # a catalog that shrank keeps its codes (no flip-flopping)
    retrain = wanted.kind == "ivfpq" and (
        trained.kind != "ivfpq" or wanted.nlist >= RETRAIN_GROWTH * trained.nlist
    )
    segments = [s for s in catalog.segments() if s.sealed or full]
    decode = wanted.kind == "flat" and any(s.coded for s in segments)
    if retrain or decode or (full and index.shards != config.shards):
        return Plan(wanted, retrain, True, {0: segments} if segments else {})
    removed: dict[int, int] = {}
    for stone in catalog.tombstones():
        removed[stone.segment] = removed.get(stone.segment, 0) + stone.frames
    plan = Plan(wanted, False, False)
    for shard in range(index.shards):
        mine = [s for s in segments if s.shard == shard]
        dirty = [s for s in mine if s.seg in removed]
        flat = [s for s in mine if not s.coded]
        coded = sorted((s for s in mine if s.coded), key=lambda s: s.vectors)
        if full:  # one segment per shard, nothing removed left inside
            chosen = mine if len(mine) > 1 or dirty else []
        elif wanted.kind == "flat":
            chosen = []  # searchers rebuild flat segments from live members anyway
        else:
            excess = len(coded) + bool(flat) - config.merge_factor
            smallest = coded[: excess + 1] if excess > 0 else []
            heavy = [s for s in coded if removed.get(s.seg, 0) > TOMBSTONE_SHARE * s.vectors]
            chosen = flat + [s for s in coded if s in smallest or s in heavy]
            if len(chosen) == 1 and chosen[0].coded and chosen[0] not in heavy:
                chosen = []
        if chosen:
            plan.groups[shard] = chosen
    return plan


LOCK = ".compact.lock"  # held by the running compaction (flock: released if it dies)
REQUEST = ".compact.request"  # left by a writer whose compaction found one running
RUNNING = ".compact.running"  # {"pid", "since"} of the running compaction, for index info


@contextlib.contextmanager
def compaction_lock(root: Path, wait: bool) -> Iterator[None]:
    with open(root / LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise CompactionBusy(f"a compaction of {root} is already running") from exc
        running = root / RUNNING
        try:
            atomic.write_text(running, json.dumps({"pid": os.getpid(), "since": now()}))
            yield
        finally:
            running.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def request_compaction(root: Path) -> None:
    """Ask the running compaction (if any) for one more pass once it is done."""
    atomic.write_text(root / REQUEST, now())


def compaction_state(root: Path) -> dict:
    """Whether a compaction is running and since when (``index info``); a marker left by a
    compactor that died is not running (its work stays due for the next command)."""
    state: dict = {"running": False, "since": None, "pid": None}
    try:
        marker = json.loads((root / RUNNING).read_text())
    except (OSError, ValueError):
        marker = None
    if marker and _alive(int(marker.get("pid", 0))):
        state.update(running=True, since=marker.get("since"), pid=marker["pid"])
    state["requested"] = (root / REQUEST).exists()
    return state


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def compact(
    index: ReferenceIndex, whiten: WhitenConfig | None = None, full: bool = True, wait: bool = True
) -> dict:
    """Compact ``index`` (see the module docstring); returns what was done.

    Work added while a pass runs is not lost: whoever finds a compaction running
    (``wait=False``: the background ``index compact --if-due`` after an add or import) leaves a
    request and returns; the running one checks for requests after releasing its lock and makes
    another pass. Leaving the request before trying the lock, and checking it after releasing,
    means one of the two always sees the other."""
    started = time.perf_counter()
    request = index.root / REQUEST
    if not wait:
        request_compaction(index.root)
    passes: list[dict] = []
    while True:
        try:
            with compaction_lock(index.root, wait):
                request.unlink(missing_ok=True)  # this pass plans after every earlier commit
                passes.append(_pass(index, whiten, full))
        except CompactionBusy:
            if passes:  # another compactor took over after our pass: it honours the request
                break
            raise
        if not request.exists():
            break
        log.info("compaction of %s: work arrived during the pass; compacting again", index.root)
        full, wait = False, False
    report = passes[0] if len(passes) == 1 else {**passes[-1], "passes": passes}
    report["seconds"] = round(time.perf_counter() - started, 3)
    log.info("compaction of %s done: %s", index.root, json.dumps(report))
    return report


def _pass(index: ReferenceIndex, whiten: WhitenConfig | None, full: bool) -> dict:
    """One compaction pass, under the compaction lock."""
    with index.write_lock():
        index.repair()  # a full sweep: compaction may follow a crash
        if full:
            with index.change():
                index.catalog.seal_flat()  # new references go to a fresh segment meanwhile
        plan = plan_compaction(index, full)
        stones = index.catalog.tombstones()
        members = {s.seg: index.catalog.members(s.seg) for g in plan.groups.values() for s in g}
    report: dict = {"structure": plan.structure.to_dict(), "trained": False}
    if plan.worthwhile:
        with index.storage_errors():
            report.update(_run(index, plan, members, stones))
    if whiten is not None and whiten.enabled:
        fitted = index.whitening(whiten)  # refits only when the catalog changed enough
        report["whitening_frames"] = fitted.frames if fitted else None
    return report


def _train(index: ReferenceIndex, structure: Structure) -> tuple[faiss.Index, dict]:
    log.info("compaction: training %s", structure.factory)
    started = time.perf_counter()
    sample, total = index.sample(train_size(structure, index.config), seed=0)
    quantizer = train(structure, sample)
    record = {
        "structure": structure.to_dict(),
        "sample_vectors": len(sample),
        "catalog_vectors": total,
        "seed": 0,
        "seconds": round(time.perf_counter() - started, 1),
        "similarity_error": measure_error(quantizer, sample),
        "trained_at": now(),
    }
    write_index(quantizer, index.root / "quantizer.faiss")
    return quantizer, record


def write_index(index: faiss.Index, target: Path) -> None:
    """Atomically, through Python's file I/O (a full disk raises ``OSError`` here, where FAISS's
    own writer would raise a bare ``RuntimeError``)."""
    data = faiss.serialize_index(index)
    with atomic.atomic_path(target) as tmp, open(tmp, "wb") as handle:
        handle.write(memoryview(data))


def _run(
    index: ReferenceIndex, plan: Plan, members: dict[int, list[Reference]], stones: list[Tombstone]
) -> dict:
    quantizer, record = None, None
    if plan.retrain:
        quantizer, record = _train(index, plan.structure)
    elif plan.structure.kind == "ivfpq":
        quantizer = faiss.read_index(str(index.root / "quantizer.faiss"))
    shards = index.config.shards
    built: list[tuple[int, str | None, list[int], int]] = []  # shard, file, members, vectors
    consumed: list[Segment] = []
    for shard, group in plan.groups.items():
        consumed += group
        refs = [ref for s in group for ref in members[s.seg]]
        targets = (
            [(t, [r for r in refs if r.num % shards == t]) for t in range(shards)]
            if plan.rebuild
            else [(shard, refs)]
        )
        for target, chosen in targets:
            if quantizer is None:  # flat: members move, nothing is written
                built.append((target, None, [r.num for r in chosen], sum(r.frames for r in chosen)))
                continue
            copy_from = [] if plan.rebuild else [s for s in group if s.coded]
            name = f"{uuid.uuid4().hex}.faiss"
            nums, vectors = _build_coded(index, quantizer, copy_from, chosen, stones, name)
            built.append((target, name, nums, vectors))
    _commit(index, built, consumed, {t.num for t in stones}, record)
    for segment in consumed:
        if segment.file:
            (index.root / "segments" / segment.file).unlink(missing_ok=True)
            postings_path(index.root / "segments" / segment.file).unlink(missing_ok=True)
    return {
        "trained": plan.retrain,
        "training": record,
        "segments_consumed": len(consumed),
        "segments_built": len(built),
        "references": sum(len(b[2]) for b in built),
    }


def _build_coded(
    index: ReferenceIndex,
    quantizer: faiss.Index,
    copy_from: list[Segment],
    refs: list[Reference],
    stones: list[Tombstone],
    name: str,
) -> tuple[list[int], int]:
    """Write one coded segment holding ``refs``: codes copied from the coded segments
    ``copy_from`` (their removed references dropped), the rest encoded from descriptor files.
    Returns the member numbers it holds and its vector count."""
    out = faiss.clone_index(quantizer)
    out.reset()
    out_ivf = faiss.extract_index_ivf(out)
    copied: set[int] = set()
    sounds: list[Postings] = []  # the members' soundtrack hashes, written beside the codes
    for segment in copy_from:
        part_path = index.root / "segments" / segment.file
        part = faiss.read_index(str(part_path))
        part_ivf = faiss.extract_index_ivf(part)
        removed = {t.num for t in stones if t.segment == segment.seg}
        if postings_path(part_path).exists():
            sounds.append(Postings.load(postings_path(part_path)).without(removed))
        gone = [frame_ids(t.num, t.frames) for t in stones if t.segment == segment.seg]
        if gone:
            part.remove_ids(faiss.IDSelectorBatch(np.concatenate(gone)))
            # Fast-scan lists drop the codes but FAISS 1.12 leaves the count as it was.
            part_ivf.ntotal = part_ivf.invlists.compute_ntotal()
        out_ivf.merge_from(part_ivf, 0)
        copied.update(r.num for r in index.catalog.members(segment.seg))
    out.ntotal = out_ivf.ntotal  # merge_from updates the inner index only
    todo = [r for r in refs if r.num not in copied]
    log.info("compaction: encoding %d reference(s) into segment %s", len(todo), name)
    kept = [r.num for r in refs if r.num in copied]
    batch: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    for ref in todo:
        try:
            vectors, hashes, times = read_member(index.root, ref.num)
        except FileNotFoundError:  # removed since the plan was made
            continue
        kept.append(ref.num)
        sounds.append(Postings.build([(ref.num, hashes, times)]))
        if not len(vectors):  # a reference that is only sound
            continue
        batch.append(vectors)
        ids.append(frame_ids(ref.num, len(vectors)))
        if sum(len(b) for b in batch) >= ENCODE_BATCH:
            out.add_with_ids(np.concatenate(batch), np.concatenate(ids))
            batch, ids = [], []
    if batch:
        out.add_with_ids(np.concatenate(batch), np.concatenate(ids))
    log.info("compaction: writing segment %s (%d vectors)", name, out.ntotal)
    sound = Postings.merge(sounds)
    if len(sound):  # written first: a segment file is committed only with its postings
        sound.save(postings_path(index.root / "segments" / name))
    write_index(out, index.root / "segments" / name)
    return kept, int(out.ntotal)


def _commit(
    index: ReferenceIndex,
    built: list[tuple[int, str | None, list[int], int]],
    consumed: list[Segment],
    known: set[int],
    record: dict | None,
) -> None:
    catalog = index.catalog
    old = [s.seg for s in consumed]
    with index.write_lock(), index.change():
        moves: dict[int, list[int]] = {}
        home: dict[int, int] = {}
        for shard, file, nums, vectors in built:
            kind = "flat" if file is None else "coded"
            seg = catalog.insert_segment(kind, shard, index.config.shards, True, vectors, file)
            moves[seg] = nums
            home.update(dict.fromkeys(nums, seg))
        # References removed while the segments were built: their frames are in the new
        # segments, so their tombstones move there instead of going with the old segments.
        for stone in catalog.tombstones():
            if stone.segment in old and stone.num not in known and stone.num in home:
                catalog.move_tombstone(stone.num, home[stone.num])
        catalog.replace_segments(old, moves)
        if record is not None:
            catalog.set_meta("training", json.dumps(record))
        catalog.set_meta("shards", str(index.config.shards))
    log.info("compaction: committed %d segment(s) in place of %d", len(built), len(consumed))
