"""What a report needs beyond results.jsonl: the descriptors of each matched query.

The audit stores them (float16, with their spans) in ``OUT/evidence/`` under a name derived
from the query's id and path, so the report can draw the query x reference similarity of every
match without decoding the query again (references' descriptors are in the index).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def evidence_path(out: Path, query: dict) -> Path:
    key = f"{query['id']}\t{query['path']}".encode()
    return Path(out) / "evidence" / f"{hashlib.sha1(key).hexdigest()[:20]}.npz"
