"""The ``copyspan`` command: a thin dispatcher over the command groups in workers/commands.

stdout carries results only (JSON lines with ``--json``); progress, logs and error reasons go to
stderr. Exit status: 0 when every input succeeded, 1 when any input failed (each failure is still
reported in its place and the others go on), 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.config import load_config
from pipeline.errors import CopyspanError
from workers.commands import audit, banks, index, query, serve
from workers.logs import setup_logging

GROUPS = (index, banks, query, audit, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="copyspan", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML file merged over configs/default.yaml")
    common.add_argument("--json", action="store_true", help="JSON lines on stdout")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    service = args.command == "serve"  # a service logs its work, as JSON lines
    levels = [logging.INFO if service else logging.WARNING, logging.INFO, logging.DEBUG]
    setup_logging(levels[min(args.verbose, 2)], structured=service)
    try:
        config = load_config(args.config)
        return args.handler(args, config)
    except CopyspanError as exc:
        print(f"copyspan: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
