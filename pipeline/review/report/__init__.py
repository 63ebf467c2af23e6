"""The audit report: one self-contained HTML page to review an audit's matches.

evidence.py keeps what the heatmaps are drawn from (the descriptors of matched queries),
figures.py draws (timelines as SVG, heatmaps and thumbnails as data: URIs), page.py assembles
the page. Nothing in the page is fetched from anywhere: images are inlined, styles and scripts
are inline, so the file can be mailed, archived or opened offline.
"""

from pipeline.review.report.page import write_report

__all__ = ["write_report"]
