"""Copy-like edits of decoded frames, made in memory: what an upload commonly does to the
footage it copies (a crop, a change of tone, blur, a low resolution, grey).

An index upgrade (pipeline/index/translation.py) describes a sample both plainly and through
these edits with the new model, to calibrate similarities on copies as the matcher meets them.
They are generic on purpose (one of five per frame, in turn), none of the benchmark's families.
"""

from __future__ import annotations

import cv2
import numpy as np

EDITS = 5


def copy_like(frames: np.ndarray) -> np.ndarray:
    """``frames`` [N, H, W, 3] uint8 RGB, each edited by one of five edits in turn."""
    return np.stack([_edit(frame, k % EDITS) for k, frame in enumerate(frames)])


def _edit(frame: np.ndarray, kind: int) -> np.ndarray:
    height, width = frame.shape[:2]
    if kind == 0:  # the middle 70% of each side, enlarged back
        top, left = int(height * 0.15), int(width * 0.15)
        middle = frame[top : height - top, left : width - left]
        return cv2.resize(middle, (width, height), interpolation=cv2.INTER_LINEAR)
    if kind == 1:  # lower contrast, brighter
        return np.clip(frame.astype(np.float32) * 0.7 + 40, 0, 255).astype(np.uint8)
    if kind == 2:
        return cv2.GaussianBlur(frame, (0, 0), 3)
    if kind == 3:  # a third of the resolution, scaled back up
        small = cv2.resize(frame, (max(8, width // 3), max(8, height // 3)))
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return np.repeat(grey[..., None], 3, axis=2)
