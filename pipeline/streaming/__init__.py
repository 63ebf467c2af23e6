"""Long uploads and live streams: a query described and matched window by window.

matcher.py matches a query as its windows arrive (segments final once the query has moved past
them); hls.py follows a live HLS playlist on disk and turns its segments into windows.
"""
