"""What every kind of change shares: the Change (a kind, a subject, before and after as data, a risk, the lines a
reviewer reads), the developer's desired key, and the one table of apply's order. The kinds themselves live with
their diffs: keys.py, teams.py, users.py. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from .catalog import is_wildcard
from .live import LiveKey, user_id_for
from .roster import Limits
from .timeutil import iso

# Apply's order, in one place: each stage runs after the one before (its changes in parallel, memberships one at a
# time). Users and teams first, then memberships, then creates and rotations so nobody is left without a key; a
# member leaves a team, a team and a user go only after every key change (LiteLLM deletes keys with them).
STAGES: tuple[tuple[str, ...], ...] = (
    ("move-file", "recover-file"),
    ("revoke",),
    ("create-user", "update-user"),
    ("create-team", "update-team", "adopt-team"),
    ("join-team", "member-budget"),
    ("create", "rotate", "restore", "adopt"),
    ("update", "re-encrypt"),
    ("delete", "remove-file", "release"),
    ("leave-team", "conflict"),
    ("delete-team",),
    ("delete-user",),
)
STAGE = {kind: i for i, kinds in enumerate(STAGES) for kind in kinds}


@dataclass(frozen=True)
class Outcome:
    """What became of one change when apply ran it: for the audit trail and the report."""

    change: Change
    ok: bool
    message: str = ""
    new_token: str | None = None  # the hash of the key a create or rotation registered


def value_text(value: Any, field: str = "") -> str:
    """One vocabulary for values, in plans and in status: true/false, never (no expiry), none (no value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    if value is None:
        return "never" if field == "expires" else "none"
    return str(value)


def key_label(key: LiveKey) -> str:
    """A key as a reviewer reads it: its hash prefix (never the secret) and alias."""
    return f"key {key.token[:8]}… ({key.alias})"


def field_lines(fields: tuple[tuple[str, Any, Any], ...]) -> list[str]:
    """(field, before, after) triples as a reviewer reads them."""
    return [f"{name}: {value_text(before, name)} -> {value_text(after, name)}" for name, before, after in fields]


@dataclass(frozen=True)
class Desired:
    """One developer's key as the roster wants it."""

    name: str
    alias: str
    models: tuple[str, ...]
    limits: Limits
    expires: datetime | None
    blocked: bool
    recipients: tuple[str, ...]  # canonical, sorted: the developer's plus the admins'
    team: str | None = None  # the roster team the key is bound to
    team_id: str | None = None  # that team's id on the proxy; None until it is created

    @property
    def user_id(self) -> str:
        return user_id_for(self.name)

    @property
    def wildcards(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if is_wildcard(m))

    @property
    def data(self) -> dict[str, Any]:
        return {"alias": self.alias, "models": list(self.models), **self.limits.as_dict(),
                "expires": iso(self.expires), "blocked": self.blocked, "team": self.team}


def same_value(before: Any, after: Any) -> bool:
    """Equal as LiteLLM stores them: a budget of 10 and one of 10.0 are the same."""
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        return float(before) == float(after)
    return before == after


def before_after(fields: tuple[tuple[str, Any, Any], ...]) -> dict[str, Any]:
    """(field, before, after) triples as a change's JSON shows them."""
    return {"before": {f: b for f, b, _ in fields}, "after": {f: a for f, _, a in fields}}


@dataclass(frozen=True)
class Change:
    kind: ClassVar[str]
    symbol: ClassVar[str]
    subject: ClassVar[str] = "developer"  # what `name` names
    takes_over: ClassVar[bool] = False  # takes over a key or team made by hand: --allow-takeover NAME passes it
    name: str
    reason: str

    @property
    def order(self) -> int:
        """The stage of apply this change runs in (STAGES)."""
        return STAGE[self.kind]

    def details(self) -> list[str]:
        """One line per fact a reviewer needs, never a secret: every view shows these."""
        return []

    @property
    def about_others(self) -> bool:
        """About a key or user the tool does not manage: a public view (a fork's pull request) shows that there is
        one, not whose it is or what it may do, unless the operator asks for details."""
        return False

    @property
    def data(self) -> dict[str, Any]:
        """The change as JSON: what plan --format json prints and what the checksum covers. Never a secret."""
        out = {"kind": self.kind, self.subject: self.name, "reason": self.reason, **self._data()}
        if self.risk:
            out["high_risk"] = self.risk
        return out

    def _data(self) -> dict[str, Any]:
        return {}

    @property
    def risk(self) -> str | None:
        """Why this change needs apply --force whatever the team size, or None. These are the changes a pull
        request could use to take something over; a reviewer must see them and an operator must mean them."""
        want: Desired | None = getattr(self, "desired", None)
        if want is not None and want.wildcards and self._grants_models():
            return f"grants {', '.join(want.wildcards)}: every model the proxy serves under it"
        return None

    def _grants_models(self) -> bool:
        return True


@dataclass(frozen=True)
class Conflict(Change):
    """A key the tool may not touch stands in the way: a hand-made key holding a roster alias (until --adopt or
    --replace decides), or a key that claims to be managed and fails the ownership proof (never)."""

    kind, symbol = "conflict", "!"
    key: LiveKey = None  # type: ignore[assignment]

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, "created_by": self.key.created_by}

    def details(self) -> list[str]:
        return [key_label(self.key)]

    @property
    def about_others(self) -> bool:
        return self.key is not None
