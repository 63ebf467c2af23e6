"""``copyspan serve``, ``api`` and ``live``: the long-running services."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Config, load_config
from pipeline.errors import PermanentError
from workers.commands.output import emit, make_detector

SERVE_FLAGS = (
    "bootstrap_servers", "uploads_topic", "alerts_topic", "dlq_topic", "group_id", "index",
    "state_dir", "metrics_port",
)  # fmt: skip


def serve_overrides(args) -> dict:
    """Flags given on the command line win over the config file."""
    serve = {name: getattr(args, name) for name in SERVE_FLAGS if getattr(args, name) is not None}
    if args.allowed_root:
        serve["allowed_roots"] = [str(Path(root).resolve()) for root in args.allowed_root]
    if args.index_unmatched:
        serve["index_unmatched"] = True
    overrides: dict = {"serve": serve} if serve else {}
    if args.ray_address:
        overrides["ray"] = {"address": args.ray_address}
    return overrides


def cmd_serve(args, config: Config) -> int:
    from workers.service import serve

    config = load_config(args.config, serve_overrides(args))
    return serve(config)


def cmd_api(args, config: Config) -> int:
    from pipeline.errors import ConfigError
    from workers.api import openapi_document, serve_api

    if args.openapi:
        print(json.dumps(openapi_document(config), indent=2, sort_keys=True))
        return 0

    if not args.index:
        raise ConfigError("--index is required")
    roots = [str(Path(root).resolve()) for root in args.allowed_root or []]
    return serve_api(config, args.index, roots, args.token_file, args.host, args.port, args.audit,
                     args.no_auth)  # fmt: skip


def cmd_live(args, config: Config) -> int:
    """Follow a live HLS playlist on disk and alert as copies air (pipeline/streaming/live.py)."""
    from pipeline.index import ReferenceIndex
    from pipeline.streaming.live import LiveStream

    playlist = Path(args.source)
    if not playlist.exists():
        raise PermanentError(f"{playlist}: no such playlist")
    name = args.name or playlist.stem
    state = Path(args.state) if args.state else playlist.parent / f".copyspan-live-{name}.json"
    producer = None
    if args.bootstrap_servers:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all")
    detector = make_detector(config)

    def publish(alert: dict) -> None:
        if producer is not None:
            producer.send(args.alerts_topic, json.dumps(alert).encode(), key=name.encode()).get(30)
        segments = ", ".join(
            f"{s['query_start']:.1f}-{s['query_end']:.1f}s <- {s['reference_start']:.1f}-"
            f"{s['reference_end']:.1f}s" for s in alert["segments"]
        )  # fmt: skip
        emit(alert, args.json, f"{name}: copy of {alert['reference_id']} ({segments})")

    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        index.check_model(detector.embedder.model_id, detector.preprocess)
        stream = LiveStream(detector.describer, detector.stages, index, playlist, state, name)
        stream.run(publish)
    if producer is not None:
        producer.close(timeout=10)
    return 0


def register(commands, common) -> None:
    live = commands.add_parser("live", parents=[common], help="follow a live HLS playlist")
    live.add_argument("source", help="an .m3u8 playlist on local disk, written as it airs")
    live.add_argument("--index", required=True)
    live.add_argument("--name", help="the stream's id in alerts (default: the playlist's stem)")
    live.add_argument("--state", help="progress file (default: beside the playlist)")
    live.add_argument("--bootstrap-servers", help="also publish alerts to Kafka")
    live.add_argument("--alerts-topic", default="copy-alerts")
    live.set_defaults(handler=cmd_live)

    api = commands.add_parser("api", parents=[common], help="the HTTP API")
    api.add_argument("--index", help="the index directory (required to serve)")
    api.add_argument("--allowed-root", action="append", help="repeatable")
    api.add_argument("--token-file", help="file holding the bearer token of /v1/ routes")
    api.add_argument("--no-auth", action="store_true", help="no token (loopback host only)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--audit", help="an audit's --out folder, served for review at /review")
    api.add_argument("--openapi", action="store_true", help="print the OpenAPI document, exit")
    api.set_defaults(handler=cmd_api)

    service = commands.add_parser("serve", parents=[common], help="the Kafka service")
    for name in SERVE_FLAGS:
        flag = "--" + name.replace("_", "-")
        service.add_argument(flag, dest=name, type=int if name == "metrics_port" else str)
    service.add_argument("--allowed-root", action="append", help="repeatable")
    service.add_argument("--index-unmatched", action="store_true", help="index unmatched uploads")
    service.add_argument("--ray-address", help="search the index's shards on this Ray cluster")
    service.set_defaults(handler=cmd_serve)
