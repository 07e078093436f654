"""The keys kind: a developer's delivered key, its changes (create, rotate, restore, adopt, update, delete, and the
key files that go with them) and their diff. Pure: no I/O and no clock."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Callable

from ..catalog import ModelCatalog
from ..changes import Change, Conflict, Desired, before_after, field_lines, key_label, same_value, value_text
from ..live import LLM_ROUTES, LiveKey
from ..options import Options
from ..ownership import Classified, key_standing
from ..proofs import NO_PROOFS, Proofs, Standing
from ..recipients import canonical
from ..records import KeyFile
from ..roster import LIMIT_FIELDS, RETIRING_SUFFIX, Developer, Roster, Team
from ..timeutil import format_duration, humanize, iso

EXPIRY_TOLERANCE = timedelta(minutes=5)  # LiteLLM stores now+duration at apply time; compare loosely


def _key_lines(want: Desired) -> list[str]:
    lines = [f"alias {want.alias}", f"models {value_text(want.models)}"]
    limits = {k: v for k, v in want.limits.as_dict().items() if v is not None}
    if limits:
        lines.append(", ".join(f"{k} {v}" for k, v in limits.items()))
    lines.append(f"expires {value_text(iso(want.expires), 'expires')}" + ("; blocked" if want.blocked else ""))
    return [*lines, *([f"team {want.team}"] if want.team else [])]


@dataclass(frozen=True)
class Create(Change):
    kind, symbol = "create", "+"
    desired: Desired = None  # type: ignore[assignment]

    def _data(self) -> dict[str, Any]:
        return {"after": self.desired.data}

    def details(self) -> list[str]:
        return _key_lines(self.desired)


@dataclass(frozen=True)
class Rotate(Change):
    kind, symbol = "rotate", "+/-"
    desired: Desired = None  # type: ignore[assignment]
    old: LiveKey = None  # type: ignore[assignment]
    retire_at: datetime | None = None  # None: the old key is deleted at once
    drop: tuple[str, ...] = ()  # tokens of earlier retiring keys of this developer, deleted first
    grace: timedelta = timedelta(0)
    revocation: bool = False  # rotate: asked for it (a lost laptop, a leak): the old key goes at once
    retiring_alias: str = ""  # what the old key is renamed to for its grace
    recipient_risk: str | None = None  # the new key goes to a recipient that already reads other keys
    scheduled: bool = False  # due only to its age (keys.rotate_after): --allow-scheduled-rotations passes it

    def _data(self) -> dict[str, Any]:
        # The grace, not the instant it ends: a reviewed plan must mean the same when it is applied later.
        return {"after": self.desired.data, "old_token_prefix": self.old.token[:12], "old_alias": self.old.alias,
                "old_key_kept_for": format_duration(self.grace) if self.retire_at else None,
                **({"retiring_alias": self.retiring_alias} if self.retire_at else {}),
                **({"scheduled": True} if self.scheduled else {})}

    @property
    def takes_over(self) -> bool:
        return not self.old.managed

    @property
    def risk(self) -> str | None:
        if not self.old.managed:
            return f"replaces a key made by hand ({self.old.alias}): its holder loses it"
        return self.recipient_risk or super().risk

    def details(self) -> list[str]:
        old = f"old key {self.old.token[:8]}… ({self.old.alias})"
        spent = [f"the new key starts with the old key's spend ({self.old.spend:g} so far)"] if self.old.spend else []
        if self.retire_at and self.desired.limits.max_budget is not None:
            spent.append("the old key's budget closes at its spend: the grace adds no second budget")
        if self.retire_at:
            fate = f"kept until {iso(self.retire_at)} ({format_duration(self.grace)})"
        else:
            fate = f"revoked at once ({'rotate: is a revocation' if self.revocation else 'grace 0'})"
        return [*_key_lines(self.desired), f"{old} {fate}", *spent]


@dataclass(frozen=True)
class Restore(Change):
    """Register again the secret a key file holds, after the proxy lost its keys (apply --restore): the developer
    keeps working without a new key. Only for a file whose proof verifies, so nobody can choose a developer's key."""

    kind, symbol = "restore", "+"
    desired: Desired = None  # type: ignore[assignment]
    token: str = ""  # the hash the key file holds

    def _data(self) -> dict[str, Any]:
        return {"after": self.desired.data, "token_prefix": self.token[:12]}

    def details(self) -> list[str]:
        return [f"key {self.token[:8]}… as its key file holds it", *_key_lines(self.desired)]


@dataclass(frozen=True)
class Adopt(Change):
    """Take over a hand-made key in place: it keeps its secret, gains the marker and the roster's settings."""

    kind, symbol = "adopt", "~"
    desired: Desired = None  # type: ignore[assignment]
    key: LiveKey = None  # type: ignore[assignment]
    fields: tuple[tuple[str, Any, Any], ...] = ()  # (field, before, after): everything the adoption changes
    takes_over = True

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, "user_id": self.key.user_id,
                **before_after(self.fields)}

    @property
    def risk(self) -> str | None:
        return f"takes over a key made by hand ({self.key.alias}, user {self.key.user_id}): whoever holds it keeps it"

    def details(self) -> list[str]:
        return [key_label(self.key), *field_lines(self.fields)]


@dataclass(frozen=True)
class Update(Change):
    kind, symbol = "update", "~"
    desired: Desired = None  # type: ignore[assignment]
    key: LiveKey = None  # type: ignore[assignment]
    fields: tuple[tuple[str, Any, Any], ...] = ()  # (field, before, after) on the proxy
    file_fields: tuple[str, ...] = ()  # readable key-file fields to refresh

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, **before_after(self.fields),
                "key_file_fields": list(self.file_fields)}

    def _grants_models(self) -> bool:
        return any(name == "models" for name, _, _ in self.fields)

    @property
    def risk(self) -> str | None:
        renamed = any(name == "roster_name" for name, _, _ in self.fields)  # previously: in the roster
        for name, before, after in self.fields:
            if name == "key_alias" and before is not None and RETIRING_SUFFIX not in str(before) and not renamed:
                return f"renames a managed key ({before} -> {after}): the alias template changed"
        return super().risk

    def details(self) -> list[str]:
        if self.key.retire_at is not None:
            return [key_label(self.key), *field_lines(self.fields)]
        refresh = ["key file: refresh " + ", ".join(self.file_fields)] if self.file_fields else []
        return [*field_lines(self.fields), *refresh]


@dataclass(frozen=True)
class ReEncrypt(Update):
    """Recipients were only added (an admin recipient, a developer's second identity): the key file is encrypted to
    the new set with the same key, which apply decrypts with its own identity (RECONCILE_REENCRYPT). Nobody who
    could read the key loses anything, so no new key is needed; a removed recipient always means a rotation."""

    kind, symbol = "re-encrypt", "~"
    added: tuple[str, ...] = ()
    recipient_risk: str | None = None

    def _data(self) -> dict[str, Any]:
        return {**super()._data(), "recipients_added": list(self.added)}

    @property
    def risk(self) -> str | None:
        return self.recipient_risk or super().risk

    def details(self) -> list[str]:
        return [f"key file re-encrypted, also to {', '.join(self.added)} (same key)", *field_lines(self.fields)]


@dataclass(frozen=True)
class Delete(Change):
    kind, symbol = "delete", "-"
    key: LiveKey = None  # type: ignore[assignment]
    remove_file: bool = False

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, "remove_file": self.remove_file}

    def details(self) -> list[str]:
        return [key_label(self.key) + ("; its key file too" if self.remove_file else "")]


@dataclass(frozen=True)
class RemoveFile(Change):
    """A key file no live key and no developer stands behind."""

    kind, symbol = "remove-file", "-"
    path: str = ""

    def _data(self) -> dict[str, Any]:
        return {"path": self.path}

    @property
    def risk(self) -> str | None:
        return f"removes {self.path} from the repository"

    def details(self) -> list[str]:
        return [self.path]


@dataclass(frozen=True)
class Release(Change):
    """Let go of a managed key without deleting it (the roster's released:): the tool's marks and proof come off the
    key and off its LiteLLM user, and its key file goes; the key keeps working, as a key made by hand would."""

    kind, symbol = "release", "~"
    key: LiveKey = None  # type: ignore[assignment]
    remove_file: bool = False

    def _data(self) -> dict[str, Any]:
        return {"token_prefix": self.key.token[:12], "alias": self.key.alias, "remove_file": self.remove_file}

    @property
    def risk(self) -> str | None:
        return "lets go of a managed key: it stays on the proxy, and the tool never rotates, expires or deletes it"

    def details(self) -> list[str]:
        gone = "marks and proof" + (" and key file" if self.remove_file else "")
        return [key_label(self.key), f"the key keeps working; its {gone} go"]


@dataclass(frozen=True)
class MoveFile(Change):
    """A key file moved with its key, no new secret: from before the roster declared environments into its
    environment's directory (the key being live on this environment's proxy), or to a renamed developer's name."""

    kind, symbol = "move-file", "~"
    source: str = ""
    target: str = ""
    token: str = ""
    former: str = ""  # a rename: the developer's former name, whose file it was

    def _data(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "token_prefix": self.token[:12]}

    def details(self) -> list[str]:
        return [f"{self.source} -> {self.target}"]


@dataclass(frozen=True)
class RecoverFile(MoveFile):
    """A key file an earlier apply wrote but could not push back (its roster-keys artifact): it holds the developer's
    live key, which the committed file does not, so it is copied back instead of rotating the key again."""

    kind = "recover-file"


def sops_config(desired: dict[str, Desired]) -> str:
    """The delivery directory's .sops.yaml: one creation rule per key file, with the recipients apply encrypts it to.
    With it, an admin's `cd keys && sops updatekeys -y jane.sops.yaml` (sops looks for .sops.yaml from the working
    directory up) gives a file exactly the recipients apply would, and the file is accepted as it is: its proof
    binds only the encrypted value, which updatekeys keeps. Like .gitignore, it is derived from the roster and
    written by apply, not a change to review."""
    lines = ["# Written by litellm-roster on every apply, from the roster: edit the roster, not this file.",
             "creation_rules:" + ("" if desired else " []")]
    for name, want in sorted(desired.items()):
        lines += [f"  - path_regex: '(^|/){name}\\.sops\\.yaml$'", "    encrypted_regex: ^api_key$",
                  "    mac_only_encrypted: true", f"    age: '{','.join(want.recipients)}'"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- desired state


def desired_models(roster: Roster, developer: Developer | Team, catalog: ModelCatalog | None) -> tuple[str, ...]:
    """A developer's (or a team's) models as the proxy is asked to store them: groups expanded, and with
    keys.grant_model_aliases every other name the proxy serves for each (a team the same, or LiteLLM would refuse
    its members' keys the aliases)."""
    models = set(roster.models_for(developer))
    if roster.keys.grant_model_aliases and catalog is not None:
        for name in list(models):
            models |= catalog.aliases_of(name)
    return tuple(sorted(models))


def desired_state(roster: Roster, catalog: ModelCatalog | None, now: datetime,
                  team_ids: dict[str, str] | None = None) -> dict[str, Desired]:
    """Developers whose access has not expired, as keys."""
    admins = [canonical(r) for r in roster.keys.admin_recipients]
    out = {}
    for dev in roster.developers:
        if dev.expires is not None and dev.expires <= now:
            continue
        out[dev.name] = Desired(
            name=dev.name, alias=roster.keys.alias_for(dev.name), models=desired_models(roster, dev, catalog),
            limits=dev.limits, expires=dev.expires, blocked=dev.disabled,
            recipients=tuple(sorted({canonical(dev.recipient), *admins})),
            team=dev.team, team_id=(team_ids or {}).get(dev.team) if dev.team else None)
    return out


def alias_warnings(roster: Roster, catalog: ModelCatalog) -> list[str]:
    """A key scoped to one name of a model is refused for its other names (docs/litellm.md §7): say so."""
    who: dict[tuple[str, str], list[str]] = {}  # one warning per pair of names, listing every developer
    for dev in roster.developers:
        granted = set(desired_models(roster, dev, catalog))
        for name in sorted(granted):
            for other in sorted(catalog.aliases_of(name) - granted):
                who.setdefault((name, other), []).append(dev.name)
    return [f"{', '.join(names)}: {name} and {other} are the same model on this proxy; clients asking for {other} "
            "will be refused (grant it too, or set keys.grant_model_aliases: true)"
            for (name, other), names in sorted(who.items())]


# ---------------------------------------------------------------- diff


def _same_expiry(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= EXPIRY_TOLERANCE


def _proxy_fields(want: Desired, key: LiveKey, team_names: dict[str, str]) -> list[tuple[str, Any, Any]]:
    fields = []
    if key.alias != want.alias:
        fields.append(("key_alias", key.alias, want.alias))
    if tuple(sorted(key.models)) != want.models:
        fields.append(("models", sorted(key.models), list(want.models)))
    for name in LIMIT_FIELDS:
        before, after = getattr(key.limits, name), getattr(want.limits, name)
        if not same_value(before, after):
            fields.append((name, before, after))
    if not _same_expiry(key.expires, want.expires):
        fields.append(("expires", iso(key.expires), iso(want.expires)))
    if key.blocked != want.blocked:
        fields.append(("blocked", key.blocked, want.blocked))
    if key.user_id != want.user_id:
        fields.append(("user_id", key.user_id, want.user_id))
    if key.team_id != want.team_id or (want.team is not None and want.team_id is None):
        fields.append(("team", team_names.get(key.team_id or "", key.team_id), want.team))
    if key.allowed_routes != LLM_ROUTES:
        fields.append(("allowed_routes", list(key.allowed_routes), list(LLM_ROUTES)))
    if key.roster_name != want.name:  # renamed (previously:): the key is re-labelled, same secret
        fields.append(("roster_name", key.roster_name, want.name))
    return fields


def file_document_fields(want: Desired, proxy_url: str | None, environment: str | None = None) -> dict[str, Any]:
    """The readable fields a key file should carry for this developer (issued_at and token are set at issue)."""
    return {"developer": want.name, **({"environment": environment} if environment else {}), "key_alias": want.alias,
            "proxy_url": proxy_url, "models": list(want.models), "expires": iso(want.expires)}


def _file_fields(want: Desired, file: KeyFile | None, proxy_url: str | None, proofs: Proofs,
                 environment: str | None) -> tuple[str, ...]:
    if file is None or file.problem:
        return ()
    wanted = file_document_fields(want, proxy_url, environment)
    names = tuple(k for k, v in wanted.items() if file.fields.get(k) != v)
    if proofs.enabled and (file.name != want.name or not proofs.file_proven(file.name, file)):
        names += ("proof",)  # first use, or a renamed file (its proof names the former developer)
    return names


def _rotation_reason(roster: Roster, dev: Developer, want: Desired, key: LiveKey, file: KeyFile | None,
                     now: datetime, *, delivered: bool = True, proofs: Proofs = NO_PROOFS) -> tuple[str, bool] | None:
    """Why the key must be rotated, and whether that is a revocation (the old key must stop at once), or None."""
    reason = _due(roster, dev, want, key, file, now, delivered=delivered, proofs=proofs)
    if reason is None:
        return None
    return reason, _rotation_requested(dev, key)


def _rotation_requested(dev: Developer, key: LiveKey) -> bool:
    return dev.rotation_requested(key.created_at)


def _due(roster: Roster, dev: Developer, want: Desired, key: LiveKey, file: KeyFile | None, now: datetime, *,
         delivered: bool, proofs: Proofs) -> str | None:
    where = f"{roster.keys.delivery_dir}/{want.name}.sops.yaml"
    if delivered and not key.external:
        if file is None:
            return f"key file {where} is missing: its secret is lost"
        if file.problem:
            return f"key file {where} is {file.problem}"
        if file.token_sha256 != key.token:
            return f"key file {where} does not hold the live key"
        if file.environment not in (None, roster.environment):
            return f"key file {where} belongs to environment {file.environment}"
        # A key file is matched by a hash it states in the clear: only its proof says the secret inside is that one.
        problem = proofs.file_problem(file.name, file, required=key_standing(key, proofs)[0] is Standing.PROVEN)
        if problem:
            return f"key file {where} {problem}: it is not trusted to hold the live key"
        if file.recipients != frozenset(want.recipients):
            added = sorted(set(want.recipients) - file.recipients)
            whom = ", ".join(added) if added else "fewer recipients"  # in full: a reviewer must see whose key it is
            return f"recipient changed to {whom}: the key file must be readable by exactly the roster's recipients"
    issued = key.created_at
    if _rotation_requested(dev, key):
        return f"issued {iso(issued)}, before the rotation requested for {iso(dev.rotate)}"
    return _aged(roster, key, now)


def _aged(roster: Roster, key: LiveKey, now: datetime) -> str | None:
    """The scheduled rotation: the key is older than keys.rotate_after."""
    after, issued = roster.keys.rotate_after, key.created_at
    if after is not None and issued is not None and now - issued >= after:
        return f"older than {format_duration(after)}: issued {iso(issued)}"
    return None


def moved_in(roster: Roster, files: dict[str, KeyFile], legacy: dict[str, KeyFile],
              live_tokens: set[str]) -> tuple[dict[str, KeyFile], list[Change]]:
    """Key files from before environments whose keys are live on this environment's proxy move into its directory
    (the first apply of that environment); the diff reads them as already there. Others stay where they are."""
    moves: list[Change] = []
    merged = dict(files)
    parent = PurePosixPath(roster.keys.delivery_dir).parent
    for name, file in sorted(legacy.items()):
        here = files.get(name)
        if file.problem or file.token_sha256 not in live_tokens or (here and here.token_sha256 != file.token_sha256):
            continue
        merged.setdefault(name, file)
        moves.append(MoveFile(name, f"its key is live on environment {roster.environment}'s proxy",
                              source=str(parent / f"{name}.sops.yaml"),
                              target=f"{roster.keys.delivery_dir}/{name}.sops.yaml", token=file.token_sha256 or ""))
    return merged, moves


def recovered_files(roster: Roster, files: dict[str, KeyFile], found: dict[str, KeyFile], source: str,
                    live_tokens: set[str], proofs: Proofs) -> tuple[dict[str, KeyFile], list[Change], list[str]]:
    """Key files from an apply whose push failed (source: where the operator unpacked them) come back where they
    hold a live key the committed file does not. Only a file whose proof verifies: an artifact is not reviewed, and
    a file without the operator's proof could hold a secret someone else chose."""
    changes: list[Change] = []
    warnings: list[str] = []
    merged = dict(files)
    for name, file in sorted(found.items()):
        here = files.get(name)
        if file.token_sha256 not in live_tokens or (here is not None and here.token_sha256 == file.token_sha256):
            continue  # nothing to recover: its key is gone, or the committed file already holds it
        why = file.problem or ("" if proofs.file_proven(name, file) else "its proof does not verify" if proofs.enabled
                               else "proofs are off (RECONCILE_PROOF_KEY), and only a proven file is put back")
        if why or file.environment != roster.environment:
            warnings.append(f"{source}/{name}.sops.yaml is not recovered: {why or 'another environment'}")
            continue
        merged[name] = file
        changes.append(RecoverFile(name, "an earlier apply made this key and could not push its file",
                                   source=f"{source}/{name}.sops.yaml",
                                   target=f"{roster.keys.delivery_dir}/{name}.sops.yaml", token=file.token_sha256))
    return merged, changes, warnings


def renamed_files(roster: Roster, files: dict[str, KeyFile],
                  current: dict[str, LiveKey]) -> tuple[dict[str, KeyFile], list[Change]]:
    """A renamed developer's key file, under the former name and holding their key, moves to the new name (the diff
    reads it as already there); its readable fields and proof follow with the key's update."""
    moved: list[Change] = []
    merged = dict(files)
    for former, name in sorted(roster.renames.items()):
        file, key = files.get(former), current.get(name)
        if name in files or file is None or file.problem or key is None or file.token_sha256 != key.token:
            continue
        merged[name] = merged.pop(former)
        moved.append(MoveFile(name, f"renamed from {former}: the key file moves with the key",
                              source=f"{roster.keys.delivery_dir}/{former}.sops.yaml",
                              target=f"{roster.keys.delivery_dir}/{name}.sops.yaml", token=key.token, former=former))
    return merged, moved


@dataclass(frozen=True)
class KeyContext:
    """What every developer's diff reads besides their own key, file and roster entry."""

    roster: Roster
    options: Options
    proxy_url: str | None
    team_names: dict[str, str]
    proofs: Proofs
    now: datetime
    live_tokens: frozenset[str]


def _developer_change(ctx: KeyContext, dev: Developer, want: Desired, key: LiveKey | None, hand: LiveKey | None,
                      file: KeyFile | None, olds: list[LiveKey]) -> Change | None:
    """What one roster developer needs, if anything."""
    roster, now, name = ctx.roster, ctx.now, want.name
    drop = tuple(r.token for r in olds)  # their alias is about to be reused by the key being rotated out
    if hand is not None:
        return _handmade_change(ctx, dev, want, key, hand, drop)
    if key is None:
        return _keyless_change(ctx, want, file)
    wanted = frozenset(want.recipients)
    had = file.recipients if file is not None else frozenset()
    reencrypt = ctx.options.reencrypt and file is not None and not file.problem and not key.external and had < wanted
    if reencrypt:  # only added: if nothing else is due, the file is re-encrypted to the larger set, same key
        assert file is not None
        file = replace(file, recipients=wanted)
    due = _rotation_reason(roster, dev, want, key, file, now, proofs=ctx.proofs)
    if due is not None:
        return _rotate(roster, want, key, due[0], drop, now, revocation=due[1],
                       scheduled=due[0] == _aged(roster, key, now))
    fields = _proxy_fields(want, key, ctx.team_names)
    if key_standing(key, ctx.proofs)[0] is Standing.FIRST_USE:
        fields.append(("proof", "missing", "set"))
    if reencrypt:
        added = tuple(sorted(wanted - had))
        return ReEncrypt(name, f"recipients added ({', '.join(added)}): the key file is re-encrypted, same key",
                         desired=want, key=key, fields=tuple(fields), added=added)
    file_fields = () if key.external else _file_fields(want, file, ctx.proxy_url, ctx.proofs, ctx.roster.environment)
    if not fields and not file_fields:
        return None
    what = ", ".join(f for f, _, _ in fields) or "key file fields " + ", ".join(file_fields)
    return Update(name, f"{what} differ from the roster", desired=want, key=key, fields=tuple(fields),
                  file_fields=file_fields)


def _handmade_change(ctx: KeyContext, dev: Developer, want: Desired, key: LiveKey | None, hand: LiveKey,
                     drop: tuple[str, ...]) -> Change:
    roster, options, now, name = ctx.roster, ctx.options, ctx.now, want.name
    if key is not None:
        return Conflict(name, f"a key made by hand holds the alias {want.alias}, which this developer's managed "
                              "key should carry; delete that key or change keys.alias", key=hand)
    if name in options.replace:
        return _rotate(roster, want, hand, "replacing a hand-made key with a delivered one (--replace)", drop, now)
    if not (name in options.adopt or roster.keys.adopt_unmanaged):
        return Conflict(name, f"a key made by hand holds the alias {hand.alias}; re-run with --adopt {name} to take "
                              f"it over, or --replace {name} to rotate it into a delivered key", key=hand)
    if hand.team_id and hand.team_id not in ctx.team_names:
        return Conflict(name, f"a key made by hand holds the alias {hand.alias} but is bound to team "
                              f"{hand.team_id}, which is not the tool's (its admins can relabel its keys): it is "
                              f"not adopted; re-run with --replace {name} to rotate it into a delivered key", key=hand)
    if not ctx.proofs.enabled:
        return Conflict(name, f"a key made by hand holds the alias {hand.alias}; adopting it needs proofs "
                              "(RECONCILE_PROOF_KEY), which nobody else can forge on an adopted key: set it, or "
                              f"re-run with --replace {name} to rotate it into a delivered key", key=hand)
    due = _rotation_reason(roster, dev, want, hand, None, now, delivered=False)
    if due is not None:  # adopting it would only make it due at once: replace it instead
        return _rotate(roster, want, hand, f"hand-made key to adopt is due for rotation: {due[0]}", drop, now,
                       revocation=due[1])
    return Adopt(name, "taking over a hand-made key in place; it keeps its secret", desired=want, key=hand,
                 fields=tuple(_proxy_fields(want, hand, ctx.team_names)))


def _keyless_change(ctx: KeyContext, want: Desired, file: KeyFile | None) -> Change:
    """A developer with no live key: a new one, or with --restore the one their key file holds when it is proven.
    Without --restore a key file with no live key (an interrupted apply, or one committed by hand) is never
    registered: nobody can choose a developer's key. It is replaced."""
    if file is None:
        return Create(want.name, "new in the roster", desired=want)
    where = f"{ctx.roster.keys.delivery_dir}/{want.name}.sops.yaml"
    if not ctx.options.restore:
        return Create(want.name, f"no live key for this developer; a fresh key replaces {where}", desired=want)
    problem = _restore_problem(ctx, want.name, file)
    if problem:
        return Create(want.name, f"no live key for this developer; {where} is not restored ({problem}): a fresh "
                                 "key replaces it", desired=want)
    return Restore(want.name, f"no live key for this developer: registering again the key {where} holds "
                              "(its proof verifies)", desired=want, token=file.token_sha256 or "")


def _restore_problem(ctx: KeyContext, name: str, file: KeyFile) -> str | None:
    if file.problem:
        return file.problem
    if not file.token_sha256:
        return "it names no key hash"
    if file.token_sha256 in ctx.live_tokens:  # registering it again would be a no-op on some versions
        return "its key is on the proxy, but not as this developer's"
    if file.environment != ctx.roster.environment:
        return f"it is for environment {file.environment or 'none'}, not {ctx.roster.environment or 'none'}"
    return ctx.proofs.file_problem(name, file, required=True)


def _rotate(roster: Roster, want: Desired, old: LiveKey, reason: str, drop: tuple[str, ...], now: datetime, *,
            revocation: bool = False, scheduled: bool = False) -> Rotate:
    """The old key keeps working for keys.grace, unless this rotation is a revocation, the grace is 0, or the
    developer is disabled (a blocked key has no use for an overlap)."""
    grace = timedelta(0) if revocation or want.blocked else roster.keys.grace
    return Rotate(want.name, reason, desired=want, old=old, retire_at=now + grace if grace > timedelta(0) else None,
                  drop=drop, grace=grace, revocation=revocation, scheduled=scheduled,
                  retiring_alias=roster.keys.retiring_alias_for(want.name))


def _recipient_risks(changes: list[Change], roster: Roster, files: dict[str, KeyFile]) -> list[Change]:
    """A rotation that gives a developer's new key to a recipient who can already read other keys is how a pull
    request would redirect a key to its author: an admin recipient being added, or a recipient found in another
    developer's key file. Either needs --force; a change to a fresh recipient (a new laptop) is shown in full."""
    admins = {canonical(r) for r in roster.keys.admin_recipients}
    readers: dict[str, set[str]] = {}  # recipient -> the developers whose key files it reads
    for name, other in files.items():
        for r in other.recipients:
            readers.setdefault(r, set()).add(name)
    out: list[Change] = []
    for change in changes:
        file = files.get(change.name)
        if isinstance(change, (Rotate, ReEncrypt)) and file is not None and not file.problem:
            added = set(change.desired.recipients) - file.recipients
            elsewhere = {r for r in added if readers.get(r, set()) - {change.name}}
            new_admins = sorted(added & admins)
            reused = sorted((added - admins) & elsewhere)
            if new_admins:
                change = replace(change, recipient_risk=f"adds admin recipient {', '.join(new_admins)}: it can read "
                                                        "every key from now on")
            elif reused:
                change = replace(change, recipient_risk=f"gives {change.name}'s key to {', '.join(reused)}, which "
                                                        "already reads another developer's key file")
        out.append(change)
    return out


def _unsquatted(changes: list[Change], live: list[LiveKey]) -> tuple[list[Change], list[str]]:
    """A rotation renames the old key to its retiring alias, which anyone who can name a key could take first
    (LiteLLM would refuse the rename, and the rotation would fail every time). When a key the rotation does not
    delete holds it, the old key gets one made unique by its own hash instead, and the plan says so."""
    holders = {k.alias: k.token for k in live if k.alias}
    out, warnings = [], []
    for change in changes:
        if isinstance(change, Rotate) and change.retire_at is not None:
            wanted, alias = change.retiring_alias, change.retiring_alias
            for length in (8, 16, 64):
                holder = holders.get(alias)
                if holder is None or holder in change.drop or holder == change.old.token:
                    break
                alias = f"{wanted}-{change.old.token[:length]}"
            if alias != wanted:
                warnings.append(f"{change.name}: a key the tool did not make holds {wanted}, the alias a rotated-out "
                                f"key takes; this one is renamed {alias} instead (delete that key if it is a squat)")
                change = replace(change, retiring_alias=alias)
        out.append(change)
    return out, warnings


def _retiring_changes(roster: Roster, want: Desired, olds: list[LiveKey], now: datetime,
                      proofs: Proofs) -> list[Change]:
    """Rotated-out keys: deleted when their grace ends (or keys.grace became 0: the overlap ends now), blocked with
    the developer's current key when the roster disables the developer, given their proof when proofs begin."""
    out: list[Change] = []
    for old in olds:
        if old.retire_at is not None and old.retire_at <= now:
            out.append(Delete(want.name, f"grace ended {iso(old.retire_at)}: rotated-out key", key=old))
        elif roster.keys.grace == timedelta(0):
            out.append(Delete(want.name, "keys.grace is 0: the rotated-out key goes now", key=old))
        elif want.blocked and not old.blocked:
            out.append(Update(want.name, "disabled: the rotated-out key is blocked too", desired=want, key=old,
                              fields=(("blocked", False, True),)))
        elif key_standing(old, proofs)[0] is Standing.FIRST_USE:
            out.append(Update(want.name, "proofs begin: the rotated-out key gets its proof", desired=want, key=old,
                              fields=(("proof", "missing", "set"),)))
    return out


def diff_keys(ctx: KeyContext, desired: dict[str, Desired], seen: Classified, files: dict[str, KeyFile],
              waiting: set[str], selected: Callable[[str], bool],
              live: list[LiveKey]) -> tuple[list[Change], list[str], list[tuple[str, datetime]]]:
    """The key changes, warnings, and keys expiring soon. waiting: developers whose keys wait for something a
    conflict of another kind names (their alias, team or user)."""
    roster, now = ctx.roster, ctx.now
    current, retiring, handmade = seen.current, seen.retiring, seen.handmade
    changes: list[Change] = []
    warnings: list[str] = []
    expiring: list[tuple[str, datetime]] = []
    for name in sorted(desired):
        if not selected(name) or name in waiting:  # a Conflict says why
            continue
        want, dev = desired[name], roster.developer(name)
        assert dev is not None
        olds = retiring.get(name, [])
        action = _developer_change(ctx, dev, want, current.get(name), handmade.get(name), files.get(name), olds)
        if not isinstance(action, Rotate):  # a rotation drops every rotated-out key itself
            changes.extend(_retiring_changes(roster, want, olds, now, ctx.proofs))
        file = files.get(name)
        if isinstance(action, Rotate) and action.revocation and file and file.recipients == frozenset(want.recipients):
            warnings.append(f"{name}: rotate: re-issues the key to the same recipient; if the identity behind it was "
                            "lost (a laptop), change the recipient too, or whoever has it reads the new key")
        if name in ctx.options.replace and handmade.get(name) is None:
            warnings.append(f"{name}: --replace applies to a key made by hand, and {name}'s key is the tool's; to "
                            "re-issue it, set rotate: in the roster")
        if action is not None:
            changes.append(action)
        if want.expires is not None and want.expires - now <= roster.keys.expiry_warning:
            expiring.append((name, want.expires))
            warnings.append(f"{name}: key expires in {humanize(want.expires - now)} ({iso(want.expires)})")

    for dev in roster.developers:
        if dev.name not in desired and dev.name not in current and selected(dev.name):
            warnings.append(f"{dev.name}: access expired {iso(dev.expires)}: no key is issued")

    released = {n: k for n, k in current.items() if n in roster.released and n not in desired}
    gone = {n: k for n, k in current.items() if n not in desired and n not in released}
    changes.extend(Release(name, "listed in released: the tool lets go of the key without deleting it", key=key,
                           remove_file=name in files and not files[name].problem)
                   for name, key in sorted(released.items()) if selected(name))
    for name in sorted(set(gone) | {n for n in retiring if n not in desired}
                       | {k.roster_name for k in seen.extra_current if k.roster_name}):
        if not selected(name):
            continue
        dev = roster.developer(name)
        why = f"access expired {iso(dev.expires)}" if dev is not None else "no longer in the roster"
        if name in gone:
            changes.append(Delete(name, why, key=gone[name], remove_file=name in files and not files[name].problem))
        if name not in desired:
            changes.extend(Delete(name, why + ": rotated-out key", key=old) for old in retiring.get(name, []))
        changes.extend(Delete(name, "a second current key for this developer", key=extra)
                       for extra in seen.extra_current if extra.roster_name == name)
    for name, file in sorted(files.items()):
        if selected(name) and name not in desired and name not in gone and name not in released:
            if file.problem:
                warnings.append(f"{file.path.name}: {file.problem}; left alone (the tool removes only its own files)")
            else:
                changes.append(RemoveFile(name, "key file with no developer and no live key", path=str(file.path)))
    for key, problem in seen.unproven:
        name = key.roster_name or key.alias or key.token[:12]
        if selected(name):
            changes.append(Conflict(name, f"{problem}; it is never changed: delete it by hand if it is not wanted",
                                    key=key))
    changes, squatted = _unsquatted(changes, live)
    return _recipient_risks(changes, roster, files), warnings + squatted, expiring
