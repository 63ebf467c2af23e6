"""Banks: the catalog divided among rights holders, each with its own match policy.

Every reference lives in one bank (``default`` unless told otherwise, so an index built before
banks keeps working unchanged). A bank says what its matches do, in the manner of Content ID's
per-asset policies: ``alert`` raises a copy alert, ``block`` raises one marked for the platform
to block the upload, ``track`` reports the match (query results, audits, the report) without an
alert. Its thresholds, where set, replace the configured policy's for its matches:
``min_score``, ``min_seconds`` (copied seconds of the upload) and ``min_share`` (the share of
either video that is copied). A disabled bank is not searched at all (rolled out later, or
paused), as Hasher-Matcher-Actioner's banks can be switched off.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from pipeline.errors import ReferenceIndexError

DEFAULT_BANK = "default"
ACTIONS = ("alert", "track", "block")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class BankError(ReferenceIndexError):
    """A bank that does not exist, already exists, or cannot be changed as asked."""


@dataclass(frozen=True)
class Bank:
    name: str
    action: str = "alert"
    min_score: float | None = None  # None: the configured policy's threshold
    min_seconds: float | None = None
    min_share: float | None = None
    enabled: bool = True
    created_at: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.action not in ACTIONS:
            raise BankError(f"a bank's action is one of {', '.join(ACTIONS)}, not {self.action!r}")
        if self.min_seconds is not None and self.min_seconds < 0:
            raise BankError("min_seconds must be >= 0")
        for name in ("min_score", "min_share"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise BankError(f"{name} must be in [0, 1]")

    @property
    def alerts(self) -> bool:
        """Whether its matches raise alerts (``track`` only reports them)."""
        return self.action != "track"

    def to_dict(self) -> dict:
        return asdict(self)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise BankError(
            f"bank name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return name
