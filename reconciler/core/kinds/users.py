"""Each developer's LiteLLM user, `roster:<name>`, and the keys under it. Pure.

LiteLLM applies its own rules to a key through its user: the user's role decides which management routes the key
may call (an `internal_user` may mint keys for any model), the user's model list and budget can refuse the key's
requests, and `/team/member_add` creates a missing user itself as an `internal_user` with every model. So the tool
owns each developer's user before anything refers to it (docs/security.md, "LiteLLM identities"): made by the tool
as an `internal_user_viewer` whose models are exactly the key's and with no budget of its own, read on every plan,
put back when changed by hand, and removed with the developer. Every key under a `roster:` user that the tool did
not issue is revoked. The settings are measured per version in docs/litellm.md §11.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ... import TOOL_NAME
from ..changes import Change, Conflict, Desired, before_after, field_lines, key_label, same_value, value_text
from ..live import MARKER, USER_PREFIX, Checker, LiveKey, user_id_for

USER_ROUTE = "GET /user/list"
ROLE = "internal_user_viewer"  # may call no management route that writes: it can mint nothing
# LiteLLM up to 1.80 cannot clear a user's budget (it ignores null); the tool then sets this, which means "none".
NO_BUDGET = 1e12
# A user LiteLLM made itself when the tool added it to a team (before users were the tool's) has these roles.
AUTO_ROLES = frozenset({"internal_user", ROLE})


@dataclass(frozen=True)
class LiveUser:
    user_id: str
    role: str | None
    models: tuple[str, ...]
    max_budget: float | None
    teams: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    sso_user_id: str | None = None
    email: str | None = None

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> LiveUser:
        check = Checker(obj, USER_ROUTE, "user", "user_id")
        budget = check.number("max_budget")
        return cls(user_id=check.text("user_id", required=True), role=check.text("user_role"),
                   models=tuple(sorted(check.strings("models"))),
                   max_budget=None if budget is not None and budget >= NO_BUDGET else budget,
                   teams=tuple(sorted(check.strings("teams"))), metadata=dict(check.mapping("metadata")),
                   sso_user_id=check.text("sso_user_id"), email=check.text("user_email"))

    @property
    def name(self) -> str:
        return self.user_id[len(USER_PREFIX):]

    @property
    def ours(self) -> bool:
        """Made by the tool, as its metadata says. A claim that grants nothing: the user is still put back to the
        tool's settings and its keys revoked unless the tool issued them (docs/litellm.md §11)."""
        return self.metadata.get(MARKER) == TOOL_NAME and self.metadata.get("roster_name") == self.name

    def auto_created(self, our_teams: set[str]) -> bool:
        """Made by LiteLLM's /team/member_add when the tool added the developer to its teams, before the tool made
        users itself: no login of its own (no SSO id, no email), a default role, and only the tool's teams. Taken
        over without a new secret (the migration); anything else is someone's user and a conflict."""
        return (not self.sso_user_id and not self.email and self.role in AUTO_ROLES and bool(self.teams)
                and set(self.teams) <= our_teams)

    def describe(self) -> str:
        budget = "none" if self.max_budget is None else f"${self.max_budget:g}"
        return (f"role {self.role or 'none'}, models {list(self.models) or 'all'}, budget {budget}"
                + (f", SSO id {self.sso_user_id}" if self.sso_user_id else "")
                + (f", teams {', '.join(self.teams)}" if self.teams else ""))


def user_metadata(name: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**(base or {}), MARKER: TOOL_NAME, "roster_name": name}


def key_line(key: LiveKey) -> str:
    return (f"{key.alias or '(no alias)'} {key.token[:8]}… made by {key.created_by or 'unknown'}, models "
            f"{list(key.models) or 'all'}")


# ---------------------------------------------------------------- changes


@dataclass(frozen=True)
class UserChange(Change):
    subject = "developer"


@dataclass(frozen=True)
class CreateUser(UserChange):
    """Before the developer's key or team membership refers to it."""

    kind, symbol = "create-user", "+"
    models: tuple[str, ...] = ()

    def _data(self) -> dict[str, Any]:
        return {"user_id": user_id_for(self.name), "after": {"user_role": ROLE, "models": list(self.models),
                                                             "max_budget": None}}

    def details(self) -> list[str]:
        return [f"user {user_id_for(self.name)}: role {ROLE}, models {value_text(self.models)}, no budget"]


@dataclass(frozen=True)
class UpdateUser(UserChange):
    kind, symbol = "update-user", "~"
    fields: tuple[tuple[str, Any, Any], ...] = ()  # (field, before, after); other_teams: teams to leave
    metadata: tuple[tuple[str, Any], ...] = ()  # the user's own, kept beside the marker
    takeover: bool = False  # --adopt of a user the tool did not make

    def _data(self) -> dict[str, Any]:
        return {"user_id": user_id_for(self.name), **before_after(self.fields)}

    @property
    def risk(self) -> str | None:
        if self.takeover:
            return f"takes over the LiteLLM user {user_id_for(self.name)}, which the tool did not make"
        return None

    def details(self) -> list[str]:
        return [f"user {user_id_for(self.name)}", *field_lines(self.fields)]


@dataclass(frozen=True)
class DeleteUser(UserChange):
    """Last, after the developer's keys and memberships: LiteLLM deletes a user's keys with it (§11)."""

    kind, symbol = "delete-user", "-"

    def _data(self) -> dict[str, Any]:
        return {"user_id": user_id_for(self.name)}

    def details(self) -> list[str]:
        return [f"user {user_id_for(self.name)}"]


@dataclass(frozen=True)
class Revoke(Change):
    """A key under a roster user that the tool did not issue: self-service, or made by someone else for the user."""

    # First of all: it closes a way around the roster at once, and frees a roster alias the key may hold.
    kind, symbol = "revoke", "-"
    key: LiveKey = None  # type: ignore[assignment]

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, "created_by": self.key.created_by,
                "models": list(self.key.models), "user_id": self.key.user_id}

    def details(self) -> list[str]:
        return [f"{key_label(self.key)} made by {self.key.created_by}, models "
                f"{value_text(self.key.models)}"]

    @property
    def about_others(self) -> bool:
        return True


@dataclass(frozen=True)
class UserConflict(Conflict):
    user: LiveUser = None  # type: ignore[assignment]
    keys: tuple[LiveKey, ...] = ()

    def _data(self) -> dict[str, Any]:
        return {"user_id": self.user.user_id, "found": self.user.describe(),
                "keys": [key_line(k) for k in self.keys]}

    def details(self) -> list[str]:
        return [f"user {self.user.user_id}: {self.user.describe()}", *(f"its key {key_line(k)}" for k in self.keys)]

    @property
    def about_others(self) -> bool:
        return True


# ---------------------------------------------------------------- diff


def user_fields(user: LiveUser, want: Desired, our_teams: set[str]) -> list[tuple[str, Any, Any]]:
    fields: list[tuple[str, Any, Any]] = []
    if user.role != ROLE:
        fields.append(("user_role", user.role, ROLE))
    if user.models != want.models:
        fields.append(("models", list(user.models), list(want.models)))
    if not same_value(user.max_budget, None):
        fields.append(("max_budget", user.max_budget, None))
    others = [t for t in user.teams if t not in our_teams]
    if others:
        fields.append(("other_teams", others, []))
    if not user.ours:
        fields.append(("metadata", "not the tool's", "the tool's"))
    return fields


@dataclass
class UsersDiff:
    changes: list[Change]
    blocked: set[str]  # developers whose user is in conflict: nothing of theirs changes until an operator decides


def diff_users(users: list[LiveUser], keys: list[LiveKey], proven: set[str], handmade: set[str],
               desired: dict[str, Desired], our_teams: set[str], adopt: frozenset[str],
               claims: dict[str, str] | None = None) -> UsersDiff:
    """proven: hashes of the keys the tool issued (ownership.classify); handmade: hand-made keys on a roster alias,
    which the adopt/replace decision handles; claims: hash -> why a key that claims to be the tool's is not.
    our_teams: ids of the tool's teams."""
    changes: list[Change] = []
    blocked: set[str] = set()
    by_name = {u.name: u for u in users if u.user_id.startswith(USER_PREFIX)}
    under: dict[str, list[LiveKey]] = {}
    for key in keys:
        if key.user_id and key.user_id.startswith(USER_PREFIX):
            under.setdefault(key.user_id[len(USER_PREFIX):], []).append(key)
    foreign = {name: [k for k in found if k.token not in proven and k.token not in handmade]
               for name, found in under.items()}

    def trusted(user: LiveUser) -> bool:
        return user.ours or user.auto_created(our_teams)

    for name, user in sorted(by_name.items()):
        want = desired.get(name)
        if trusted(user) or (want is not None and name in adopt):
            continue
        if want is not None:
            blocked.add(name)
            changes.append(UserConflict(
                name, f"the LiteLLM user {user.user_id} exists but the tool did not make it ({user.describe()}); no "
                      f"key is issued or changed for {name} until an operator decides: delete that user, or re-run "
                      f"with --adopt {name} to take it over", user=user, keys=tuple(under.get(name, ()))))
    for name, want in sorted(desired.items()):
        if name in blocked:
            continue
        user = by_name.get(name)
        if user is None:
            changes.append(CreateUser(name, "every key and membership refers to the developer's LiteLLM user",
                                      models=want.models))
            continue
        fields = user_fields(user, want, our_teams)
        if fields:
            takeover = not trusted(user)
            why = "taking over a user the tool did not make (--adopt)" if takeover else \
                "made by LiteLLM for a team membership: taken over" if not user.ours else \
                f"{', '.join(f for f, _, _ in fields)} differ from what the roster grants"
            changes.append(UpdateUser(name, why, fields=tuple(fields), metadata=tuple(sorted(user.metadata.items())),
                                      takeover=takeover))
    for name, user in sorted(by_name.items()):
        if name not in desired and trusted(user):
            changes.append(DeleteUser(name, "no longer in the roster (or access expired): its user goes with it"))
    for name, found in sorted(foreign.items()):
        user = by_name.get(name)
        if name in blocked or (user is not None and not trusted(user) and name not in adopt):
            continue  # someone else's user: listed in its conflict, or not the roster's at all
        for key in sorted(found, key=lambda k: k.token):
            claim = f" (it {(claims or {})[key.token]})" if key.token in (claims or {}) else ""
            changes.append(Revoke(name, f"a key under {user_id_for(name)} that the tool did not issue{claim}: "
                                        f"{key_line(key)}", key=key))
    return UsersDiff(changes, blocked)
