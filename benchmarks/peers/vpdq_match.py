"""Run vPDQ as a user would: hash every video (1 hash per second), match every query against
every reference with threatexchange's brute-force vPDQ matcher and its default thresholds.

Runs inside the peers venv (benchmarks/setup_peers.sh), not the project's:
    .cache/peers-venv/bin/python benchmarks/peers/vpdq_match.py REFS QUERIES OUT.json
Prints nothing; writes {"hash_seconds": s, "match_seconds": s, "matches": [...]}.
"""

import json
import sys
import time
from pathlib import Path

from threatexchange.extensions.vpdq.vpdq_brute_matcher import match_VPDQ_hash_brute
from threatexchange.extensions.vpdq.vpdq_util import (
    VPDQ_DISTANCE_THRESHOLD,
    VPDQ_INDEX_MATCH_THRESHOLD_PERCENT,
    VPDQ_QUALITY_THRESHOLD,
    VPDQ_QUERY_MATCH_THRESHOLD_PERCENT,
    hash_file_compact,
)


def hash_folder(folder: Path) -> dict:
    return {p.stem: hash_file_compact(str(p), 1.0) for p in sorted(folder.iterdir()) if p.is_file()}


def main() -> None:
    refs, queries, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    started = time.perf_counter()
    ref_hashes, query_hashes = hash_folder(refs), hash_folder(queries)
    hashed = time.perf_counter()
    matches = []
    for query, q_hash in query_hashes.items():
        for reference, r_hash in ref_hashes.items():
            if not q_hash or not r_hash:
                continue
            try:
                result = match_VPDQ_hash_brute(
                    q_hash, r_hash, VPDQ_QUALITY_THRESHOLD, VPDQ_DISTANCE_THRESHOLD
                )
            except ZeroDivisionError:  # every frame below the quality threshold
                continue
            if (
                result.query_match_percent >= VPDQ_QUERY_MATCH_THRESHOLD_PERCENT
                and result.compared_match_percent >= VPDQ_INDEX_MATCH_THRESHOLD_PERCENT
            ):
                matches.append(
                    {
                        "query": query,
                        "reference": reference,
                        "query_percent": result.query_match_percent,
                        "reference_percent": result.compared_match_percent,
                    }
                )
    out.write_text(
        json.dumps(
            {
                "hash_seconds": hashed - started,
                "match_seconds": time.perf_counter() - hashed,
                "matches": matches,
            }
        )
    )


if __name__ == "__main__":
    main()
