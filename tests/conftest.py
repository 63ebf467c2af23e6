from __future__ import annotations

import logging
from pathlib import Path

import pytest

from benchmarks import footage
from pipeline.config import Config, load_config


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def clips() -> dict[str, Path]:
    """Real footage (fetched once into .cache/footage)."""
    return footage.clips()


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    return footage.photos()


@pytest.fixture(scope="session")
def tracks() -> dict[str, Path]:
    """Real recorded music by name (Debian hyperrogue-music, fetched once into .cache/footage).
    Some of its tracks repeat whole phrases exactly (hr-domina-*): tests that check a copy's
    offset use others."""
    from benchmarks.sounds import music

    return music()


@pytest.fixture(scope="session")
def ray_session(config):
    """One local Ray for every test that needs one (starting Ray costs seconds and memory)."""
    import ray

    from workers.ray_runtime import init_ray

    init_ray(config)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def detector(config):
    from pipeline.detector import CopyDetector

    return CopyDetector(config)


@pytest.fixture(autouse=True)
def _quiet_faiss_loader():
    logging.getLogger("faiss").setLevel(logging.WARNING)
