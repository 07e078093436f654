"""The roster: its dataclasses, and loading roster.yaml with every problem located by file, line and column.

Loading reads the YAML node tree itself (not yaml.safe_load) so that it knows where each value stands, rejects
duplicate keys that PyYAML would silently accept, and bounds what anchors and aliases can expand to.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import Problem, RosterError, closest
from .catalog import is_wildcard
from .recipients import canonical, private_key_kind, private_key_problem, recipient_problem
from .timeutil import parse_duration, parse_instant

MAX_BYTES = 16 * 1024 * 1024
MAX_NODES = 2_000_000  # values visited in all; a roster of 100,000 developers stays far below
MAX_ALIAS_REPEATS = 10_000  # values visited again through aliases: what a YAML bomb multiplies
MAX_DEPTH = 32  # a roster is four levels deep; thousands of levels only exhaust the stack
TOO_DEEP = f"the document nests deeper than {MAX_DEPTH} levels; a roster is a few levels deep: check the brackets"
LIMIT_FIELDS = ("max_budget", "budget_duration", "tpm_limit", "rpm_limit", "max_parallel_requests")
TEAM_FIELDS = ("max_budget", "budget_duration", "tpm_limit", "rpm_limit")
RETIRING_SUFFIX = "--retiring"
# Headers that carry or redirect a credential: Host picks the backend behind a name-based ingress, the rest are
# places LiteLLM (or a gateway in front of it) reads a key from. A roster, which pull requests edit, sets none.
CREDENTIAL_HEADERS = frozenset({"host", "authorization", "proxy-authorization", "cookie", "x-litellm-api-key",
                                "api-key", "x-api-key", "x-goog-api-key", "ocp-apim-subscription-key",
                                "litellm-changed-by"})
DEFAULT_DELIVERY_DIR = "keys"
DEFAULT_EXPIRY_WARNING = "14d"

Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class Limits:
    max_budget: float | None = None
    budget_duration: str | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    max_parallel_requests: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


@dataclass(frozen=True)
class KubeSettings:
    """Where the roster says the proxy and its master key live in a cluster (the operator must confirm the Service)."""

    namespace: str
    context: str | None = None
    service: str | None = None
    port: int | str | None = None
    secret_name: str | None = None
    secret_key: str | None = None


@dataclass(frozen=True)
class ModelRef:
    """A model name where the roster writes it: a developer's or the defaults' models, or a group's member."""

    field: str  # developers[0] (jane).models[1], defaults.models[0], model_groups.claude-code[2]
    name: str
    line: int
    column: int


@dataclass(frozen=True)
class Developer:
    name: str
    recipient: str
    models: tuple[str, ...]  # model and group names as written, defaults applied
    limits: Limits
    expires: datetime | None = None
    rotate: datetime | None = None  # the developer's own, or defaults.rotate, whichever is later
    disabled: bool = False
    team: str | None = None  # the developer's own, or defaults.team
    github: str | None = None  # their GitHub login: mentioned when their key is ready
    previously: str | None = None  # their former name: a rename, not a leaver and a newcomer

    def rotation_requested(self, issued: datetime | None) -> bool:
        """The developer's (or everyone's) rotate: names an instant after a key issued then."""
        return self.rotate is not None and (issued is None or issued < self.rotate)


@dataclass(frozen=True)
class Team:
    """A LiteLLM team the tool owns: its alias is the name."""

    name: str
    models: tuple[str, ...] = ()  # model and group names as written; none means every model the proxy serves
    max_budget: float | None = None
    budget_duration: str | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    member_budget: float | None = None  # each member's budget inside the team (LiteLLM's max_budget_in_team)

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TEAM_FIELDS}


@dataclass(frozen=True)
class KeysConfig:
    alias: str
    rotate_after: timedelta | None = None
    grace: timedelta = timedelta(0)
    expiry_warning: timedelta = timedelta(days=14)
    delivery_dir: str = DEFAULT_DELIVERY_DIR
    admin_recipients: tuple[str, ...] = ()
    grant_model_aliases: bool = False
    adopt_unmanaged: bool = False
    allow_wildcard_models: bool = False
    max_share: float | None = None  # keys.brakes
    max_count: int | None = None

    def alias_for(self, name: str) -> str:
        return self.alias.replace("{name}", name)

    def retiring_alias_for(self, name: str) -> str:
        return self.alias_for(name) + RETIRING_SUFFIX


@dataclass(frozen=True)
class Roster:
    path: str
    sha256: str
    keys: KeysConfig
    developers: tuple[Developer, ...]
    model_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    proxy_url: str | None = None
    proxy_headers: dict[str, str] = field(default_factory=dict)
    kubernetes: KubeSettings | None = None
    model_refs: tuple[ModelRef, ...] = ()  # every model name as written, located; group names excluded
    teams: tuple[Team, ...] = ()
    environment: str | None = None  # the one this roster was read for, when it declares environments
    released: tuple[str, ...] = ()  # names whose keys the tool lets go of without deleting them

    def developer(self, name: str) -> Developer | None:
        return self._by_name.get(name)

    @property
    def renames(self) -> dict[str, str]:
        """Former name -> current name, for developers renamed with previously:."""
        return {d.previously: d.name for d in self.developers if d.previously}

    def team(self, name: str | None) -> Team | None:
        return next((t for t in self.teams if t.name == name), None)

    @property
    def _by_name(self) -> dict[str, Developer]:
        index = self.__dict__.get("_index")
        if index is None:  # frozen dataclass: cache the index beside the fields, built once
            index = {d.name: d for d in self.developers}
            object.__setattr__(self, "_index", index)
        return index

    def models_for(self, holder: Developer | Team) -> tuple[str, ...]:
        """Group names expanded; sorted and unique, as LiteLLM will be asked to store them."""
        names: set[str] = set()
        for ref in holder.models:
            names.update(self.model_groups.get(ref, (ref,)))
        return tuple(sorted(names))

    def all_model_names(self) -> set[str]:
        return {m for holder in (*self.developers, *self.teams) for m in self.models_for(holder)}


# ---------------------------------------------------------------- YAML with locations


class _Located:
    """Where each value and each mapping key stands in the file, by path."""

    def __init__(self) -> None:
        self.values: dict[Path_, tuple[int, int]] = {(): (1, 1)}
        self.keys: dict[Path_, tuple[int, int]] = {}

    def of_value(self, path: Path_) -> tuple[int, int]:
        while path not in self.values:
            path = path[:-1]
        return self.values[path]

    def of_key(self, path: Path_) -> tuple[int, int]:
        return self.keys.get(path) or self.of_value(path)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _yaml_hint(problem: str) -> str:
    if "'\\t'" in problem or "tab" in problem:
        return "indent with spaces, not tabs"
    if "mapping values are not allowed" in problem:
        return "a value containing ': ' needs quotes, or the line above is mis-indented"
    if "could not find expected ':'" in problem:
        return "each field needs a ':' after its name"
    if "found undefined alias" in problem:
        return "define the anchor (&name) before using it (*name)"
    return "fix the YAML syntax at this spot"


class _Builder:
    def __init__(self, filename: str, loader: Any):
        self.filename, self.loader = filename, loader
        self.located = _Located()
        self.problems: list[Problem] = []
        self.nodes = 0
        self.repeats = 0
        self._seen: set[int] = set()
        self.too_deep: tuple[int, int] | None = None

    def problem(self, where: tuple[int, int], field_: str, message: str) -> None:
        self.problems.append(Problem(self.filename, where[0], where[1], field_, message))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.nodes += 1
        if id(node) in self._seen:
            self.repeats += 1
        self._seen.add(id(node))
        if self.nodes > MAX_NODES or self.repeats > MAX_ALIAS_REPEATS:
            raise _TooBig(_mark(node))
        if len(path) > MAX_DEPTH:
            raise _TooDeep(_mark(node))
        self.located.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            explicit = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
            self.loader.flatten_mapping(node)  # resolves '<<' merge keys; explicit keys then override merged ones
            result: dict[Any, Any] = {}
            from_merge: set[str] = set()
            for key_node, value_node in node.value:
                key = self.build_key(key_node, path)
                if key is None:
                    continue
                if id(key_node) not in explicit:
                    from_merge.add(key)
                elif key in from_merge:
                    from_merge.discard(key)
                elif key in result:
                    first = self.located.keys[path + (key,)][0]
                    self.problem(_mark(key_node), _field_name(path + (key,)),
                                 f"duplicate key '{key}' (first at line {first}); remove one of them")
                    continue
                self.located.keys[path + (key,)] = _mark(key_node)
                result[key] = self.build(value_node, path + (key,))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # keep the text; the schema and parse_instant judge it
        return self.loader.construct_object(node)

    def build_key(self, node: yaml.Node, path: Path_) -> str | None:
        value = self.loader.construct_object(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value is None:
            self.problem(_mark(node), _field_name(path), "a field name must be plain text; quote it")
            return None
        return str(value)


class _TooBig(Exception):
    def __init__(self, where: tuple[int, int]):
        self.where = where


class _TooDeep(_TooBig):
    pass


def _read_text(path: Path) -> str:
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RosterError([Problem(name, 1, 1, "", "file not found; pass --roster PATH")]) from None
    except OSError as exc:
        raise RosterError([Problem(name, 1, 1, "", f"cannot read the file: {exc.strerror}")]) from None
    if len(raw) > MAX_BYTES:
        raise RosterError([Problem(name, 1, 1, "", f"file is {len(raw)} bytes, over the {MAX_BYTES}-byte limit; "
                                                   "a roster this large is almost certainly not one")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RosterError([Problem(name, line, column, "",
                                   f"byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8")]) from None


_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: same nodes and marks


def _parse(text: str, filename: str) -> tuple[Any, _Located, list[Problem]]:
    try:
        return _parse_with(_FAST_LOADER, text, filename)
    except RosterError:
        # libyaml's syntax messages are terser ("did not find expected ..."); the pure parser says what it found.
        return _parse_with(yaml.SafeLoader, text, filename)


def _parse_with(loader_class: Any, text: str, filename: str) -> tuple[Any, _Located, list[Problem]]:
    loader = loader_class(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise RosterError([Problem(filename, 1, 1, "", TOO_DEEP)]) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = exc.problem or exc.context or "invalid YAML"
            message = f"YAML syntax error: {problem}; {_yaml_hint(problem)}"
            raise RosterError([Problem(filename, line, col, "", message)]) from None
        except yaml.YAMLError as exc:
            raise RosterError([Problem(filename, 1, 1, "", f"YAML error: {exc}")]) from None
        if node is None:
            raise RosterError([Problem(filename, 1, 1, "", "the file is empty; start from the example roster.yaml")])
        builder = _Builder(filename, loader)
        try:
            data = builder.build(node, ())
        except _TooDeep as deep:
            raise RosterError([Problem(filename, deep.where[0], deep.where[1], "", TOO_DEEP)]) from None
        except _TooBig as big:
            raise RosterError([Problem(filename, big.where[0], big.where[1], "",
                                       "the document expands too far through anchors and aliases (over "
                                       f"{MAX_ALIAS_REPEATS} repeated values); write it out plainly")]) from None
        return data, builder.located, builder.problems
    finally:
        loader.dispose()


def parse_yaml(text: str, filename: str) -> Any:
    """Any YAML file a pull request can change, with the roster's bounds; RosterError when it breaks one."""
    data, _, _ = _parse(text, filename)
    return data


# ---------------------------------------------------------------- schema and semantic checks


@lru_cache(maxsize=1)
def schema_text() -> str:
    # Beside this file in every install (the package is never zipped); importlib.resources would cost a plan 5 ms.
    return (Path(__file__).parent.parent / "schema" / "roster.schema.json").read_text("utf-8")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(schema_text())


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(schema())


def _field_name(path: Path_, data: Any = None) -> str:
    out = ""
    node = data
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f" ({node['name']})"
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    if private_key_kind(text):
        return "(a private key, not shown)"
    return text if len(text) <= 60 else text[:57] + "..."


def _private_key_problems(data: Any, located: _Located, filename: str) -> list[Problem]:
    """A private key pasted anywhere (usually as a recipient): named as one, never echoed."""
    problems = []

    def walk(value: Any, path: Path_) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, path + (i,))
        elif isinstance(value, str) and private_key_kind(value):
            line, col = located.of_value(path)
            problems.append(Problem(filename, line, col, _field_name(path, data), private_key_problem(value)))

    walk(data, ())
    return problems


def _schema_problems(data: Any, located: _Located, filename: str) -> list[Problem]:
    problems = []
    for error in _validator().iter_errors(data):
        path = tuple(error.absolute_path)
        if private_key_kind(json.dumps(error.instance, default=str)):
            continue  # _private_key_problems names it without echoing it
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - set(allowed)):
                close = closest(extra, allowed)
                fix = f"did you mean '{close[0]}'?" if close else f"allowed here: {', '.join(allowed)}"
                line, col = located.of_key(path + (extra,))
                problems.append(Problem(filename, line, col, _field_name(path + (extra,), data),
                                        f"unknown field; {fix}"))
            continue
        line, col = located.of_value(path)
        if "propertyNames" in error.schema_path:  # the error is about a key: point at the key
            path = path + (error.instance,)
            line, col = located.of_key(path)
        if error.validator == "required":
            missing = re.search(r"'([^']+)' is a required property", error.message)
            name = missing.group(1) if missing else "?"
            problems.append(Problem(filename, line, col, _field_name(path + (name,), data),
                                    "missing; this field is required"))
            continue
        hint = error.schema.get("x-hint")
        if error.validator == "type":
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            message = f"{_short(error.instance)} is not of type {expected}"
        elif error.validator == "uniqueItems":
            message = "lists a value twice; remove the repeat"
            hint = None
        elif error.validator == "const":
            message = f"{_short(error.instance)} is not supported"
        else:
            message = f"{_short(error.instance)} is not valid"
        if not hint and error.validator not in ("type", "uniqueItems", "const"):
            message = error.message
        text = f"{message}; {hint}" if hint else message
        problems.append(Problem(filename, line, col, _field_name(path, data), text))
    return problems


def _semantic_problems(data: dict, located: _Located, filename: str) -> list[Problem]:
    problems: list[Problem] = []

    def add(path: Path_, message: str, *, at_key: bool = False) -> None:
        line, col = located.of_key(path) if at_key else located.of_value(path)
        problems.append(Problem(filename, line, col, _field_name(path, data), message))

    keys = data.get("keys") if isinstance(data.get("keys"), dict) else {}
    alias = keys.get("alias")
    if isinstance(alias, str):
        placeholders = re.findall(r"\{[^}]*\}|[{}]", alias)
        if placeholders.count("{name}") != 1 or len(placeholders) != 1:
            add(("keys", "alias"), "the alias template must contain {name} exactly once and no other braces, "
                                   "such as claude-code-{name}")
        elif re.search(r"[\s\x00-\x1f]|\.\.", alias) or alias.endswith(RETIRING_SUFFIX):
            add(("keys", "alias"), f"the alias may not contain spaces, control characters or '..', nor end in "
                                   f"'{RETIRING_SUFFIX}'; use letters, digits, '-', '_' and '.'")
    for i, recipient in enumerate(keys.get("admin_recipients") or []):
        if isinstance(recipient, str) and (why := recipient_problem(recipient)):
            add(("keys", "admin_recipients", i), why)
    delivery = keys.get("delivery_dir")
    if isinstance(delivery, str) and (Path(delivery).is_absolute() or ".." in Path(delivery).parts):
        add(("keys", "delivery_dir"), "use a directory relative to the roster, without '..', such as keys")

    proxy = data.get("proxy") if isinstance(data.get("proxy"), dict) else {}
    headers = proxy.get("headers") if isinstance(proxy.get("headers"), dict) else {}
    for name in headers:
        if isinstance(name, str) and name.lower() in CREDENTIAL_HEADERS:
            add(("proxy", "headers", name), f"the roster may not set {name}: it decides where and as whom the master "
                                            "key is sent; remove it (the proxy URL comes from the operator)",
                at_key=True)

    groups = data.get("model_groups") if isinstance(data.get("model_groups"), dict) else {}
    for group, members in groups.items():
        for i, member in enumerate(members if isinstance(members, list) else []):
            if member in groups:
                add(("model_groups", group, i), f"'{member}' is a group; groups hold model names, not groups: "
                                                f"list its models here instead")

    wildcards_allowed = keys.get("allow_wildcard_models") is True

    def check_wildcard(path: Path_, ref: str) -> None:
        if not wildcards_allowed and is_wildcard(ref):
            add(path, f"'{ref}' grants every model the proxy serves under it; name the models instead, or set "
                      "keys.allow_wildcard_models: true (each such grant then needs apply --force)")

    for group, members in groups.items():
        for i, member in enumerate(members if isinstance(members, list) else []):
            if isinstance(member, str):
                check_wildcard(("model_groups", group, i), member)

    def check_models(path: Path_, refs: Any) -> None:
        for i, ref in enumerate(refs if isinstance(refs, list) else []):
            if not isinstance(ref, str) or ref in groups:
                continue
            check_wildcard(path + (i,), ref)
            close = closest(ref, list(groups), cutoff=0.8) if groups else []  # a model, or a misspelt group?
            if close:
                add(path + (i,), f"unknown model group '{ref}'; did you mean '{close[0]}'?")

    defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
    check_models(("defaults", "models"), defaults.get("models"))
    _check_instant(defaults, ("defaults",), "rotate", add, end_of_day=False)
    _check_budget(defaults, ("defaults",), add)

    teams: dict[str, int] = {}
    for i, team in enumerate(data.get("teams") if isinstance(data.get("teams"), list) else []):
        if not isinstance(team, dict):
            continue
        name = team.get("name")
        if isinstance(name, str):
            if name in teams:
                add(("teams", i, "name"), f"team '{name}' is listed twice (first at line {teams[name]}); team names "
                                          "must be unique")
            else:
                teams[name] = located.of_value(("teams", i, "name"))[0]
        check_models(("teams", i, "models"), team.get("models"))
        _check_budget(team, ("teams", i), add)

    def check_team(path: Path_, obj: dict) -> None:
        team = obj.get("team")
        if isinstance(team, str) and team not in teams:
            close = closest(team, list(teams))
            hint = f"did you mean '{close[0]}'?" if close else \
                f"add it under teams, or name one of: {', '.join(sorted(teams)) or 'none yet'}"
            add(path + ("team",), f"no team '{team}' under teams; {hint}")

    check_team(("defaults",), defaults)
    seen: dict[str, int] = {}
    renamed: dict[str, int] = {}  # former name -> the line that takes it
    current_names = {d.get("name") for d in data.get("developers") or [] if isinstance(d, dict)} \
        if isinstance(data.get("developers"), list) else set()
    # A recipient reads the keys encrypted to it: one per developer, and never an admin's, or a pull request could
    # give one developer's key to another (docs/security.md).
    for i, name in enumerate(data.get("released") or [] if isinstance(data.get("released"), list) else []):
        if name in current_names:
            add(("released", i), f"'{name}' is still a developer in this roster; releasing lets go of the key of a "
                                 "name that is gone: remove the developer's entry, or this one")
    holders: dict[str, str] = {canonical(r): "one of keys.admin_recipients" for r in keys.get("admin_recipients")
                               or [] if isinstance(r, str) and not recipient_problem(r)}
    for i, dev in enumerate(data.get("developers") or [] if isinstance(data.get("developers"), list) else []):
        if not isinstance(dev, dict):
            continue
        path = ("developers", i)
        name = dev.get("name")
        if isinstance(name, str):
            folded = name.casefold()
            if folded.endswith(RETIRING_SUFFIX):  # its alias would be another developer's rotated-out key's
                add(path + ("name",), f"developer names may not end in '{RETIRING_SUFFIX}', which names rotated-out "
                                      "keys; choose another name")
            elif folded in seen:
                add(path + ("name",), f"developer '{name}' is listed twice (first at line {seen[folded]}); "
                                      "names must be unique, ignoring case")
            else:
                seen[folded] = located.of_value(path + ("name",))[0]
        former = dev.get("previously")
        if isinstance(former, str):
            if former in current_names:
                add(path + ("previously",), f"'{former}' is still a developer in this roster; a rename moves a key "
                                            "from a name that is gone: remove that entry, or this field")
            elif former in renamed:
                add(path + ("previously",), f"'{former}' is already renamed (line {renamed[former]}); one entry "
                                            "only may take a former name")
            else:
                renamed[former] = located.of_value(path + ("previously",))[0]
        recipient = dev.get("recipient")
        if isinstance(recipient, str) and (why := recipient_problem(recipient)):
            add(path + ("recipient",), why)
        elif isinstance(recipient, str):
            holder = holders.setdefault(canonical(recipient), f"developer {name}'s")
            if holder != f"developer {name}'s":
                add(path + ("recipient",), f"this recipient is already {holder}: each developer needs their own "
                                           "(age-keygen makes one), or they could read each other's keys")
        check_models(path + ("models",), dev.get("models"))
        if "models" not in dev and "models" not in defaults:
            add(path, "no models: list them here under models, or set defaults.models")
        _check_instant(dev, path, "expires", add, end_of_day=True)
        _check_instant(dev, path, "rotate", add, end_of_day=False)
        _check_budget(dev, path, add)
        check_team(path, dev)
    return problems


def _check_instant(obj: dict, path: Path_, name: str, add: Any, *, end_of_day: bool) -> None:
    value = obj.get(name)
    if isinstance(value, str):
        try:
            parse_instant(value, end_of_day=end_of_day)
        except ValueError:
            add(path + (name,), f"'{value}' is not a real date; write a date (2027-03-31) "
                                "or a UTC time (2027-03-31T09:00:00Z)")


def _check_budget(obj: dict, path: Path_, add: Any) -> None:
    value = obj.get("max_budget")
    if isinstance(value, float) and not math.isfinite(value):
        add(path + ("max_budget",), "a budget must be a finite number of USD")


# ---------------------------------------------------------------- building the dataclasses


def _developer(dev: dict, defaults: dict) -> Developer:
    limits = {name: dev.get(name, defaults.get(name)) for name in LIMIT_FIELDS}
    own_rotate = parse_instant(dev["rotate"], end_of_day=False) if dev.get("rotate") else None
    all_rotate = parse_instant(defaults["rotate"], end_of_day=False) if defaults.get("rotate") else None
    rotates = [r for r in (own_rotate, all_rotate) if r is not None]
    return Developer(
        name=dev["name"],
        recipient=dev["recipient"],
        models=tuple(dev.get("models", defaults.get("models", ()))),
        limits=Limits(**limits),
        expires=parse_instant(dev["expires"], end_of_day=True) if dev.get("expires") else None,
        rotate=max(rotates) if rotates else None,
        disabled=bool(dev.get("disabled", False)),
        team=dev.get("team", defaults.get("team")),
        github=dev.get("github"),
        previously=dev.get("previously"),
    )


def environments_of(text: str, filename: str = "roster.yaml") -> list[str]:
    """The environments a roster declares (none: []); the roster is checked whole by parse_roster, per environment."""
    data, _, _ = _parse(text, filename)
    envs = data.get("environments") if isinstance(data, dict) else None
    return [str(name) for name in envs] if isinstance(envs, dict) else []


def parse_roster(text: str, filename: str = "roster.yaml", environment: str | None = None) -> Roster:
    """Parse and check a roster, as seen by one environment when it declares environments (then one must be
    named). Raises RosterError with every problem found, ConfigError for a missing or unknown environment."""
    data, located, problems = _parse(text, filename)
    if not isinstance(data, dict):
        raise RosterError([Problem(filename, 1, 1, "", "the roster must be a mapping with version, keys and "
                                                       "developers; start from the example roster.yaml")])
    problems += _private_key_problems(data, located, filename)
    problems += _schema_problems(data, located, filename)
    problems += _environment_problems(data, located, filename)
    if not problems:
        data = _environment_view(data, located, filename, environment)
    flagged = {(p.line, p.column) for p in problems}
    # A value the schema already rejected needs no second message from the deeper checks.
    problems += [p for p in _semantic_problems(data, located, filename) if (p.line, p.column) not in flagged
                 or "listed twice" in p.message]
    if problems:
        raise RosterError(problems)
    keys, defaults = data["keys"], data.get("defaults", {})
    proxy = data.get("proxy", {})
    return Roster(
        path=filename,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        keys=KeysConfig(
            alias=keys["alias"],
            rotate_after=parse_duration(str(keys["rotate_after"])) if keys.get("rotate_after") not in (None, "0", 0)
            else None,
            grace=parse_duration(str(keys.get("grace", "0"))),
            expiry_warning=parse_duration(str(keys.get("expiry_warning", DEFAULT_EXPIRY_WARNING))),
            delivery_dir=keys.get("delivery_dir", DEFAULT_DELIVERY_DIR),
            admin_recipients=tuple(keys.get("admin_recipients", ())),
            grant_model_aliases=bool(keys.get("grant_model_aliases", False)),
            adopt_unmanaged=bool(keys.get("adopt_unmanaged", False)),
            allow_wildcard_models=bool(keys.get("allow_wildcard_models", False)),
            max_share=keys.get("brakes", {}).get("max_share"),
            max_count=keys.get("brakes", {}).get("max_count"),
        ),
        developers=tuple(_developer(dev, defaults) for dev in data["developers"]
                         if environment is None or environment in dev.get("environments", (environment,))),
        model_groups={name: tuple(members) for name, members in data.get("model_groups", {}).items()},
        proxy_url=proxy.get("url"),
        proxy_headers=dict(proxy.get("headers", {})),
        kubernetes=_kube_settings(proxy.get("kubernetes")),
        model_refs=tuple(_model_refs(data, located)),
        teams=tuple(Team(name=t["name"], models=tuple(t.get("models", ())), member_budget=t.get("member_budget"),
                         **{f: t.get(f) for f in TEAM_FIELDS}) for t in data.get("teams", ())),
        environment=environment,
        released=tuple(data.get("released", ())),
    )


def _environment_problems(data: dict, located: _Located, filename: str) -> list[Problem]:
    problems: list[Problem] = []
    environments = data.get("environments") if isinstance(data.get("environments"), dict) else {}

    def add(path: Path_, message: str) -> None:
        line, col = located.of_value(path)
        problems.append(Problem(filename, line, col, _field_name(path, data), message))

    if environments and "proxy" in data:
        add(("proxy",), f"with environments, each names its own proxy: move this under environments.<name>.proxy "
                        f"(environments: {', '.join(environments)})")
    developers = data.get("developers") if isinstance(data.get("developers"), list) else []
    for i, dev in enumerate(developers):
        names = dev.get("environments") if isinstance(dev, dict) else None
        for j, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in environments:
                close = closest(name, list(environments))
                add(("developers", i, "environments", j), f"no environment '{name}' under environments; " + (
                    f"did you mean '{close[0]}'?" if close else
                    f"name one of: {', '.join(environments)}" if environments else "declare it there first"))
    return problems


def _environment_view(data: dict, located: _Located, filename: str, environment: str | None) -> dict:
    """The roster as one environment sees it: its proxy, its model groups and defaults over the roster's, and its
    own key directory (keys/<environment>/). The values taken from the environment keep their places in the file,
    so every message still points at the line that says it."""
    from ..errors import ConfigError

    envs = data.get("environments") or {}
    if not envs:
        if environment is not None:
            raise ConfigError(f"{filename} declares no environments; run without --environment "
                              "(and RECONCILE_ENVIRONMENT)")
        return data
    if environment is None or environment not in envs:
        given = "names none" if environment is None else f"names '{environment}'"
        raise ConfigError(f"{filename} declares environments {', '.join(envs)}; the run {given}: choose one with "
                          "--environment NAME (or RECONCILE_ENVIRONMENT)")
    section = envs[environment] or {}
    base = ("environments", environment)
    for table in (located.values, located.keys):
        for place, where in list(table.items()):
            if place[:2] == base and len(place) > 3:
                table[place[2:]] = where
    view = {k: v for k, v in data.items() if k != "environments"}
    if "proxy" in section:
        view["proxy"] = section["proxy"]
        located.values[("proxy",)] = located.of_value(base + ("proxy",))
    view["model_groups"] = {**data.get("model_groups", {}), **section.get("model_groups", {})}
    view["defaults"] = {**data.get("defaults", {}), **section.get("defaults", {})}
    keys = data["keys"]
    view["keys"] = {**keys, "delivery_dir": f"{keys.get('delivery_dir', DEFAULT_DELIVERY_DIR)}/{environment}"}
    return view


def _model_refs(data: dict, located: _Located) -> list[ModelRef]:
    groups = data.get("model_groups", {})
    places: list[tuple[Any, ...]] = [("model_groups", g) for g in groups] + [("defaults", "models")]
    places += [("developers", i, "models") for i, d in enumerate(data["developers"]) if "models" in d]
    places += [("teams", i, "models") for i, t in enumerate(data.get("teams", ())) if "models" in t]
    out = []
    for place in places:
        node: Any = data
        for part in place:
            node = node[part] if isinstance(part, int) else node.get(part, {})
        for j, name in enumerate(node or []):
            if place[0] == "model_groups" or name not in groups:
                line, column = located.of_value(place + (j,))
                out.append(ModelRef(_field_name(place + (j,), data), name, line, column))
    return out


def _kube_settings(kube: dict | None) -> KubeSettings | None:
    if not kube:
        return None
    secret = kube.get("master_key_secret") or {}
    return KubeSettings(namespace=kube["namespace"], context=kube.get("context"), service=kube.get("service"),
                        port=kube.get("port"), secret_name=secret.get("name"), secret_key=secret.get("key"))


def read_roster_text(path: str | Path) -> str:
    return _read_text(Path(path))


def load_roster(path: str | Path, environment: str | None = None) -> Roster:
    path = Path(path)
    return parse_roster(_read_text(path), str(path), environment)
