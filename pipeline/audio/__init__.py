"""The soundtrack as evidence beside the picture (issue 35).

decode.py reads a file's first audio stream with PyAV, forward; fingerprint.py turns it into
spectral-peak landmark hashes; postings.py is the catalog's inverted index of them, one table
per segment; match.py turns agreeing hashes into audio segments; fuse.py merges them with the
picture's segments of the same (query, reference) pair. Depends only on the foundation
(records, config, atomic): describe/ and index/ use it, as the matcher does.
"""
