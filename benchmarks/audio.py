"""The soundtrack benchmark: real music and speech on real footage, copied where the picture
cannot show it.

    python -m benchmarks.audio --seed 2          # builds data/audio-seed2 if missing

References: 8 real clips (benchmarks/footage.py), each looped to 60 s under 60 s of a real
recorded track (Debian ``hyperrogue-music``, benchmarks/sounds.py), and 2 references that are
only sound (an MP3 of a track). Queries (12-25 s of copy between 0-4 s of other sound):

* ``inset``: the reference's picture in a small window (10% of the frame) over other footage,
  its soundtrack kept;
* ``other_pictures``: the soundtrack under unrelated footage;
* ``voiceover``: the same, with synthesised speech (``espeak-ng``) mixed in at equal loudness;
* ``lowbitrate_mono``: the soundtrack as mono 22 kHz AAC at 24 kb/s or Opus at 16 kb/s;
* ``noise_zoom``: the picture zoomed to half of each side, pink noise 6-12 dB under the music;
* ``audio_only``: an MP3 of the copied stretch, no picture (references that are sound only
  included).

Negatives (unrelated footage; any match is a false alarm): other music, speech only, digital
silence, mains hum, applause-like noise, no audio stream, and an MP3 of other music. The
unrelated footage is held out of the references (and so are the natural copies of their clips).

Measured in one run: segment F1, pair recall per family, false-alarm pairs; the same queries
with ``audio.enabled: false`` (the picture alone) for the cost of the sound and what it adds;
hashes and catalog bytes per hour of reference sound. Tables go to benchmarks/results/audio.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import time
from pathlib import Path

import numpy as np

from benchmarks.edits import CANVAS, run_ffmpeg
from benchmarks.footage import clips, extra_clips
from benchmarks.run import publish, section_header
from benchmarks.sounds import RATE, music, read_pcm, rms, speech, write_wav
from pipeline.config import Config, load_config
from pipeline.detector import CopyDetector
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.metric import Box, evaluate, read_segments

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
REFERENCE_PICTURES = ("bigbuckbunny", "bikes", "box", "cup", "tree", "vtest", "carphone_pristine",
                      "cityCC0")  # fmt: skip
OTHER_PICTURES = ("Megamind", "Megamind_bugy", "world", "world_cut", "titlecard")
REFERENCE_S = 60.0
SIZE = CANVAS  # the picture size of the main benchmark: its cost per hour is comparable
POSITIVE = ("inset", "other_pictures", "voiceover", "lowbitrate_mono", "noise_zoom", "audio_only")
NEGATIVE = ("other_music", "speech_only", "silence", "hum", "applause", "no_audio",
            "audio_only_other")  # fmt: skip
LINES = (
    "Welcome back to the channel. Today we are looking at the best moments of the week, "
    "and there is a lot to talk about, so let us get straight into it.",
    "This part always makes me laugh. Watch closely what happens next, because nobody "
    "expected it, not even the people who were there that day.",
    "If you enjoyed this, remember to subscribe. We upload every Tuesday and Friday, and "
    "the comments are open for your suggestions for the next episode.",
)


@dataclasses.dataclass
class Source:
    name: str
    picture: Path | None  # None: a reference that is only sound
    track: Path
    track_start: float


def _picture_filter() -> str:
    w, h = SIZE
    return (f"scale={w}:{h}:force_original_aspect_ratio=decrease,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,fps=25,format=yuv420p")  # fmt: skip


def _track_start(track: Path) -> float:
    import av

    with av.open(str(track)) as container:
        length = container.duration / 1e6 if container.duration else REFERENCE_S
    return max(0.0, min(20.0, length - REFERENCE_S))


def build(seed: int, out: Path) -> dict:
    """Render the dataset into ``out`` (references/, queries/, gt.csv, dataset.json)."""
    rng = random.Random(seed)
    tracks = list(music().values())
    rng.shuffle(tracks)
    pictures = {**clips(), **extra_clips()}
    refs_dir, queries_dir, work = out / "references", out / "queries", out / "work"
    for folder in (refs_dir, queries_dir, work):
        folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for i, name in enumerate(REFERENCE_PICTURES):
        sources.append(Source(f"av{i}_{name}", pictures[name], tracks[i], 0.0))
    for i in range(2):
        track = tracks[len(REFERENCE_PICTURES) + i]
        sources.append(Source(f"song{i}_{track.stem}", None, track, 0.0))
    others = tracks[len(sources) :]
    for source in sources:
        source.track_start = _track_start(source.track)
        sound = read_pcm(source.track, source.track_start, REFERENCE_S)
        wav = write_wav(work / f"{source.name}.wav", sound)
        if source.picture is None:
            run_ffmpeg(["-i", str(wav), "-c:a", "libmp3lame", "-b:a", "128k",
                        str(refs_dir / f"{source.name}.mp3")])  # fmt: skip
            continue
        run_ffmpeg(["-stream_loop", "-1", "-i", str(source.picture), "-i", str(wav),
                    "-map", "0:v", "-map", "1:a", "-t", f"{REFERENCE_S}", "-vf", _picture_filter(),
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "26",
                    "-c:a", "aac", "-b:a", "128k", str(refs_dir / f"{source.name}.mp4")],
                   )  # fmt: skip
    voices = [speech(line, work / f"voice{i}.wav") for i, line in enumerate(LINES)]
    truth: list[dict] = []
    queries: list[dict] = []
    av_sources = [s for s in sources if s.picture is not None]
    for family in POSITIVE:
        chosen = sources if family == "audio_only" else av_sources
        for source in chosen:
            queries.append(_positive(family, source, rng, others, voices, pictures, refs_dir,
                                     queries_dir, work, truth))  # fmt: skip
    for family in NEGATIVE:
        for k in range(3):
            queries.append(_negative(family, k, rng, others, voices, pictures, queries_dir, work))
    with open(out / "gt.csv", "w") as handle:
        handle.write(
            "query_id,reference_id,query_start,query_end,reference_start,reference_end,edit\n"
        )
        for t in truth:
            handle.write(f"{t['query']},{t['reference']},{t['q0']:.3f},{t['q1']:.3f},"
                         f"{t['r0']:.3f},{t['r1']:.3f},{t['edit']}\n")  # fmt: skip
    meta = {"seed": seed, "references": [s.name for s in sources], "queries": queries}
    (out / "dataset.json").write_text(json.dumps(meta, indent=1))
    return meta


def _surround(
    rng: random.Random, others: list[Path], voices: list[Path], seconds: float
) -> np.ndarray:
    """Sound that is not a copy, around the copied stretch: other music, speech or room tone."""
    if seconds <= 0:
        return np.zeros(0, np.float32)
    kind = rng.choice(("music", "speech", "room"))
    if kind == "music":
        return (
            0.5 * read_pcm(rng.choice(others), rng.uniform(5, 60), seconds)[: round(seconds * RATE)]
        )
    if kind == "speech":
        voice = read_pcm(rng.choice(voices))
        return np.resize(voice, round(seconds * RATE)) * 0.8
    return _pink(round(seconds * RATE), rng) * 0.01


def _pink(n: int, rng: random.Random) -> np.ndarray:
    white = np.random.default_rng(rng.randrange(1 << 30)).standard_normal(n)
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(1, np.arange(len(spectrum))))
    pink = np.fft.irfft(spectrum, n)
    return (pink / (np.abs(pink).max() + 1e-9)).astype(np.float32)


def _positive(
    family, source, rng, others, voices, pictures, refs_dir, queries_dir, work, truth
) -> dict:
    length = round(rng.uniform(12, 25), 2)
    r0 = round(rng.uniform(0, REFERENCE_S - length - 1), 2)
    lead = round(rng.uniform(0, 4), 2) if family != "audio_only" else round(rng.uniform(0, 2), 2)
    tail = round(rng.uniform(0, 4), 2)
    name = f"{family}_{source.name}"
    ref_file = next(refs_dir.glob(f"{source.name}.*"))
    copied = read_pcm(ref_file, r0, length)[: round(length * RATE)]
    copied = copied * 10 ** (rng.uniform(-6, 6) / 20)
    if family == "voiceover":
        voice = np.resize(read_pcm(rng.choice(voices)), len(copied))
        copied = copied + voice * (rms(copied) / max(rms(voice), 1e-9))
    if family == "noise_zoom":
        snr_db = rng.uniform(6, 12)
        noise = _pink(len(copied), rng)
        copied = copied + noise * (rms(copied) / max(rms(noise), 1e-9)) * 10 ** (-snr_db / 20)
    sound = np.concatenate([_surround(rng, others, voices, lead), copied,
                            _surround(rng, others, voices, tail)])  # fmt: skip
    sound *= min(1.0, 0.95 / max(float(np.abs(sound).max()), 1e-9))
    wav = write_wav(work / f"{name}.wav", sound)
    total = len(sound) / RATE
    audio_args = ["-c:a", "aac", "-b:a", "96k"]
    if family == "lowbitrate_mono":
        aac = rng.random() < 0.5
        codec = (
            ["-ar", "22050", "-c:a", "aac", "-b:a", "24k"]
            if aac
            else ["-c:a", "libopus", "-b:a", "16k"]
        )
        audio_args = ["-ac", "1", *codec]
    if family == "voiceover" or family == "noise_zoom":
        audio_args = ["-c:a", "aac", "-b:a", "64k"]
    if family == "audio_only":
        target = _mp3(wav, queries_dir / f"{name}.mp3")
    else:
        target = queries_dir / f"{name}.{'mkv' if 'libopus' in audio_args else 'mp4'}"
        background = pictures[rng.choice(OTHER_PICTURES)]
        inputs = ["-stream_loop", "-1", "-i", str(background), "-i", str(wav)]
        fit = _picture_filter()
        if family in ("inset", "noise_zoom"):
            inputs += ["-ss", f"{r0:.3f}", "-itsoffset", f"{lead:.3f}", "-i", str(ref_file)]
            w, h = SIZE
            window = (f"[2:v]scale={round(w * 0.32) // 2 * 2}:{round(h * 0.32) // 2 * 2}[pic]"
                      if family == "inset" else
                      f"[2:v]crop=iw/2:ih/2:iw/4:ih/4,scale={w}:{h}[pic]")  # fmt: skip
            place = "main_w-overlay_w-16:16" if family == "inset" else "0:0"
            during = f"between(t,{lead:.3f},{lead + length:.3f})"
            graph = (f"[0:v]{fit}[bg];{window};[bg][pic]overlay={place}:"
                     f"enable='{during}':eof_action=pass[v]")  # fmt: skip
        else:
            graph = f"[0:v]{fit}[v]"
        run_ffmpeg([*inputs, "-filter_complex", graph, "-map", "[v]", "-map", "1:a",
                    "-t", f"{total:.3f}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "26",
                    *audio_args, str(target)])  # fmt: skip
    truth.append({"query": target.stem, "reference": source.name, "q0": lead, "q1": lead + length,
                  "r0": r0, "r1": r0 + length, "edit": family})  # fmt: skip
    return {"query": target.stem, "family": family, "reference": source.name, "seconds": total}


def _negative(family, k, rng, others, voices, pictures, queries_dir, work) -> dict:
    seconds = round(rng.uniform(15, 25), 2)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    if family in ("other_music", "audio_only_other"):
        sound = read_pcm(others[k % len(others)], rng.uniform(10, 60), seconds)[:n]
    elif family == "speech_only":
        sound = np.resize(read_pcm(voices[k % len(voices)]), n)
    elif family == "hum":
        mains = rng.choice((50.0, 60.0))
        sound = sum(0.2 / h * np.sin(2 * np.pi * mains * h * t) for h in range(1, 8))
        sound = sound + 0.005 * _pink(n, rng)
    elif family == "applause":
        sound = _applause(n, rng)
    else:  # silence, no_audio
        sound = np.zeros(n, np.float32)
    name = f"neg_{family}_{k}"
    wav = write_wav(work / f"{name}.wav", np.asarray(sound, np.float32))
    if family == "audio_only_other":
        target = _mp3(wav, queries_dir / f"{name}.mp3")
    else:
        target = queries_dir / f"{name}.mp4"
        background = pictures[rng.choice(OTHER_PICTURES)]
        sound_args = (
            ["-an"] if family == "no_audio" else ["-map", "1:a", "-c:a", "aac", "-b:a", "96k"]
        )
        run_ffmpeg(["-stream_loop", "-1", "-i", str(background), "-i", str(wav),
                    "-filter_complex", f"[0:v]{_picture_filter()}[v]", "-map", "[v]", *sound_args,
                    "-t", f"{seconds:.3f}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "26",
                    str(target)])  # fmt: skip
    return {"query": target.stem, "family": family, "reference": None, "seconds": seconds}


def _mp3(wav: Path, target: Path) -> Path:
    """A query that is only sound: an MP3 at 64 kb/s."""
    run_ffmpeg(["-i", str(wav), "-c:a", "libmp3lame", "-b:a", "64k", str(target)])
    return target


def _applause(n: int, rng: random.Random) -> np.ndarray:
    """Many hands clapping: short decaying noise bursts at random, ~40 per second."""
    gen = np.random.default_rng(rng.randrange(1 << 30))
    out = np.zeros(n, np.float32)
    burst = round(0.02 * RATE)
    envelope = np.exp(-np.arange(burst) / (0.004 * RATE)).astype(np.float32)
    for start in gen.integers(0, max(1, n - burst), size=int(40 * n / RATE)):
        out[start : start + burst] += (
            envelope * gen.standard_normal(burst).astype(np.float32) * gen.uniform(0.05, 0.3)
        )
    return out


# ---- the run ------------------------------------------------------------------------------


def run(data: Path, config: Config, work: Path) -> dict:
    """Index the references, query every query with the sound and without; the figures."""
    detector = CopyDetector(config)
    index = ReferenceIndex(work / "index")
    refs = sorted((data / "references").iterdir())
    described = [(detector.describe(p, views=False), file_sha256(p)) for p in refs]
    index.add(described)
    sound_s = sum(f.audio.seconds for f, _ in described if f.audio is not None)
    hashes = sum(len(f.audio) for f, _ in described if f.audio is not None)
    picture_only = dataclasses.replace(
        config, audio=dataclasses.replace(config.audio, enabled=False)
    )
    meta = json.loads((data / "dataset.json").read_text())
    out: dict = {"hashes_per_s": hashes / sound_s, "reference_sound_s": sound_s, "runs": {}}
    queries = sorted((data / "queries").iterdir())
    # Both passes twice, alternating: each label's cost is its faster pass (a shared machine's
    # noise only ever adds time); the figures of accuracy are the same in every pass.
    for _ in range(2):
        for label, variant in (("with sound", config), ("picture only", picture_only)):
            run = _query_all(CopyDetector(variant, embedder=detector.embedder), index, queries)
            best = out["runs"].get(label)
            if best is None or sum(run["wall"].values()) < sum(best["wall"].values()):
                out["runs"][label] = run
    out["modalities"] = out["runs"]["with sound"].pop("modalities")
    out["runs"]["picture only"].pop("modalities")
    index.close()
    out["families"] = {q["query"]: q["family"] for q in meta["queries"]}
    return out


def _query_all(runner: CopyDetector, index: ReferenceIndex, queries: list[Path]) -> dict:
    boxes: list[Box] = []
    errors: dict[str, str] = {}
    seconds = {"video": 0.0, "audio_only": 0.0}
    wall = {"video": 0.0, "audio_only": 0.0}
    sound_stages = 0.0  # decode + fingerprint + search of the sound, in video queries
    modalities: dict[str, int] = {}
    for path in queries:
        kind = "audio_only" if path.suffix == ".mp3" else "video"
        started = time.perf_counter()
        try:
            result = runner.query(path, index)
        except Exception as exc:
            errors[path.stem] = str(exc)  # a failed query is a figure, not a stop
            continue
        wall[kind] += time.perf_counter() - started
        seconds[kind] += result.duration or 0.0
        if kind == "video":
            sound_stages += sum(result.timings.get(k, 0.0) for k in ("audio", "audio_search"))
        boxes.extend(result.segment_boxes())
        for segment in (s for m in result.matches for s in m.segments):
            modalities[segment.modality] = modalities.get(segment.modality, 0) + 1
    return {"boxes": boxes, "errors": errors, "seconds": seconds, "wall": wall,
            "sound_stages": sound_stages, "modalities": modalities}  # fmt: skip


# ---- the peer: Chromaprint ----------------------------------------------------------------

CHROMAPRINT_ITEM_S = 4096 / 3 / 11025  # seconds per item of a raw Chromaprint fingerprint
CHROMAPRINT_WINDOW = 64  # items (7.9 s) of the query compared at a time
CHROMAPRINT_MAX_BER = 0.35  # bit error rate under which a window is a copy


def _fpcalc() -> str | None:
    """Debian ``libchromaprint-tools``' fpcalc, installed with apt-get when missing."""
    import shutil
    import subprocess

    if shutil.which("fpcalc") is None:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "libchromaprint-tools"],
                       capture_output=True)  # fmt: skip
    return shutil.which("fpcalc")


def _chromaprint(fpcalc: str, path: Path) -> np.ndarray:
    import subprocess

    out = subprocess.run([fpcalc, "-raw", "-length", "3600", str(path)],
                         capture_output=True, text=True).stdout  # fmt: skip
    line = next((x for x in out.splitlines() if x.startswith("FINGERPRINT=")), "FINGERPRINT=")
    values = [int(v) for v in line.split("=", 1)[1].split(",") if v]
    return np.array(values, np.int64).astype(np.uint32)


def run_chromaprint(data: Path) -> dict | None:
    """Chromaprint as the matcher: each 7.9 s window of a query slid over each reference; a
    window under ``CHROMAPRINT_MAX_BER`` bits wrong is a copy, its span the windows that are."""
    fpcalc = _fpcalc()
    if fpcalc is None:
        return None
    refs = {p.stem: _chromaprint(fpcalc, p) for p in sorted((data / "references").iterdir())}
    started = time.perf_counter()
    boxes: list[Box] = []
    for path in sorted((data / "queries").iterdir()):
        query = _chromaprint(fpcalc, path)
        for name, ref in refs.items():
            hits = []
            for lo in range(
                0, max(1, len(query) - CHROMAPRINT_WINDOW + 1), CHROMAPRINT_WINDOW // 2
            ):
                window = query[lo : lo + CHROMAPRINT_WINDOW]
                if len(window) < CHROMAPRINT_WINDOW or len(ref) < len(window):
                    continue
                shifts = np.lib.stride_tricks.sliding_window_view(ref, len(window))
                errors = np.unpackbits((shifts ^ window).view(np.uint8), axis=1).mean(axis=1)
                best = int(np.argmin(errors))
                if errors[best] < CHROMAPRINT_MAX_BER:
                    hits.append((lo, best))
            if hits:
                q0, q1 = hits[0][0], hits[-1][0] + CHROMAPRINT_WINDOW
                r0 = hits[0][1]
                item = CHROMAPRINT_ITEM_S
                boxes.append(Box(path.stem, name, q0 * item, q1 * item, r0 * item,
                                 (r0 + q1 - q0) * item))  # fmt: skip
    return {"boxes": boxes, "seconds": time.perf_counter() - started}


def _score(truth: list[Box], boxes: list[Box], families: dict[str, str]) -> dict:
    figures = evaluate(truth, boxes)
    negatives = {q for q, f in families.items() if f in NEGATIVE}
    false_alarms: dict[str, int] = {}
    truth_pairs = {b.pair for b in truth}
    for pair in {b.pair for b in boxes} - truth_pairs:
        family = families.get(pair[0], "?")
        false_alarms[family] = false_alarms.get(family, 0) + 1
    figures["false_alarms_by_family"] = false_alarms
    figures["negative_queries"] = len(negatives)
    return figures


def _span_errors(truth: list[Box], boxes: list[Box]) -> dict[str, float]:
    """Median distance of the found span's ends from the truth, per axis (pairs found)."""
    by_pair = {b.pair: b for b in truth}
    starts, ends = [], []
    for box in boxes:
        gt = by_pair.get(box.pair)
        if gt is None:
            continue
        starts += [abs(box.q0 - gt.q0), abs(box.r0 - gt.r0)]
        ends += [abs(box.q1 - gt.q1), abs(box.r1 - gt.r1)]
    return {"start": float(np.median(starts)) if starts else 0.0,
            "end": float(np.median(ends)) if ends else 0.0}  # fmt: skip


def render(tag: str, command: str, figures: dict, scored: dict[str, dict]) -> str:
    sound, picture = scored["with sound"], scored["picture only"]
    lines = section_header(tag, command)
    lines += [
        "",
        "| | F1 | VSC µAP | pair recall (copies) | false-alarm pairs | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, s in scored.items():
        run = figures["runs"][label]
        lines.append(f"| {label} | {s['f1']:.3f} | {s['segment_ap']:.3f} | {s['pair_recall']:.3f} "
                     f"| {s['false_alarm_pairs']} | {len(run['errors'])} |")  # fmt: skip
    peer = scored.get("Chromaprint (peer)")
    lines += ["", "Per family: pair recall and F1 with the sound, for the picture alone, and for "
              "Chromaprint; false-alarm pairs in the same order:", "",
              "| family | pairs | with sound | picture only | Chromaprint | false alarms |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip

    def cell(figures: dict | None, family: str) -> str:
        e = (figures or {}).get("per_edit", {}).get(family)
        return f"{e['pair_recall']:.2f} / {e['f1']:.3f}" if e else ""

    for family in (*POSITIVE, *NEGATIVE):
        runs = [sound, picture, peer]
        alarms = " / ".join(str(r["false_alarms_by_family"].get(family, 0)) for r in runs if r)
        pairs = sound["per_edit"].get(family, {}).get("pairs", 0)
        label = family if family in POSITIVE else f"{family} (negatives)"
        lines.append(f"| {label} | {pairs} | {cell(sound, family)} | {cell(picture, family)} | "
                     f"{cell(peer, family)} | {alarms} |")  # fmt: skip
    with_s, without = figures["runs"]["with sound"], figures["runs"]["picture only"]
    per_hour = {label: 3600 * r["wall"]["video"] / max(r["seconds"]["video"], 1e-9)
                for label, r in (("with", with_s), ("without", without))}  # fmt: skip
    audio_only = 3600 * with_s["wall"]["audio_only"] / max(with_s["seconds"]["audio_only"], 1e-9)
    sound_share = 3600 * with_s["sound_stages"] / max(with_s["seconds"]["video"], 1e-9)
    hashes = figures["hashes_per_s"]
    errors = figures["span_errors"]
    lines += [
        "",
        f"Cost per hour of query video (describe + match, same run): {per_hour['with']:.0f} s with "
        f"the sound against {per_hour['without']:.0f} s for the picture alone "
        f"({100 * (per_hour['with'] / per_hour['without'] - 1):+.1f}%); the sound's own stages "
        f"(decode, fingerprint, search) took {sound_share:.1f} s per hour: "
        f"**{100 * sound_share / per_hour['without']:.1f}%** "
        f"of the picture's cost. Queries that are only sound: {audio_only:.1f} s per hour.  ",
        f"Reference sound: {hashes:.0f} hashes per second: {hashes * 3600 * 8 / 1e6:.1f} MB per "
        f"hour in the descriptor files (hash and time, int32) and {hashes * 3600 * 12 / 1e6:.1f} "
        f"MB per hour in a coded segment's postings (hash, reference, time).  ",
        f"Segments reported (with sound): {figures.get('modalities', {})}; median distance of "
        f"a found span's ends from the truth: start {errors['start']:.2f} s, end "
        f"{errors['end']:.2f} s (both axes).",
        f"<!-- /bench:{tag} -->",
    ]
    return "\n".join(lines)


# ---- a long upload: memory with and without the sound ----------------------------------------


def long_upload(hours: float, data: Path, out: Path) -> dict:
    """One upload of ``hours`` (held-out footage under other music, a reference's soundtrack
    copied for 60 s in its middle), queried by ``copyspan query`` in a fresh process with the
    sound and without: peak RSS, wall time, and what it found."""
    import subprocess
    import sys

    out.mkdir(parents=True, exist_ok=True)
    seconds = hours * 3600
    middle = round(seconds / 2)
    upload = out / f"upload-{hours:g}h.mp4"
    reference = sorted((data / "references").glob("av0_*.mp4"))[0]
    other = next(iter(music().values()))
    if not upload.exists():
        pictures = {**clips(), **extra_clips()}
        w, h = SIZE
        graph = (f"[1:a]atrim=0:{middle},asetpts=N/SR/TB[a1];[2:a]atrim=0:60,asetpts=N/SR/TB[a2];"
                 f"[3:a]atrim=0:{seconds - middle - 60},asetpts=N/SR/TB[a3];"
                 "[a1][a2][a3]concat=n=3:v=0:a=1[a]")  # fmt: skip
        run_ffmpeg(["-stream_loop", "-1", "-i", str(pictures["Megamind"]),
                    "-stream_loop", "-1", "-i", str(other), "-i", str(reference),
                    "-stream_loop", "-1", "-i", str(other), "-filter_complex", graph,
                    "-map", "0:v", "-map", "[a]", "-t", f"{seconds:.0f}",
                    "-vf", f"scale={w}:{h},fps=25", "-c:v", "libx264", "-preset", "ultrafast",
                    "-c:a", "aac", "-b:a", "96k", str(upload)])  # fmt: skip
    copyspan = str(Path(sys.executable).parent / "copyspan")
    index = out / "index"
    if not (index / "catalog.sqlite").exists():
        subprocess.run([copyspan, "index", "add", str(data / "references"), "--index", str(index),
                        "-q"], check=True, capture_output=True)  # fmt: skip
    silent = out / "picture-only.yaml"
    silent.write_text("audio:\n  enabled: false\n")
    measured = {}
    for label, extra in (("with sound", []), ("picture only", ["--config", str(silent)])):
        probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                 "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                 "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)"
                 ".ru_maxrss); print(r.stdout)")  # fmt: skip
        done = subprocess.run([sys.executable, "-c", probe, copyspan, "query", str(upload),
                               "--index", str(index), "--json", "-q", *extra],
                              capture_output=True, text=True, check=True)  # fmt: skip
        head, result = done.stdout.split("\n", 2)[:2]
        wall, rss_kb = head.split()
        found = json.loads(result)
        segments = [(m["reference_id"], s) for m in found["matches"] for s in m["segments"]]
        measured[label] = {"wall": float(wall), "rss_gb": int(rss_kb) / 2**20,
                           "segments": segments, "audio": found["query"].get("audio")}  # fmt: skip
    return {"hours": hours, "middle": middle, "reference": reference.stem, **measured}


def render_long(tag: str, command: str, long: dict) -> str:
    lines = section_header(tag, command)
    lines += ["", f"One {long['hours']:g}-hour upload at 640x360 (held-out footage under other "
              f"music; {long['reference']}'s soundtrack copied at {long['middle']} s for 60 s), "
              "`copyspan query` in a fresh process:", "",
              "| | peak RSS | wall | found |", "| --- | --- | --- | --- |"]  # fmt: skip
    for label in ("with sound", "picture only"):
        run = long[label]
        found = "; ".join(f"{ref} {s['query_start']:.1f}-{s['query_end']:.1f} s ({s['modality']})"
                          for ref, s in run["segments"]) or "nothing"  # fmt: skip
        lines.append(f"| {label} | {run['rss_gb']:.2f} GB | {run['wall']:.0f} s | {found} |")
    lines.append(f"<!-- /bench:{tag} -->")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--long-hours", type=float, default=0.0, help="instead: one upload this long, its memory"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = args.data or REPO / "data" / f"audio-seed{args.seed}"
    if not (data / "dataset.json").exists():
        build(args.seed, data)
    if args.long_hours:
        long = long_upload(args.long_hours, data, REPO / "data" / "audio-long")
        tag, command = (
            f"audio-long-{args.long_hours:g}h",
            f"python -m benchmarks.audio --seed {args.seed} --long-hours {args.long_hours:g}",
        )
        publish(tag, render_long(tag, command, long), write=not args.no_write)
        return 0
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        figures = run(data, load_config(), Path(tmp))
    peer = run_chromaprint(data)
    if peer is not None:
        figures["runs"]["Chromaprint (peer)"] = {**peer, "errors": {}}
    truth = read_segments(data / "gt.csv")
    scored = {label: _score(truth, r["boxes"], figures["families"])
              for label, r in figures["runs"].items()}  # fmt: skip
    figures["span_errors"] = _span_errors(truth, figures["runs"]["with sound"]["boxes"])
    tag = f"audio-seed{args.seed}"
    command = f"python -m benchmarks.audio --seed {args.seed}"
    publish(tag, render(tag, command, figures, scored), write=not args.no_write)
    for label, r in figures["runs"].items():
        for query, error in r["errors"].items():
            print(f"{label}: {query}: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
