"""The reference index: segments of frame descriptors, a catalog, compaction and search.

``ReferenceIndex`` (reference_index.py) is the entry point; catalog.py is its SQLite source of
truth, vectors.py the per-reference descriptor files, structure.py the choice of FAISS structure
by catalog size and memory budget, segments.py what a searcher holds and how results merge,
compaction.py the background merge, descriptor_file.py the describe/import file format.
"""

from pipeline.index.catalog import Reference
from pipeline.index.reference_index import ReferenceIndex, file_sha256
from pipeline.index.segments import FRAME_BITS, FRAME_MASK

__all__ = ["FRAME_BITS", "FRAME_MASK", "Reference", "ReferenceIndex", "file_sha256"]
