"""The describe stage: decode a video, prepare its frames, embed them (describer.py chains it).

decode.py (frames sampled by timestamp, bounded windows), suppress.py (borders, blank frames,
generic-frame weights), views.py (region views: insets, stacked scenes), keyframes.py (repeated
pictures collapsed, spans remembered), embed.py and onnx_torch.py (the SSCD model on OpenVINO,
onnxruntime or torch). Nothing here knows the index or matching.
"""
