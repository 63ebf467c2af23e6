"""One reference's copied spans from the picture and from the sound, as one list.

A stretch both find at the same place in the reference is one segment resting on ``both``: its
query span is the union of the two (the sound often covers seconds the picture cannot show: a
small inset, a cut to other pictures) and its reference span follows the sound's offset (sound
only matches at the original speed, and places a copy to a hop, 32 ms, where near-static or
repeating pictures leave the picture's place a guess); its score is the better of the two (one
scale: pipeline/audio/match.py). A stretch only the sound finds is an ``audio`` segment. Where
the two place the same query stretch at different reference times, the better-scored one
stands (a loop of pictures matched a period off; a film's music re-used under another scene).
"""

from __future__ import annotations

import dataclasses

from pipeline.records import Segment

PLACE_TOLERANCE_S = 2.0  # reference offsets this close are the same place


def fuse(video: list[Segment], audio: list[Segment], reference_s: float = 0.0) -> list[Segment]:
    """``video`` and ``audio`` segments of one (query, reference) pair, by query start;
    ``reference_s``: the reference's duration, which spans do not pass (0: unknown)."""
    fused = list(video)
    for sound in audio:
        if reference_s > 0:
            sound = _clipped(sound, reference_s)
            if sound is None:
                continue
        overlapping = [i for i, v in enumerate(fused) if v.overlaps(sound)]
        same_place = [i for i in overlapping if _same_place(fused[i], sound)]
        if same_place:
            for i in same_place:
                fused[i] = _joined(fused[i], sound, reference_s)
        elif not overlapping:
            fused.append(sound)
        elif all(sound.score > fused[i].score for i in overlapping):
            fused = [v for i, v in enumerate(fused) if i not in overlapping] + [sound]
    return sorted(fused, key=lambda s: s.query_start)


def _joined(picture: Segment, sound: Segment, reference_s: float) -> Segment:
    if picture.modality == "audio":  # two stretches of sound: keep the first
        return picture
    start = min(picture.query_start, sound.query_start)
    end = max(picture.query_end, sound.query_end)
    offset = sound.reference_start - sound.query_start
    if start + offset < 0:
        start = -offset
    if reference_s > 0 and end + offset > reference_s:
        end = reference_s - offset
    return dataclasses.replace(
        picture,
        query_start=start,
        query_end=end,
        reference_start=start + offset,
        reference_end=end + offset,
        score=max(picture.score, sound.score),
        alternatives=sound.alternatives,
        reference_slack_s=0.0,
        modality="both",
    )


def _same_place(picture: Segment, sound: Segment) -> bool:
    """Whether the sound's offset agrees with where the picture maps that query time."""
    middle = (
        max(picture.query_start, sound.query_start) + min(picture.query_end, sound.query_end)
    ) / 2
    mapped = picture.reference_start + (middle - picture.query_start) * picture.speed
    heard = sound.reference_start + (middle - sound.query_start)
    slack = PLACE_TOLERANCE_S + picture.reference_slack_s
    return abs(mapped - heard) <= slack or any(
        abs(a + (middle - picture.query_start) * picture.speed - heard) <= slack
        for a, _ in picture.alternatives
    )


def _clipped(sound: Segment, reference_s: float) -> Segment | None:
    """The part of an audio segment inside the reference (sound plays at speed 1)."""
    over = sound.reference_end - reference_s
    if over <= 0:
        return sound
    if sound.query_end - over <= sound.query_start:
        return None
    return dataclasses.replace(sound, query_end=sound.query_end - over, reference_end=reference_s)
