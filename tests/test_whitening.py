"""Whitening: the fit, its storage in the index and when the index refits it."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.config import load_config
from pipeline.describe.embed import l2_normalise
from pipeline.index import ReferenceIndex
from pipeline.index.whitening import fit_whitening
from pipeline.records import VideoFeatures

WHITEN = load_config().whiten


def _corpus(n: int, seed: int) -> np.ndarray:
    """Descriptors sharing a strong common direction, as frames of one corpus do."""
    rng = np.random.default_rng(seed)
    shared = np.zeros(512)
    shared[0] = 1.0
    return l2_normalise(
        rng.normal(size=(n, 512)) * 0.02 + shared * (1 + 0.2 * rng.normal(size=(n, 1)))
    )


def test_fit_without_shrinkage_makes_the_covariance_the_identity():
    x = np.random.default_rng(0).normal(size=(4000, 16)) @ np.random.default_rng(1).normal(
        size=(16, 16)
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # descriptors are directions
    w = fit_whitening(x * 1.7, shrinkage=0.0)  # their length does not matter (see apply)
    y = (x - w.mean) @ w.projection
    np.testing.assert_allclose(np.cov(y.T), np.eye(16), atol=0.05)


def test_whitening_removes_what_every_frame_shares():
    x = _corpus(600, 0)
    assert (x[:50] @ x[50:100].T).mean() > 0.7  # unrelated frames look alike raw
    w = fit_whitening(x, WHITEN.shrinkage)
    y = w.apply(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    assert abs((y[:50] @ y[50:100].T).mean()) < 0.1  # ... and not whitened
    assert w.apply(np.zeros((1, 512), np.float32)).shape == (1, 512)


def _features(video_id: str, n: int, seed: int) -> VideoFeatures:
    starts = np.arange(n, dtype=np.float64)
    return VideoFeatures(
        video_id=video_id, path=f"/refs/{video_id}.mp4", duration=float(n),
        embeddings=_corpus(n, seed), starts=starts, ends=starts + 1, model="sscd",
    )  # fmt: skip


def test_index_fits_stores_and_refits_on_material_change(tmp_path):
    config = dataclasses.replace(WHITEN, min_frames=100, refit_change=0.25)
    with ReferenceIndex(tmp_path) as index:
        index.add([(_features("a", 60, 1), "a")])
        assert index.whitening(config) is None  # too few frames to trust a fit
        assert not (tmp_path / "whitening.npz").exists()
        index.add([(_features("b", 60, 2), "b")])
        first = index.whitening(config)
        assert first is not None and first.frames == 120
        assert index.info()["whitening_frames"] == 120
        stamp = (tmp_path / "whitening.npz").stat().st_mtime_ns
        index.add([(_features("c", 20, 3), "c")])  # 140 frames: +17%, not material
        assert index.whitening(config).frames == 120
        assert (tmp_path / "whitening.npz").stat().st_mtime_ns == stamp
        index.add([(_features("d", 60, 4), "d")])  # 200 frames: +67%
        assert index.whitening(config).frames == 200
        index.remove(["d", "c"])  # back to 120: -40%
        assert index.whitening(config).frames == 120
    with ReferenceIndex(tmp_path) as index:  # read back from disk, not refitted
        stamp = (tmp_path / "whitening.npz").stat().st_mtime_ns
        stored = index.whitening(config)
        assert stored.frames == 120 and (tmp_path / "whitening.npz").stat().st_mtime_ns == stamp
        refit = index.whitening(dataclasses.replace(config, shrinkage=0.5))  # other settings
        assert refit.shrinkage == 0.5


def test_fit_samples_large_indexes_and_is_not_refitted_per_query(tmp_path, caplog):
    config = dataclasses.replace(WHITEN, min_frames=50, max_frames=80)
    with ReferenceIndex(tmp_path) as index:
        index.add([(_features("a", 120, 1), "a")])
        with caplog.at_level("INFO", logger="pipeline.index"):
            assert index.whitening(config).frames == 120  # the corpus it stands for
        assert "fitting whitening on 80 of 120" in caplog.text
        stamp = (tmp_path / "whitening.npz").stat().st_mtime_ns
        index.whitening(config)
        assert (tmp_path / "whitening.npz").stat().st_mtime_ns == stamp


def test_damaged_whitening_file_is_refitted(tmp_path):
    config = dataclasses.replace(WHITEN, min_frames=50)
    with ReferenceIndex(tmp_path) as index:
        index.add([(_features("a", 60, 1), "a")])
        (tmp_path / "whitening.npz").write_bytes(b"not an npz")
        assert index.whitening(config).frames == 60
    with ReferenceIndex(tmp_path) as index:  # the refit was stored
        assert index.info()["whitening_frames"] == 60


def test_index_that_cannot_be_written_fits_in_memory(tmp_path, monkeypatch):
    from pipeline import atomic

    config = dataclasses.replace(WHITEN, min_frames=50)
    with ReferenceIndex(tmp_path) as index:
        index.add([(_features("a", 60, 1), "a")])

        def refuse(*args, **kwargs):
            raise PermissionError("read-only file system")

        monkeypatch.setattr(atomic, "write_npz", refuse)
        fitted = index.whitening(config)
        assert fitted is not None and fitted.frames == 60
        assert index.whitening(config) is fitted  # kept for the process, not refitted per query
        assert not (tmp_path / "whitening.npz").exists()


def test_gain_tells_a_corpus_that_whitening_changes_from_one_it_does_not():
    shared = fit_whitening(_corpus(2000, 0), WHITEN.shrinkage)
    isotropic = fit_whitening(
        l2_normalise(np.random.default_rng(0).standard_normal((2000, 512))), WHITEN.shrinkage
    )
    assert shared.gain > 3 * WHITEN.min_gain
    assert isotropic.gain < 1.2 < WHITEN.min_gain


def test_a_query_aligns_on_raw_similarity_when_whitening_changes_little(tmp_path, monkeypatch):
    from pipeline.detector import CopyDetector
    from pipeline.match import pairs as detector_module

    config = load_config(overrides={"whiten": {"min_frames": 50}})
    calls = []
    original = detector_module.whiten
    monkeypatch.setattr(detector_module, "whiten", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(3)
    for name, corpus in (("isotropic", l2_normalise(rng.standard_normal((300, 512)))),
                         ("shared", _corpus(300, 4))):  # fmt: skip
        features = _features("ref", 300, 1)
        features.embeddings = corpus
        with ReferenceIndex(tmp_path / name) as index:
            index.add([(features, name)])
            query = dataclasses.replace(
                features, video_id="q", embeddings=corpus[:40], starts=features.starts[:40],
                ends=features.ends[:40], weights=None,
            )  # fmt: skip
            calls.clear()
            CopyDetector(config, embedder=object()).query_features(query, index)
            assert bool(calls) == (name == "shared")
