"""The proxy's keys as the diff sees them: parsed once from /key/list's full objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import TOOL_NAME
from .roster import LIMIT_FIELDS, Limits
from .timeutil import parse_litellm_time

MARKER = "managed_by"
# LiteLLM records who created a key, server-side, as the caller's user_id; the master key's is this name. A key
# made by anyone else was not made by this tool, whatever its metadata says (docs/design.md, "Ownership").
ADMIN_CREATOR = "default_user_id"
# A developer's key belongs to the LiteLLM user "roster:<name>": a namespace no other proxy user is in, so naming a
# developer after an existing (admin) user does not hand out that user's rights.
USER_PREFIX = "roster:"


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

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> LiveKey:
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        return cls(
            token=str(obj["token"]),
            alias=obj.get("key_alias"),
            models=tuple(obj.get("models") or ()),
            user_id=obj.get("user_id"),
            metadata=dict(metadata),
            blocked=bool(obj.get("blocked")),
            expires=parse_litellm_time(obj.get("expires")),
            created_at=parse_litellm_time(obj.get("created_at")),
            limits=Limits(**{name: obj.get(name) for name in LIMIT_FIELDS}),
            spend=float(obj.get("spend") or 0.0),
            last_active=parse_litellm_time(obj.get("last_active")),
            created_by=obj.get("created_by"),
            has_created_by="created_by" in obj,
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
