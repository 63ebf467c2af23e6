"""``copyspan bank ...`` and ``copyspan token ...``: rights holders' banks and their API tokens."""

from __future__ import annotations

import argparse

from pipeline.config import Config
from pipeline.index.banks import ACTIONS
from workers.commands.output import emit

KEEP = object()  # an option not given: the bank keeps what it has


def threshold(text: str) -> float | None:
    """A threshold, or ``none`` (back to the configured policy's)."""
    if text.lower() in ("none", "inherit"):
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a number or 'none', not {text!r}") from exc


def _open(args, config: Config):
    from pipeline.index import ReferenceIndex

    return ReferenceIndex(args.index, create=False, config=config.index)


def _bank_line(bank: dict) -> str:
    limits = ", ".join(
        f"{key} {bank[key]}" for key in ("min_score", "min_seconds", "min_share")
        if bank.get(key) is not None
    )  # fmt: skip
    state = "" if bank["enabled"] else "  (disabled)"
    held = f"  {bank['references']} reference(s)" if "references" in bank else ""
    return f"{bank['name']:16s} {bank['action']:6s} {limits or 'configured policy'}{held}{state}"


def cmd_bank_create(args, config: Config) -> int:
    from pipeline.index import ReferenceIndex
    from pipeline.index.banks import Bank

    bank = Bank(args.name, args.action, args.min_score, args.min_seconds, args.min_share,
                enabled=not args.disabled)  # fmt: skip
    with ReferenceIndex(args.index, config=config.index) as index:
        made = index.create_bank(bank).to_dict()
    emit({**made, "status": "created"}, args.json, "created  " + _bank_line(made))
    return 0


def cmd_bank_list(args, config: Config) -> int:
    with _open(args, config) as index:
        for name, summary in index.bank_summary().items():
            bank = {"name": name, **summary}
            emit(bank, args.json, _bank_line(bank))
    return 0


def cmd_bank_set(args, config: Config) -> int:
    changes = {
        key: getattr(args, key)
        for key in ("action", "min_score", "min_seconds", "min_share", "enabled")
        if getattr(args, key) is not KEEP
    }
    with _open(args, config) as index:
        bank = index.set_bank(args.name, **changes).to_dict()
    emit({**bank, "status": "set"}, args.json, "set      " + _bank_line(bank))
    return 0


def cmd_bank_remove(args, config: Config) -> int:
    from workers.tokens import TokenStore

    with _open(args, config) as index:
        removed = index.remove_bank(args.name, with_references=args.with_references)
    store = TokenStore.beside(args.index)
    try:
        revoked = store.revoke_bank(args.name)
    finally:
        store.close()
    obj = {"name": args.name, "status": "removed", "references_removed": removed,
           "tokens_revoked": revoked}  # fmt: skip
    emit(obj, args.json, f"removed  bank {args.name}: {len(removed)} reference(s), "
                         f"{revoked} token(s) revoked")  # fmt: skip
    return 0


def cmd_token_create(args, config: Config) -> int:
    """The token alone on the last line of stdout (shown this once; only its hash is kept)."""
    from workers.tokens import TokenStore

    with _open(args, config) as index:
        if args.bank is not None:
            index.require_bank(args.bank)
    store = TokenStore.beside(args.index)
    try:
        token, record = store.create(args.bank, args.name)
    finally:
        store.close()
    scope = f"bank {record.bank}" if record.bank else "admin"
    emit(record.to_dict(), args.json, f"created token {record.name!r} ({scope}); shown once:")
    print(token, flush=True)
    return 0


def cmd_token_list(args, config: Config) -> int:
    from workers.tokens import TokenStore

    _open(args, config).close()  # an index must be there
    store = TokenStore.beside(args.index)
    try:
        for record in store.list():
            state = f"revoked {record.revoked_at}" if record.revoked_at else "live"
            scope = f"bank {record.bank}" if record.bank else "admin"
            line = f"{record.number:4d} {record.name:20s} {scope:20s} {record.created_at}  {state}"
            emit(record.to_dict(), args.json, line)
    finally:
        store.close()
    return 0


def cmd_token_revoke(args, config: Config) -> int:
    from workers.tokens import TokenStore

    _open(args, config).close()
    store = TokenStore.beside(args.index)
    try:
        record = store.revoke(args.token)
    finally:
        store.close()
    emit({**record.to_dict(), "status": "revoked"}, args.json, f"revoked  {record.name}")
    return 0


def _policy_options(parser, keep: bool) -> None:
    default = KEEP if keep else None
    parser.add_argument("--action", choices=ACTIONS, default=KEEP if keep else "alert",
                        help="what a match does: alert, track (report only), block")  # fmt: skip
    parser.add_argument(
        "--min-score",
        type=threshold,
        default=default,
        help="match score at least this (none: the configured policy's)",
    )
    parser.add_argument(
        "--min-seconds",
        type=threshold,
        default=default,
        help="copied seconds of the upload at least this",
    )
    parser.add_argument(
        "--min-share",
        type=threshold,
        default=default,
        help="copied share of either video at least this (0-1)",
    )


def register(commands, common) -> None:
    bank = commands.add_parser("bank", help="banks: the catalog divided among rights holders")
    banks = bank.add_subparsers(dest="bank_command", required=True)
    create = banks.add_parser("create", parents=[common], help="create a bank")
    create.add_argument("name")
    create.add_argument("--index", required=True, help="index directory (created if missing)")
    _policy_options(create, keep=False)
    create.add_argument("--disabled", action="store_true", help="not searched until enabled")
    create.set_defaults(handler=cmd_bank_create)
    listing = banks.add_parser("list", parents=[common], help="banks, policies and counts")
    listing.add_argument("--index", required=True)
    listing.set_defaults(handler=cmd_bank_list)
    change = banks.add_parser("set", parents=[common], help="change a bank's policy")
    change.add_argument("name")
    change.add_argument("--index", required=True)
    _policy_options(change, keep=True)
    switch = change.add_mutually_exclusive_group()
    switch.add_argument("--enable", dest="enabled", action="store_const", const=True, default=KEEP)
    switch.add_argument("--disable", dest="enabled", action="store_const", const=False)
    change.set_defaults(handler=cmd_bank_set)
    remove = banks.add_parser("remove", parents=[common], help="remove a bank (empty, or told)")
    remove.add_argument("name")
    remove.add_argument("--index", required=True)
    remove.add_argument("--with-references", action="store_true",
                        help="remove the bank's references with it")  # fmt: skip
    remove.set_defaults(handler=cmd_bank_remove)

    token = commands.add_parser("token", help="API tokens, scoped to a bank or admin")
    tokens = token.add_subparsers(dest="token_command", required=True)
    create = tokens.add_parser("create", parents=[common], help="print a new token (once)")
    create.add_argument("--index", required=True)
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--bank", help="the token sees and changes only this bank")
    scope.add_argument("--admin", action="store_true", help="the token sees everything")
    create.add_argument("--name", help="a label to list and revoke it by")
    create.set_defaults(handler=cmd_token_create)
    listing = tokens.add_parser("list", parents=[common], help="tokens (never their secrets)")
    listing.add_argument("--index", required=True)
    listing.set_defaults(handler=cmd_token_list)
    revoke = tokens.add_parser("revoke", parents=[common], help="revoke a token")
    revoke.add_argument("token", help="its name or number")
    revoke.add_argument("--index", required=True)
    revoke.set_defaults(handler=cmd_token_revoke)
