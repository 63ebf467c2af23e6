"""The ``copyspan`` command groups, one module each; workers/cli.py dispatches to them.

index.py (index add/info/remove/background/compact/import, describe), query.py (query,
similar, match, eval), audit.py (audit, report, review), serve.py (serve, api, live);
output.py holds what they share. Each module's ``register`` adds its subcommands.
"""
