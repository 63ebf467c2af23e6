"""The review page of an audit (``copyspan report AUDIT_OUT``): one self-contained HTML file.

A summary (inputs, matched, failures and their reasons, copied seconds, throughput), then one
entry per matched input: for each reference it copies, a timeline of the upload and of the
reference with every copied span drawn on both and joined, thumbnail pairs (the upload's frame
beside the reference's) at the start, middle and end of every segment, the query x reference
similarity heatmap with the aligned segments drawn on it, the scores, the spans in
``h:mm:ss.s`` and the copied share of each video. The page sorts and filters its entries (by
score, copied seconds, reference). Served by ``copyspan api --audit`` at ``/review`` it also
records reviewers' verdicts.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

from pipeline import atomic
from pipeline.index.banks import DEFAULT_BANK
from pipeline.metric import covered_seconds
from pipeline.review.report.evidence import evidence_path
from pipeline.review.report.figures import (
    clock,
    data_uri,
    frames_at,
    heatmap,
    placeholder,
    timeline_svg,
)

log = logging.getLogger(__name__)


def write_report(out: str | Path, target: str | Path | None = None) -> Path:
    """Write the report of the audit in ``out`` (default ``out/report.html``)."""
    out = Path(out)
    target = Path(target) if target else out / "report.html"
    atomic.write_text(target, build_page(out))
    return target


def build_page(out: Path, review_api: str | None = None, bank: str | None = None) -> str:
    """The page's HTML; ``review_api``: where verdict buttons post (only when served);
    ``bank``: only that bank's matches (a bank's reviewer: nothing of the others, not even the
    audit's totals or failed inputs)."""
    summary = json.loads((out / "summary.json").read_text())
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    if bank is not None:
        results = [_of_bank(r, bank) for r in results if not r.get("error")]
        summary = {"inputs": len(results), "matched": sum(bool(r["matches"]) for r in results),
                   "index": summary.get("index")}  # fmt: skip
    index = _open_index(summary.get("index"))
    try:
        entries = [_entry(out, r, index) for r in results if r.get("matches")]
    finally:
        if index is not None:
            index.close()
    failed = [r for r in results if r.get("error")]
    return _page(summary, entries, failed, review_api)


def _of_bank(result: dict, bank: str) -> dict:
    """A query result with only the matches of ``bank`` (results before banks: the default)."""
    kept = [m for m in result.get("matches", []) if m.get("bank", DEFAULT_BANK) == bank]
    return {**result, "matches": kept}


def _open_index(path: str | None):
    from pipeline.index import ReferenceIndex

    if not path or not Path(path).exists():
        return None
    try:
        return ReferenceIndex(path, create=False)
    except Exception as exc:  # the report still shows everything but heatmaps
        log.warning("cannot open index %s for heatmaps: %s", path, exc)
        return None


def _entry(out: Path, result: dict, index) -> str:
    query = result["query"]
    duration = float(query.get("duration") or 0.0)
    evidence = evidence_path(out, query)
    descriptors = atomic.read_npz(evidence) if evidence.exists() else None
    blocks, best, copied_total = [], 0.0, 0.0
    for match in result["matches"]:
        block, copied = _match_block(query, duration, match, descriptors, index)
        blocks.append(block)
        best = max(best, match["score"])
        copied_total = max(copied_total, copied)
    references = " ".join(m["reference_id"] for m in result["matches"])
    return (
        f'<section class="entry" data-score="{best:.4f}" data-copied="{copied_total:.3f}" '
        f'data-reference="{html.escape(references)}">'
        f"<h2>{html.escape(query['id'])} <small>{html.escape(query['path'])} · "
        f"{clock(duration)}</small></h2>{''.join(blocks)}</section>"
    )


def _match_block(
    query: dict, duration: float, match: dict, descriptors, index
) -> tuple[str, float]:
    segments = match["segments"]
    copied = covered_seconds([(s["query_start"], s["query_end"]) for s in segments])
    copied_ref = covered_seconds([(s["reference_start"], s["reference_end"]) for s in segments])
    ref = index.get(match["reference_id"]) if index is not None else None
    ref_duration = ref.duration if ref else max(s["reference_end"] for s in segments)
    rows = "".join(
        f"<tr><td>{clock(s['query_start'])}–{clock(s['query_end'])}</td>"
        f"<td>{clock(s['reference_start'])}–{clock(s['reference_end'])}</td>"
        f"<td>{s['score']:.2f}</td><td>{s.get('modality', 'video')}</td></tr>"
        for s in segments
    )
    figure = ""
    features = index.features(ref) if descriptors is not None and ref is not None else None
    if features is not None and len(features) and len(descriptors["embeddings"]):
        image = heatmap(descriptors["embeddings"], descriptors["starts"], features.embeddings,
                        features.starts, segments)  # fmt: skip
        figure = (
            f'<figure><img class="heat" alt="similarity heatmap" src="{data_uri(image)}">'
            "<figcaption>upload (down) × reference (across) similarity; white: the aligned "
            "segments</figcaption></figure>"
        )
    verdict = match.get("verdict")
    verdict_text = (
        f'<p class="verdict">verdict: <b>{html.escape(verdict["verdict"])}</b> by '
        f"{html.escape(verdict['by'])} {html.escape(verdict['at'])} {html.escape(verdict['note'])}"
        "</p>"
        if verdict
        else ""
    )
    target = {"query_id": query["id"], "reference_id": match["reference_id"],
              "query_sha256": query.get("sha256")}  # fmt: skip
    payload = html.escape(json.dumps(target))
    bank = (
        f" · bank {html.escape(match['bank'])}: {html.escape(str(match.get('action')))}"
        if match.get("bank") else ""
    )  # fmt: skip
    block = (
        f'<div class="match"><h3>{html.escape(match["reference_id"])} <small>'
        f"{html.escape(match['reference_path'])}</small> · score {match['score']:.2f}{bank}</h3>"
        f'<p class="shares">copies {clock(copied)} of the upload '
        f"({100 * copied / max(duration, 1e-6):.0f}%) and {clock(copied_ref)} of the reference "
        f"({100 * copied_ref / max(ref_duration, 1e-6):.0f}%)</p>{verdict_text}"
        f"{timeline_svg(segments, duration, ref_duration)}"
        '<div class="row"><table><tr><th>upload</th><th>reference</th><th>score</th>'
        "<th>found by</th></tr>"
        f"{rows}</table>{figure}</div>"
        '<p class="legend">frames at the start, middle and end of each segment: the '
        "upload's above, the reference's below</p>"
        f'<div class="thumbs">{_thumbs(query["path"], match["reference_path"], segments)}</div>'
        f'<div class="review" data-match="{payload}"><button data-verdict="copy">copy</button>'
        '<button data-verdict="not_copy">not a copy</button>'
        '<button data-verdict="licensed">licensed</button><span class="said"></span></div>'
        "</div>"
    )
    return block, copied


def _thumbs(query_path: str, reference_path: str, segments: list[dict]) -> str:
    pairs = []  # (label, upload time, reference time) at the start, middle and end of each segment
    for s in segments:
        speed = (s["reference_end"] - s["reference_start"]) / max(
            s["query_end"] - s["query_start"], 1e-6
        )
        length = s["query_end"] - s["query_start"]
        for label, at in (("start", 0.05), ("middle", 0.5), ("end", 0.95)):
            t = s["query_start"] + at * length
            pairs.append((label, t, s["reference_start"] + (t - s["query_start"]) * speed))
    query_images = frames_at(query_path, [t for _, t, _ in pairs])
    reference_images = frames_at(reference_path, [r for _, _, r in pairs])
    cells = []
    for (label, t, r), q_img, r_img in zip(pairs, query_images, reference_images, strict=True):
        cells.append(
            f'<div class="pair"><img alt="upload at {clock(t)}" src="'
            f'{data_uri(q_img if q_img is not None else placeholder("unreadable"), ".jpg")}">'
            f'<img alt="reference at {clock(r)}" src="'
            f'{data_uri(r_img if r_img is not None else placeholder("unreadable"), ".jpg")}">'
            f"<span>{label}: {clock(t)} ↔ {clock(r)}</span></div>"
        )
    return "".join(cells)


STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{margin:.2em 0}h2{margin:.2em 0;font-size:1.15em}h3{margin:.6em 0 .2em;font-size:1em}
small{color:#666;font-weight:normal}.summary td{padding:2px 10px}
.entry{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:12px 0}
.match{border-top:1px solid #eee;padding-top:6px}.row{display:flex;gap:18px;align-items:flex-start}
table.seg,td,th{font-variant-numeric:tabular-nums}th{text-align:left;color:#555}
.thumbs{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}
.pair{display:flex;flex-direction:column;align-items:center;font-size:12px;color:#555}
.pair img{display:block;margin:1px}.heat{image-rendering:pixelated;border:1px solid #ccc}
.bar{fill:#e3e3e3}.span{fill:#d9534f}.sound{fill:#337ab7}.join{fill:#d9534f;opacity:.25}.lab{font-size:11px;fill:#444}
.controls{position:sticky;top:0;background:#fafafa;padding:6px 0;border-bottom:1px solid #ddd}
.review button{margin-right:4px}.legend{color:#666;margin:4px 0 0}
.verdict{color:#1a6}.failed li{color:#a33}
"""

SCRIPT = """
const list = document.getElementById('entries');
function apply() {
  const key = document.getElementById('sort').value;
  const text = document.getElementById('filter').value.toLowerCase();
  const min = parseFloat(document.getElementById('minscore').value || '0');
  const items = Array.from(list.querySelectorAll('.entry'));
  items.sort((a, b) => key === 'reference'
    ? a.dataset.reference.localeCompare(b.dataset.reference)
    : parseFloat(b.dataset[key]) - parseFloat(a.dataset[key]));
  let shown = 0;
  for (const item of items) {
    const visible = item.dataset.reference.toLowerCase().includes(text)
      && parseFloat(item.dataset.score) >= min;
    item.style.display = visible ? '' : 'none';
    shown += visible ? 1 : 0;
    list.appendChild(item);
  }
  document.getElementById('shown').textContent = shown;
}
for (const id of ['sort', 'filter', 'minscore']) {
  document.getElementById(id).addEventListener('input', apply);
}
apply();
const api = document.body.dataset.api;
for (const box of document.querySelectorAll('.review')) {
  if (!api) { box.style.display = 'none'; continue; }
  for (const button of box.querySelectorAll('button')) {
    button.addEventListener('click', async () => {
      let token = sessionStorage.getItem('copyspan-token');
      if (!token) { token = prompt('API token'); sessionStorage.setItem('copyspan-token', token); }
      const body = Object.assign(JSON.parse(box.dataset.match),
                                 {verdict: button.dataset.verdict, by: 'reviewer'});
      const reply = await fetch(api, {method: 'POST', body: JSON.stringify(body),
        headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token}});
      box.querySelector('.said').textContent = reply.ok ? ' recorded: ' + button.dataset.verdict
                                                        : ' not recorded (' + reply.status + ')';
    });
  }
}
"""


def _page(summary: dict, entries: list[str], failed: list[dict], review_api: str | None) -> str:
    rows = [
        ("inputs", summary.get("inputs")), ("matched", summary.get("matched")),
        ("failed", summary.get("failed")), ("copied", clock(summary.get("copied_seconds", 0))),
        ("video processed", clock(summary.get("video_seconds_this_run", 0))),
        ("throughput", f"{summary.get('throughput_video_s_per_s', 0)} video-s/s"),
    ]  # fmt: skip
    table = "".join(f"<tr><td>{k}</td><td><b>{html.escape(str(v))}</b></td></tr>" for k, v in rows)
    failures = "".join(
        f"<li>{html.escape(r['query']['id'])}: {html.escape(r['error'])}</li>" for r in failed
    )
    api = f' data-api="{html.escape(review_api)}"' if review_api else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>copyspan audit report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body{api}>
<h1>copyspan audit report</h1>
<table class="summary">{table}</table>
{f'<h3>failed inputs</h3><ul class="failed">{failures}</ul>' if failures else ""}
<div class="controls">sort by <select id="sort"><option value="score">score</option>
<option value="copied">copied seconds</option><option value="reference">reference</option>
</select> reference <input id="filter" placeholder="contains…"> min score
<input id="minscore" type="number" step="0.05" value="0" style="width:5em">
· <span id="shown"></span> of {len(entries)} matched inputs shown</div>
<div id="entries">{"".join(entries)}</div>
<script>{SCRIPT}</script>
</body></html>
"""
