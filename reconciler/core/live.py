"""The proxy's keys as the diff sees them: parsed once from /key/list's full objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .. import TOOL_NAME
from ..errors import ProxyError
from .roster import Limits
from .timeutil import parse_litellm_time

MARKER = "managed_by"
# LiteLLM records who created a key, server-side, as the caller's user_id; the master key's is this name. A key
# made by anyone else was not made by this tool, whatever its metadata says (docs/design.md, "Ownership").
ADMIN_CREATOR = "default_user_id"
# A developer's key belongs to the LiteLLM user "roster:<name>", which the tool makes and owns (users.py): naming a
# developer after an existing (admin) user does not hand out that user's rights.
USER_PREFIX = "roster:"
# What a developer's key may call: LLM routes (and /v1/models) only, never a management route (docs/litellm.md §11).
LLM_ROUTES = ("llm_api_routes",)
# LiteLLM 1.77 cannot clear a key's expiry; the tool then sets it past this instant, which means "never" everywhere.
NEVER = datetime(2200, 1, 1, tzinfo=timezone.utc)


def user_id_for(name: str) -> str:
    return USER_PREFIX + name


@dataclass(frozen=True)
class LiveKey:
    token: str  # sha256 of the secret: never the secret itself
    alias: str | None
    models: tuple[str, ...]
    user_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    blocked: bool = False
    expires: datetime | None = None
    created_at: datetime | None = None
    limits: Limits = Limits()
    spend: float = 0.0
    last_active: datetime | None = None
    created_by: str | None = None
    has_created_by: bool = True  # False on LiteLLM versions whose keys carry no created_by at all
    team_id: str | None = None
    allowed_routes: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> LiveKey:
        """Parse one /key/list object, every field the diff reads checked for its type first: an answer of the
        wrong shape is a one-line ProxyError naming the field, never a traceback (or a guess)."""
        check = Checker(obj)
        return cls(
            token=check.text("token", required=True),
            alias=check.text("key_alias"),
            models=tuple(check.strings("models")),
            user_id=check.text("user_id"),
            metadata=dict(check.mapping("metadata")),
            blocked=check.flag("blocked"),
            expires=_never_if_far(check.time("expires")),
            created_at=check.time("created_at"),
            limits=Limits(max_budget=check.number("max_budget"), budget_duration=check.text("budget_duration"),
                          tpm_limit=check.integer("tpm_limit"), rpm_limit=check.integer("rpm_limit"),
                          max_parallel_requests=check.integer("max_parallel_requests")),
            spend=check.number("spend") or 0.0,
            last_active=check.time("last_active"),
            created_by=check.text("created_by"),
            has_created_by="created_by" in obj,
            team_id=check.text("team_id"),
            allowed_routes=tuple(check.strings("allowed_routes")),
        )

    @property
    def managed(self) -> bool:
        """The key's metadata claims it is ours. A claim, not a proof: see ownership.classify."""
        return self.metadata.get(MARKER) == TOOL_NAME

    @property
    def made_by_admin(self) -> bool:
        return not self.has_created_by or self.created_by == ADMIN_CREATOR

    @property
    def roster_name(self) -> str | None:
        return self.metadata.get("roster_name") if self.managed else None

    @property
    def retire_at(self) -> datetime | None:
        """Set on a rotated-out key: when its grace ends and it is deleted."""
        return parse_litellm_time(self.metadata.get("retire_at")) if self.managed else None

    @property
    def external(self) -> bool:
        """An adopted hand-made key: its secret was never delivered by this tool, so it has no key file."""
        return self.metadata.get("delivery") == "external"

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires <= now


def managed_metadata(name: str, base: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The metadata a managed key carries. Other metadata already on a key (set by people or LiteLLM) is kept,
    because /key/update replaces metadata whole (docs/litellm.md §5)."""
    out = {k: v for k, v in (base or {}).items() if k not in ("retire_at", "delivery")}
    out.update({MARKER: TOOL_NAME, "roster_name": name})
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def unmarked(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata with everything the tool wrote taken out (a released key or user): what people set stays."""
    ours = {MARKER, "roster_name", "retire_at", "delivery", "roster_proof"}  # proofs.FIELD is roster_proof
    return {k: v for k, v in metadata.items() if k not in ours}


def _never_if_far(moment: datetime | None) -> datetime | None:
    return None if moment is not None and moment >= NEVER else moment


class Checker:
    """Typed reads of one object from the proxy: a key from /key/list, or a team from /team/list."""

    def __init__(self, obj: dict[str, Any], route: str = "GET /key/list", what: str = "key", ident: str = "token"):
        self.obj, self.route, self.what, self.ident = obj, route, what, ident

    def bad(self, name: str, expected: str) -> ProxyError:
        ident = self.obj.get(self.ident)
        which = f"{self.what} {ident[:8]}…" if isinstance(ident, str) and ident else f"a {self.what}"
        return ProxyError(self.route, 200, f"unexpected answer: {which} has {name} of type "
                                           f"{type(self.obj.get(name)).__name__}, not {expected}")

    def text(self, name: str, *, required: bool = False) -> Any:
        value = self.obj.get(name)
        if isinstance(value, str) and (value or not required):
            return value
        if value is None and not required:
            return None
        raise self.bad(name, "a string")

    def strings(self, name: str) -> list[str]:
        value = self.obj.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.bad(name, "a list of strings")
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.obj.get(name)
        if value is not None and not isinstance(value, dict):
            raise self.bad(name, "an object")
        return value or {}

    def flag(self, name: str) -> bool:
        value = self.obj.get(name)
        if value is not None and not isinstance(value, bool):
            raise self.bad(name, "true or false")
        return bool(value)

    def number(self, name: str) -> float | None:
        value = self.obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise self.bad(name, "a number")
        return value

    def integer(self, name: str) -> int | None:
        value = self.obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.bad(name, "an integer")
        return value

    def time(self, name: str) -> datetime | None:
        value = self.obj.get(name)
        if value is not None and not isinstance(value, str):
            raise self.bad(name, "a time")
        try:
            return parse_litellm_time(value)
        except ValueError:
            raise self.bad(name, "an ISO-8601 time") from None
