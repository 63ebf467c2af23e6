"""The reference index: a directory of segments, per-reference descriptors and a catalog.

Layout of ``DIR``::

    catalog.sqlite      references, segments, tombstones, meta (pipeline/index/catalog.py)
    vectors/<num>.npz   each reference's frame descriptors (float16), spans and weights
    segments/*.faiss    coded segments (compressed FAISS indexes written by compaction)
    quantizer.faiss     the trained, empty structure coded segments are made from
    whitening.npz       optional: PCA whitening fitted on a sample of the reference frames
    translation.npz     while an upgrade is in transition: the map of the former model's
                        descriptors into this index's space (pipeline/index/translation.py)
    background.npz      optional: descriptors of background footage (generic-frame weights)

Adding never rewrites what is there: a new reference's descriptors go to their own file and
it joins the open flat segment (exact, and fileless: searchers build it in memory from the
members' files). Removing deletes the catalog row at once and leaves a tombstone for frames
still inside a segment. Compaction (pipeline/index/compaction.py) encodes sealed flat segments
into coded ones once the catalog outgrows exact search, merges segments and drops tombstones.

The catalog is the source of truth and every change is one SQLite transaction: files are
written (atomically) before it commits and unlinked only after, so a crash or a full disk
leaves the last committed state readable. Files a crash leaves behind are swept by the next
writer. Writers hold an exclusive lock on ``DIR/.lock``; readers need none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from pipeline import atomic
from pipeline.audio.fingerprint import FINGERPRINT_ID
from pipeline.audio.postings import postings_path
from pipeline.config import IndexConfig, WhitenConfig, load_config
from pipeline.errors import (
    IdConflictError,
    ModelMismatchError,
    ReferenceIndexError,
    StorageFullError,
    UnknownReferenceError,
)
from pipeline.index.banks import DEFAULT_BANK, Bank, BankError, check_name
from pipeline.index.catalog import FORMAT_VERSION, Catalog, Reference, now
from pipeline.index.compaction import (
    compact,
    compaction_lock,
    compaction_state,
    plan_compaction,
)
from pipeline.index.pooling import video_descriptor
from pipeline.index.segments import LocalSearcher, Searcher, split_ids
from pipeline.index.structure import FLAT, Structure, choose_structure, default_nprobe
from pipeline.index.translation import Translation
from pipeline.index.vectors import VectorCache, sample_vectors, vector_path, write_vectors
from pipeline.index.whitening import Whitening, fit_whitening
from pipeline.records import CROP_MARK, AudioPrint, VideoFeatures, crop_id, crop_parent

log = logging.getLogger(__name__)
MAX_CROPS = 16  # views.reference_grid is at most 4
BACKFILL_REFIT = 0.05  # whitening refitted whenever this share of the frames was backfilled


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


class ReferenceIndex:
    """Open (or create) the index in ``root``. Searching needs no lock; writing takes one.

    ``config`` (the ``index:`` section) sets the memory budget, segment sizes and search
    parameters; ``searcher`` replaces the in-process frame search (e.g. shard actors on Ray).
    """

    def __init__(
        self,
        root: str | Path,
        create: bool = True,
        config: IndexConfig | None = None,
        searcher: Searcher | None = None,
    ):
        self.root = Path(root)
        if not (self.root / "catalog.sqlite").exists() and not create:
            raise ReferenceIndexError(f"no index at {self.root}")
        self.config = config or load_config().index
        (self.root / "vectors").mkdir(parents=True, exist_ok=True)
        (self.root / "segments").mkdir(exist_ok=True)
        self.catalog = Catalog(self.root / "catalog.sqlite")
        self.cache = VectorCache(self.root, self.config.cache_mb * 2**20)
        self._searcher = searcher
        self._approximate = (-1, False)  # generation, whether any segment is coded
        self._totals: tuple[int, tuple[int, int, float]] = (-1, (0, 0, 0.0))
        self._videos: faiss.Index | None = None
        self._videos_state = (-1, 0, 0)  # generation, references, last num loaded
        self._background: np.ndarray | None = None
        self._background_key: int | None = None
        self._whitening: Whitening | None = None
        self._whitening_key: int | None = None
        self._translation: tuple[int | None, Translation | None] = (None, None)  # mtime, fit
        self._banks_of: tuple[int, dict[int, str]] = (-1, {})  # generation, num -> bank
        if (self.root / "frames.faiss").exists():  # written by format 1
            self._upgrade()

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> ReferenceIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            self._searcher = LocalSearcher(self.root, self.catalog, self.config.nprobe)
        return self._searcher

    # ---- catalog -------------------------------------------------------------------------

    @property
    def model(self) -> str | None:
        return self.catalog.meta("model")

    @property
    def generation(self) -> int:
        return self.catalog.generation

    def references(self, crops: bool = False) -> list[Reference]:
        """The indexed references; their crops too with ``crops`` (views.reference_grid)."""
        refs = self.catalog.references()
        return refs if crops else [r for r in refs if crop_parent(r.id) is None]

    def get(self, video_id: str) -> Reference | None:
        return self.catalog.get(video_id)

    def by_sha256(self, sha256: str) -> Reference | None:
        return self.catalog.by_sha256(sha256)

    def lookup(self, num: int) -> Reference | None:
        """The reference numbered ``num``, or None once it is removed or replaced (a search
        can return a number a concurrent writer has just retired)."""
        return self.catalog.by_num(num)

    def by_num(self, num: int) -> Reference:
        ref = self.catalog.by_num(num)
        if ref is None:
            raise UnknownReferenceError(f"no reference number {num}")
        return ref

    def __len__(self) -> int:
        return self.totals()[0]

    def totals(self) -> tuple[int, int, float]:
        """References, frames and seconds of video, read once per committed generation."""
        generation = self.generation
        if self._totals[0] != generation:
            self._totals = (generation, self.catalog.totals())
        return self._totals[1]

    @property
    def shards(self) -> int:
        return int(self.catalog.meta("shards") or self.config.shards)

    def nprobe(self) -> int:
        """Cells a query vector visits in coded segments (0 while there are none)."""
        structure = self.structure()
        if structure.kind != "ivfpq":
            return 0
        return self.config.nprobe or default_nprobe(structure.nlist)

    def structure(self) -> Structure:
        """The structure coded segments are made of (flat while there are none)."""
        training = self.catalog.meta_json("training")
        return Structure.from_dict(training["structure"]) if training else FLAT

    def info(self) -> dict:
        references, frames, duration = self.totals()
        parents = len(self.references())
        whitening = self._read_whitening(self.root / "whitening.npz")
        segments = self.catalog.segments()
        dim = int(self.catalog.meta("dim") or 512)
        return {
            "path": str(self.root),
            "model": self.model,
            "preprocess": self.catalog.meta("preprocess"),
            "references": parents,
            "crop_references": references - parents,  # views.reference_grid
            "frames": frames,
            "duration_s": round(duration, 3),
            "generation": self.generation,
            "whitening_frames": whitening.frames if whitening else None,  # frames it was fitted on
            "upgrade": self.upgrade_state(),  # index upgrade: the fit, backfill progress
            "banks": self.bank_summary(),
            "kind": self.config.kind,
            "structure": self.structure().to_dict(),
            "nprobe": self.nprobe(),  # cells searched per query vector, now
            "training": self.catalog.meta_json("training"),
            "recommended": choose_structure(frames, dim, self.config).to_dict(),
            "segments": {
                "flat": sum(not s.coded for s in segments),
                "coded": sum(s.coded for s in segments),
                "flat_vectors": sum(s.vectors for s in segments if not s.coded),
                "coded_vectors": sum(s.vectors for s in segments if s.coded),
                "tombstones": len(self.catalog.tombstones()),
            },
            "shards": self.shards,
            "disk_bytes": self._disk_bytes(),
            "compaction_due": self.compaction_due(),
            "compaction": compaction_state(self.root),  # running, since, pid, requested
            "audio": self._audio_info(),
        }

    def _audio_info(self) -> dict:
        """The soundtrack hashes the index holds (pipeline/audio/): those a searcher of this
        process holds (None until one is loaded: info must not load a large catalog), and the
        bytes of the coded segments' postings on disk."""
        searcher = self._searcher
        hashes = None
        if isinstance(searcher, LocalSearcher):  # shard actors hold theirs elsewhere
            searcher.refresh()
            hashes = sum(len(s.audio) for s in searcher.loaded.values())
        postings = (self.root / "segments").glob("*.audio.npy")
        return {
            "fingerprint": self.catalog.meta("audio_fingerprint"),
            "hashes": hashes,
            "postings_bytes": sum(p.stat().st_size for p in postings),
        }

    def bank_summary(self) -> dict[str, dict]:
        """Per bank: its policy and what it holds."""
        counts = self.catalog.bank_counts()
        summary = {}
        for bank in self.banks():
            references, frames, seconds = counts.get(bank.name, (0, 0, 0.0))
            summary[bank.name] = {
                **{k: v for k, v in bank.to_dict().items() if k != "name"},
                "references": references,
                "frames": frames,
                "duration_s": round(seconds, 3),
            }
        return summary

    def _disk_bytes(self) -> dict[str, int]:
        def size(paths) -> int:
            return sum(p.stat().st_size for p in paths if p.is_file())

        return {
            "vectors": size((self.root / "vectors").iterdir()),
            "segments": size((self.root / "segments").iterdir()),
            "catalog": size(self.root.glob("catalog.sqlite*")),
        }

    def check_model(self, model: str, preprocess: str = "") -> None:
        """Refuse descriptors of another model, or of other frame preparation, than the ones
        that built the index (an empty ``preprocess`` skips that part of the check), unless
        the index has a translation from them (``index upgrade``)."""
        translation = self.translation()
        if translation is not None and translation.translates(model, preprocess):
            return
        # Indexes built before the default became the student at 288 px hold sscd at 224 px.
        earlier = (
            " (the earlier default: use --config configs/sscd.yaml, or fit a translation with "
            "`copyspan index upgrade`)"
        )
        if self.model is not None and self.model != model:
            raise ModelMismatchError(
                f"index {self.root} was built with model {self.model!r}, not {model!r}"
                + (earlier if self.model == "sscd" else "")
            )
        built = self.catalog.meta("preprocess")
        if preprocess and built and built != preprocess:
            raise ModelMismatchError(
                f"index {self.root} was built with frame preparation {built!r}, not "
                f"{preprocess!r}: rebuild the index or use the same decode/suppress settings"
                + (earlier if self.model == "sscd" else "")
            )

    def as_indexed(self, features: VideoFeatures, query: bool = False) -> VideoFeatures:
        """``features`` in this index's descriptor space: as they are when the index's model
        described them, translated when they come from the model of its translation (a
        ``query``'s calibrated the other way from a reference's: Translation.translate);
        raises ``ModelMismatchError`` otherwise."""
        self.check_model(features.model, features.preprocess)
        translation = self.translation()
        if (
            self.model is not None
            and translation is not None
            and translation.translates(features.model, features.preprocess)
        ):
            return translation.translate(features, query)
        return features

    # ---- model upgrade (translation, backfill) --------------------------------------------

    def translation(self) -> Translation | None:
        """The translation of an upgrade still in transition (``index upgrade``), if any: it
        maps the former model's descriptors into this index's space."""
        path = self.root / "translation.npz"
        try:
            key = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if self._translation[0] != key:
            self._translation = (key, Translation.from_arrays(atomic.read_npz(path)))
        return self._translation[1]

    def translated(self, crops: bool = False) -> list[Reference]:
        """References whose descriptors are still translated from the former model (their
        ``model`` names the model that described them), waiting to be backfilled."""
        return [r for r in self.references(crops) if r.model != self.model]

    def upgrade(self, translation: Translation) -> dict:
        """Move the whole catalog into ``translation``'s target space in one committed change:
        every reference's descriptors translated (no video is read), the index's model and
        frame preparation become the target's, and queries or imports of the former model are
        translated from then on. Readers see the old catalog until the commit, then the new.
        Coded segments are re-encoded by the next compaction (their quantizer was trained in
        the former space); whitening is refitted on first use."""
        built = (self.model, self.catalog.meta("preprocess") or "")
        if self.model is None:
            raise ReferenceIndexError("an empty index has no descriptor space to upgrade")
        if (translation.source_model, translation.source_preprocess) != built:
            raise ModelMismatchError(
                f"the translation starts from {translation.source_model!r} "
                f"({translation.source_preprocess}), not this index's {built[0]!r} ({built[1]})"
            )
        if self.translated(crops=True):
            raise ReferenceIndexError(
                f"index {self.root} is still upgrading from {self.translation().source_model!r}:"
                " backfill it first (copyspan index backfill)"
            )
        with compaction_lock(self.root, wait=True), self.write_lock():
            refs = self.catalog.references()
            with self.change() as written:
                for ref in refs:
                    features = translation.translate(self.features(ref))
                    self.catalog.delete_reference(ref)
                    written.append(self._add_locked(features, ref.sha256, ref, ref.model))
                for key, value in (
                    ("model", translation.target_model),
                    ("preprocess", translation.target_preprocess),
                    ("dim", str(translation.matrix.shape[1])),
                    ("translation", json.dumps(translation.header())),
                ):
                    self.catalog.set_meta(key, value)
                self.catalog.db.execute("DELETE FROM meta WHERE key = 'training'")
                atomic.write_npz(self.root / "translation.npz", **translation.arrays())
                written.append(self.root / "translation.npz")
            self._forget(refs)
            (self.root / "whitening.npz").unlink(missing_ok=True)
            background = self.background()
            if background is not None:
                stored = atomic.read_npz(self.root / "background.npz")
                stored["embeddings"] = translation.apply(background, translation.scale)
                atomic.write_npz(self.root / "background.npz", **stored)
        self._translation = (None, None)
        log.warning("upgraded %s: %s -> %s, %d references translated", self.root,
                    translation.source_model, translation.target_model, len(refs))  # fmt: skip
        return {
            "translated": len(refs),
            "coded_segments": sum(s.coded for s in self.catalog.segments()),
        }

    def backfill(self, features: VideoFeatures, sha256: str) -> str:
        """Replace a translated reference (and its crops) by its native descriptors, in one
        committed change: from then on it is searched and aligned natively. Returns
        ``backfilled``, or ``native`` when it was done already."""
        built = self.catalog.meta("preprocess")
        if features.model != self.model or features.preprocess not in ("", built):
            raise ModelMismatchError(
                f"backfill needs descriptors of the index's model {self.model!r}, not "
                f"{features.model!r}"
            )
        with self.write_lock():
            ref = self.get(features.video_id)
            if ref is None:
                raise UnknownReferenceError(f"not in the index: {features.video_id}")
            if ref.model == self.model:
                return "native"
            with self.change() as written:
                removed = self._remove_locked(ref)
                written.append(self._add_locked(features, sha256, ref))
                moved = int(self.catalog.meta("backfilled_frames") or 0) + len(features)
                self.catalog.set_meta("backfilled_frames", str(moved))  # whitening refits
        self._forget(removed)
        return "backfilled"

    def retire_translation(self) -> bool:
        """Once no reference is translated any more, the former model's queries are no longer
        accepted and the translation is deleted. Returns whether it was retired."""
        with self.write_lock():
            if self.translation() is None or self.translated(crops=True):
                return False
            with self.change():
                record = self.catalog.meta_json("translation") or {}
                record["retired_at"] = now()
                self.catalog.set_meta("translation", json.dumps(record))
            (self.root / "translation.npz").unlink(missing_ok=True)
        self._translation = (None, None)
        return True

    def upgrade_state(self) -> dict | None:
        """The last upgrade (``index info``): its fit and how far the backfill is."""
        record = self.catalog.meta_json("translation")
        if record is None:
            return None
        translated = self.translated()
        return {
            **record,
            "translated": len(translated),
            "native": len(self.references()) - len(translated),
            "retired": self.translation() is None,
        }

    # ---- banks (pipeline/index/banks.py) ---------------------------------------------------

    def banks(self) -> list[Bank]:
        return self.catalog.banks()

    def bank(self, name: str) -> Bank | None:
        return self.catalog.bank(name)

    def require_bank(self, name: str) -> Bank:
        bank = self.catalog.bank(check_name(name))
        if bank is None:
            raise BankError(f"no bank {name!r} (copyspan bank create {name} --index ...)")
        return bank

    def create_bank(self, bank: Bank) -> Bank:
        with self.write_lock(), self.change():
            if self.catalog.bank(bank.name) is not None:
                raise BankError(f"bank {bank.name!r} already exists")
            self.catalog.put_bank(dataclasses.replace(bank, created_at=now()))
        return self.require_bank(bank.name)

    def set_bank(self, name: str, **changes) -> Bank:
        """Change a bank's action, thresholds or enabled flag (a threshold set to None goes back
        to the configured policy's)."""
        with self.write_lock(), self.change():
            bank = dataclasses.replace(self.require_bank(name), **changes)
            self.catalog.put_bank(bank)
        return bank

    def remove_bank(self, name: str, with_references: bool = False) -> list[str]:
        """Delete a bank; refused while it holds references unless ``with_references``, which
        removes them in the same change. The default bank cannot be removed. Returns the ids
        of the references removed."""
        self.require_bank(name)
        if name == DEFAULT_BANK:
            raise BankError("the default bank cannot be removed")
        with self.write_lock():
            refs = [r for r in self.catalog.references() if r.bank == name]
            parents = [r.id for r in refs if crop_parent(r.id) is None]
            if refs and not with_references:
                raise BankError(
                    f"bank {name!r} holds {len(parents)} reference(s): remove them first, or "
                    "pass --with-references to remove them with it"
                )
            with self.change():
                for ref in refs:
                    self.catalog.delete_reference(ref)
                self.catalog.delete_bank(name)
        self._forget(refs)
        return parents

    def bank_of(self, num: int) -> str | None:
        """The bank of reference ``num`` (None once removed), read once per generation."""
        generation = self.generation
        if self._banks_of[0] != generation:
            self._banks_of = (generation, self.catalog.banks_of())
        return self._banks_of[1].get(num)

    def scope(self, banks: list[str] | None = None) -> frozenset[str] | None:
        """The banks a query searches: ``banks`` (every one, when None) less the disabled ones;
        None when that is every bank (nothing to filter). Raises ``BankError`` for an unknown
        bank."""
        known = {b.name: b for b in self.banks()}
        for name in banks or ():
            if name not in known:
                raise BankError(f"no bank {name!r}")
        wanted = set(banks) if banks is not None else set(known)
        searched = frozenset(n for n in wanted if known[n].enabled)
        return None if searched == set(known) else searched

    # ---- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if (self.root / ".dirty").exists():  # the last writer died mid-change
                    self.repair()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def storage_errors(self) -> Iterator[None]:
        """A full disk becomes ``StorageFullError`` (transient: free space, run it again)."""
        try:
            yield
        except (OSError, sqlite3.OperationalError) as exc:
            if _disk_full(exc):
                raise StorageFullError(
                    f"no space left on the device of {self.root} ({exc}): nothing of this "
                    "change was committed; free space and run it again"
                ) from exc
            raise

    @contextlib.contextmanager
    def change(self) -> Iterator[list[Path]]:
        """One catalog transaction. Yields a list for the files the change writes: they are
        deleted again if it does not commit."""
        written: list[Path] = []
        marker = self.root / ".dirty"
        with self.storage_errors():
            try:
                marker.touch()
                self.catalog.begin()
                yield written
                self.catalog.commit()
            except BaseException:
                self.catalog.rollback()
                for path in written:
                    path.unlink(missing_ok=True)
                raise
        marker.unlink(missing_ok=True)

    def repair(self) -> list[str]:
        """Delete what a writer that died (or hit a full disk) left behind: temporary files,
        descriptor and segment files the catalog does not name. Returns their names."""
        live = {r.num for r in self.catalog.references()}
        files = {s.file for s in self.catalog.segments() if s.file}
        files |= {postings_path(Path(f)).name for f in files}  # their soundtrack hashes
        stale = [p for p in self.root.rglob(".*.tmp")]
        for path in (self.root / "vectors").glob("*.npz"):
            if not path.stem.isdigit() or int(path.stem) not in live:
                stale.append(path)
        stale += [p for p in (self.root / "segments").iterdir() if p.name not in files]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            log.warning("repaired %s: removed %d leftover file(s)", self.root, len(stale))
        (self.root / ".dirty").unlink(missing_ok=True)
        return [p.name for p in stale]

    def plan_add(
        self, video_id: str, sha256: str, replace: bool = False, bank: str = DEFAULT_BANK
    ) -> str:
        """What adding this content under this id to ``bank`` would do, without decoding
        anything: ``add``, ``replace``, ``unchanged`` (same id, same content) or ``duplicate``
        (the bank already holds the content under another id; another bank may hold it too).
        Raises ``IdConflictError`` (ids are unique across banks) or ``BankError``."""
        self.require_bank(bank)
        if crop_parent(video_id) is not None:
            raise IdConflictError(
                f"reference id {video_id!r}: ids ending in {CROP_MARK}<number> name the crops "
                "of a reference (views.reference_grid); rename the file"
            )
        existing = self.get(video_id)
        if existing is not None and existing.bank != bank:
            raise IdConflictError(
                f"reference id {video_id!r} is held by another bank; choose another id"
            )
        if existing is not None:
            if existing.sha256 == sha256:
                return "unchanged"
            if not replace:
                raise IdConflictError(
                    f"reference id {video_id!r} already holds different content "
                    f"({existing.path}); pass --replace to replace it"
                )
            return "replace"
        if self.catalog.by_sha256(sha256, bank) is not None:
            return "duplicate"
        return "add"

    def add(
        self,
        items: list[tuple[VideoFeatures, str]],
        replace: bool = False,
        bank: str = DEFAULT_BANK,
    ) -> list[str]:
        """Add ``(features, sha256)`` pairs to ``bank`` in one transaction; returns each item's
        outcome. Costs the same whatever the catalog's size: nothing stored is rewritten."""
        if not items:
            return []
        removed: list[Reference] = []
        with self.write_lock(), self.change() as written:
            outcomes = []
            for described, sha256 in items:
                features = self.as_indexed(described)  # the former model's: translated
                model = described.model if features is not described else None
                outcome = self.plan_add(features.video_id, sha256, replace, bank)
                outcomes.append(outcome)
                if outcome in ("unchanged", "duplicate"):
                    continue
                if outcome == "replace":
                    removed += self._remove_locked(self.get(features.video_id))
                written.append(self._add_locked(features, sha256, described_by=model, bank=bank))
        self._forget(removed)
        return outcomes

    def _add_locked(
        self,
        features: VideoFeatures,
        sha256: str,
        former: Reference | None = None,
        described_by: str | None = None,
        bank: str = DEFAULT_BANK,
    ) -> Path:
        """Insert ``features`` into ``bank`` (uncommitted). ``former``: the row it replaces in
        an upgrade or a backfill, whose path, time added and bank it keeps; ``described_by``:
        the model that described a translated reference (its model until it is backfilled)."""
        if self.model is None:
            self.catalog.set_meta("model", features.model)
            self.catalog.set_meta("dim", str(features.embeddings.shape[1]))
            self.catalog.set_meta("format", str(FORMAT_VERSION))
            self.catalog.set_meta("shards", str(self.config.shards))
        if features.preprocess and self.catalog.meta("preprocess") is None:
            self.catalog.set_meta("preprocess", features.preprocess)
        if features.audio is not None and self.catalog.meta("audio_fingerprint") is None:
            self.catalog.set_meta("audio_fingerprint", FINGERPRINT_ID)
        segment = self.catalog.open_segment(self.shards, self.config.segment_vectors)
        ref = Reference(
            num=0,
            id=features.video_id,
            path=str(Path(features.path).resolve()) if features.path else "",
            sha256=sha256,
            duration=features.duration,
            fps=features.fps,
            frames=len(features),
            model=features.model,
            added_at=now(),
            segment=segment,
            bank=bank,
        )
        if former is not None:
            ref = dataclasses.replace(
                ref, path=former.path, added_at=former.added_at, bank=former.bank
            )
        if described_by is not None:
            ref = dataclasses.replace(ref, model=described_by)
        num = self.catalog.insert_reference(ref, video_descriptor(features))
        path = write_vectors(self.root, num, features)
        log.info("indexed %s (%d frames) as #%d", features.video_id, len(features), num)
        for k, crop in enumerate(features.crops):  # each a reference of its own (records.py)
            named = dataclasses.replace(crop, video_id=crop_id(features.video_id, k))
            self._add_locked(named, f"{sha256}{CROP_MARK}{k}", former, described_by, bank)
        return path

    def remove(self, video_ids: list[str], bank: str | None = None) -> list[str]:
        """Remove references by id (only those of ``bank``, when given); raises
        ``UnknownReferenceError`` naming any unknown id."""
        with self.write_lock():
            refs = [self.get(v) for v in video_ids]
            if bank is not None:
                refs = [r if r is not None and r.bank == bank else None for r in refs]
            missing = [v for v, r in zip(video_ids, refs, strict=True) if r is None]
            if missing:
                where = f"bank {bank!r}" if bank is not None else "the index"
                raise UnknownReferenceError(f"not in {where}: {', '.join(missing)}")
            with self.change():
                removed = [each for ref in refs for each in self._remove_locked(ref)]
        self._forget(removed)
        return video_ids

    def _remove_locked(self, ref: Reference | None) -> list[Reference]:
        """``ref`` and its crops removed (uncommitted)."""
        assert ref is not None
        removed = [ref, *self._crops_of(ref.id)]
        for each in removed:
            self.catalog.delete_reference(each)
            log.info("removed %s (#%d)", each.id, each.num)
        return removed

    def _crops_of(self, video_id: str) -> list[Reference]:
        crops = (self.get(crop_id(video_id, k)) for k in range(MAX_CROPS))
        return [crop for crop in crops if crop is not None]

    def _forget(self, removed: list[Reference]) -> None:
        """After the commit: removed references' descriptors are no longer needed (a searcher
        that still holds their frames skips them by their tombstones)."""
        for ref in removed:
            vector_path(self.root, ref.num).unlink(missing_ok=True)
            self.cache.forget(ref.num)

    def _upgrade(self) -> None:
        """Turn a format-1 index (one FAISS file over float32 vectors) into segments: its
        references become one flat segment; the old files go."""
        with self.write_lock():
            if not (self.root / "frames.faiss").exists():
                return
            with self.change():
                seg = self.catalog.insert_segment("flat", 0, 1, sealed=True)
                self.catalog.db.execute("UPDATE videos SET segment = ?", (seg,))
                total = self.catalog.db.execute("SELECT SUM(frames) FROM videos").fetchone()[0]
                self.catalog.db.execute(
                    "UPDATE segments SET vectors = ? WHERE seg = ?", (total or 0, seg)
                )
                for ref in self.catalog.missing_pooled():
                    self.catalog.set_pooled(ref.num, video_descriptor(self.features(ref)))
                self.catalog.set_meta("format", str(FORMAT_VERSION))
                self.catalog.set_meta("shards", "1")
            for name in ("frames.faiss", "videos.faiss", "frames.json"):
                (self.root / name).unlink(missing_ok=True)
        log.warning("upgraded %s to index format %d (segments)", self.root, FORMAT_VERSION)

    # ---- compaction ------------------------------------------------------------------------

    def compaction_due(self) -> bool:
        """Whether a background compaction would change anything worth its cost: the catalog
        outgrew exact search, sealed flat segments wait to be encoded, too many coded segments,
        or tombstones hold a fifth of a coded segment."""
        return plan_compaction(self, full=False).worthwhile

    def compact(
        self, whiten: WhitenConfig | None = None, full: bool = True, wait: bool = True
    ) -> dict:
        """Compact now (pipeline/index/compaction.py); ``wait=False`` raises
        ``CompactionBusy`` instead of waiting for one that is running."""
        return compact(self, whiten, full=full, wait=wait)

    # ---- reading -------------------------------------------------------------------------

    def features(self, ref: Reference) -> VideoFeatures:
        data = self.cache.get(ref.num)
        return VideoFeatures(
            video_id=ref.id,
            path=ref.path,
            duration=ref.duration,
            embeddings=data["embeddings"],  # float16 on disk; the record holds float32
            starts=data["starts"],
            ends=data["ends"],
            model=self.model or ref.model,  # a translated reference's are in the index's space
            fps=ref.fps,
            weights=data.get("weights"),  # absent in indexes written before weights existed
            audio=AudioPrint(data["audio_hashes"], data["audio_times"])
            if "audio_hashes" in data
            else None,
        )

    @property
    def approximate(self) -> bool:
        """Whether frame-search similarities are estimates (from compressed codes)."""
        generation = self.generation
        if self._approximate[0] != generation:  # asked once per committed state
            self._approximate = (generation, self.searcher.approximate)
        return self._approximate[1]

    def similarity_margin(self) -> float:
        """How much lower than the truth an approximate similarity may come out: the 5th
        percentile of the codes' error, measured when they were trained (0 when exact)."""
        if not self.approximate:
            return 0.0
        error = (self.catalog.meta_json("training") or {}).get("similarity_error", {})
        return max(0.0, -float(error.get("p5", 0.0)))

    def search(self, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """kNN over every reference frame: similarities, reference numbers and frame indexes,
        each [N, k]; missing neighbours have reference number -1."""
        if len(self) == 0:
            empty = np.full((len(embeddings), 1), -1, np.int64)
            return np.zeros(empty.shape, np.float32), empty, empty
        sims, ids = self.searcher.search(np.ascontiguousarray(embeddings, np.float32), k)
        nums, frames = split_ids(ids)
        return sims, nums, frames

    def search_audio(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored posting of the query's landmark hashes (pipeline/audio/): query
        positions, reference numbers, reference columns."""
        return self.searcher.search_audio(np.asarray(hashes, np.int32))

    def search_videos(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """kNN over video-level descriptors: similarities and reference numbers, each [M, k];
        missing neighbours have reference number -1."""
        videos = self._video_index()
        if videos.ntotal == 0:
            return np.zeros((len(descriptors), 1), np.float32), np.full((len(descriptors), 1), -1)
        k = max(1, min(k, int(videos.ntotal)))
        return videos.search(np.ascontiguousarray(descriptors, dtype=np.float32), k)

    def _video_index(self) -> faiss.Index:
        """One exact index of every reference's video-level descriptor (one vector a video:
        small beside the frames; not of crops), kept in step with the catalog: appended to as
        references are added, rebuilt when one is removed."""
        generation, count, last = self._videos_state
        current = self.generation
        if self._videos is not None and current == generation:
            return self._videos
        references = len(self)
        nums, pooled = self.catalog.pooled(after=last)
        # Only additions since: append. Anything removed or replaced (a replace, a backfill,
        # an upgrade keeps the count): rebuild, or stale descriptors would stay searchable.
        if self._videos is None or count + len(nums) != references:
            dim = int(self.catalog.meta("dim") or 512)
            self._videos, last, count = faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), 0, 0
            nums, pooled = self.catalog.pooled(after=last)
        if len(nums):
            # A crop is found through its frames; at the video level it would list a reference
            # five times (and crowd others out of a query's video candidates).
            whole = np.array([crop_parent(self.by_num(int(num)).id) is None for num in nums])
            self._videos.add_with_ids(pooled[whole], nums[whole])
            last, count = int(nums[-1]), count + len(nums)
        self._videos_state = (current, count, last)
        return self._videos

    # ---- background footage (generic-frame weights) ---------------------------------------

    def set_background(self, embeddings: np.ndarray, sources: list[str]) -> None:
        """Replace the background set: descriptors of footage that is not a reference (stock
        intros, studio logos, common b-roll). Query frames that resemble it carry less weight."""
        with self.write_lock():
            if self.model is None:
                raise ReferenceIndexError("add references before a background set")
            dim = int(self.catalog.meta("dim") or 0)
            if embeddings.ndim != 2 or embeddings.shape[1] != dim:
                raise ReferenceIndexError(f"background descriptors must be [N, {dim}]")
            atomic.write_npz(
                self.root / "background.npz",
                embeddings=np.ascontiguousarray(embeddings, np.float32),
                sources=np.array(sources, dtype=str),
            )
        self._background_key = None

    def background(self) -> np.ndarray | None:
        """The background descriptors, or None when the index has none."""
        path = self.root / "background.npz"
        if not path.exists():
            return None
        key = path.stat().st_mtime_ns
        if self._background_key != key:
            self._background = atomic.read_npz(path)["embeddings"]
            self._background_key = key
        return self._background

    # ---- whitening -------------------------------------------------------------------------

    def whitening(self, config: WhitenConfig) -> Whitening | None:
        """The whitening fitted on a sample of this index's reference frames: the stored one,
        fitted (and stored) now when there is none or the frame count has changed by more than
        ``refit_change`` since (compaction refreshes it too); None when the index has fewer
        than ``min_frames`` frames."""
        frames = self.totals()[1]
        if frames < config.min_frames:
            return None
        path = self.root / "whitening.npz"

        def stale(fit: Whitening | None) -> bool:
            # Backfilled frames were described again by another model: the catalog mixes two
            # kinds of descriptors, and a whitening fitted before a quarter of them moved lost
            # 0.04 F1 (seed 2); refitted every BACKFILL_REFIT of the frames it stays within 0.02.
            moved = int(self.catalog.meta("backfilled_frames") or 0)
            return (
                fit is None
                or fit.stale(frames, config.refit_change, config.shrinkage)
                or moved > BACKFILL_REFIT * frames
            )

        current = self._read_whitening(path)
        if stale(current):
            try:
                with self.write_lock():
                    current = self._read_whitening(path)  # another process may have refitted
                    if stale(current):
                        current = self._fit_whitening(config)
                        atomic.write_npz(path, **current.arrays())
                        self._whitening_key = None
                        if self.catalog.meta("backfilled_frames"):
                            with self.change():
                                self.catalog.set_meta("backfilled_frames", "0")
            except OSError as exc:  # a read-only index: use the fit without storing it
                log.warning(
                    "cannot store the whitening of %s (%s); refitting per process", path, exc
                )
                current = self._whitening = self._fit_whitening(config)
                self._whitening_key = -1
        return current

    def _read_whitening(self, path: Path) -> Whitening | None:
        if self._whitening_key == -1:  # fitted in memory for an index we cannot write
            return self._whitening
        if not path.exists():
            return None
        key = path.stat().st_mtime_ns
        if self._whitening_key != key:
            try:
                self._whitening = Whitening.from_arrays(atomic.read_npz(path))
            except (OSError, ValueError, KeyError) as exc:  # damaged: fit again
                log.warning("ignoring unreadable %s: %s", path, exc)
                return None
            self._whitening_key = key
        return self._whitening

    def _fit_whitening(self, config: WhitenConfig) -> Whitening:
        # Crops are left out: fitted on them too (nine in ten frames with a 3 x 3 grid), it no
        # longer fitted whole frames and three negatives matched a distractor (hard profile).
        vectors, total = self.sample(config.max_frames, whole_frames=True)
        log.info("fitting whitening on %d of %d reference frames", len(vectors), total)
        # Staleness is judged on the corpus size, not the sample's: a large index would otherwise
        # look changed on every query and be refitted each time.
        return fit_whitening(vectors, config.shrinkage, frames=total)

    def sample(
        self, limit: int, seed: int = 0, whole_frames: bool = False
    ) -> tuple[np.ndarray, int]:
        """At most ``limit`` reference frame descriptors, and the catalog's frame count
        (``whole_frames``: none of the references' crops)."""
        refs = self.references(crops=not whole_frames)
        nums = np.array([r.num for r in refs], np.int64)
        frames = np.array([r.frames for r in refs], np.int64)
        return sample_vectors(self.root, nums, frames, limit, seed)[0], self.totals()[1]
