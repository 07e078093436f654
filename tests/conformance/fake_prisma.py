"""An in-memory stand-in for LiteLLM's Prisma client, so LiteLLM's real key routes and auth run without PostgreSQL.

It reads LiteLLM's own schema.prisma for tables, column types and defaults, keeps rows in dicts, evaluates Prisma's
`where` operators, and answers the three raw-SQL spots the key routes and auth use. It subclasses
LiteLLM's PrismaClient without running its constructor (which needs the generated Prisma client), so LiteLLM's own
get_data/insert_data/update_data/delete_data run on top of it.

Not covered (the conformance tests do not need them): relations in `include` other than returning None, `distinct`,
group_by, aggregate, and the raw SQL of other routes (answered with nothing).
"""

from __future__ import annotations

import copy
import json
import re
import sys
import types
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


class Record(dict):
    """A row as Prisma returns it: attribute access, model_dump() and dict()."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return copy.deepcopy(dict(self))

    dict = model_dump  # type: ignore[assignment]

    def model_dump_json(self, **_: Any) -> str:
        return json.dumps(self.model_dump(), default=str)

    json = model_dump_json  # type: ignore[assignment]


def _parse_schema(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    """model name -> column -> {type, list, optional, default, updated_at, id}; relations left out."""
    models: dict[str, dict[str, dict[str, Any]]] = {}
    scalar = {"String", "Int", "BigInt", "Float", "Boolean", "DateTime", "Json", "Decimal", "Bytes"}
    for name, body in re.findall(r"^model (\w+) \{(.*?)^\}", text, re.S | re.M):
        columns = {}
        for line in body.splitlines():
            line = line.split("//")[0].strip()
            m = re.match(r"^(\w+)\s+(\w+)(\[\])?(\?)?(.*)$", line)
            if not m or m.group(2) not in scalar:
                continue
            rest = m.group(5)
            default = re.search(r"@default\((.*?)\)(?:\s|$)", rest + " ")
            columns[m.group(1)] = {"type": m.group(2), "list": bool(m.group(3)), "optional": bool(m.group(4)),
                                   "default": default.group(1) if default else None,
                                   "updated_at": "@updatedAt" in rest, "id": "@id" in rest}
        models[name] = columns
    return models


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _default(column: dict[str, Any]) -> Any:
    raw = column["default"]
    if raw is None:
        return [] if column["list"] else None
    if raw in ("now()",):
        return _now()
    if raw in ("uuid()", "cuid()", "dbgenerated(\"gen_random_uuid()\")"):
        return str(uuid.uuid4())
    if raw == "autoincrement()":
        return None
    if raw == "[]":
        return []
    if raw.startswith('"'):
        value = json.loads(raw)
        return json.loads(value) if column["type"] == "Json" else value
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return int(raw) if column["type"] in ("Int", "BigInt") else float(raw)
    except ValueError:
        return raw  # an enum value


def _coerce(column: dict[str, Any] | None, value: Any) -> Any:
    """What Prisma would store and hand back: JSON strings parsed, ISO strings as datetimes, BigInt as int."""
    if column is None or value is None:
        return value
    kind = column["type"]
    if kind == "Json" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if kind == "DateTime" and isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    if kind == "DateTime" and isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    if kind in ("Int", "BigInt") and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _compare(have: Any, op: str, want: Any, insensitive: bool) -> bool:
    if insensitive and isinstance(have, str) and isinstance(want, str):
        have, want = have.lower(), want.lower()
    if op == "equals":
        return have == want
    if op == "not":
        return not _matches_value(have, want, insensitive) if isinstance(want, dict) else have != want
    if op == "in":
        return have in want
    if op == "not_in":
        return have not in want
    if op == "contains":
        return isinstance(have, str) and want in have
    if op == "startswith":
        return isinstance(have, str) and have.startswith(want)
    if op == "endswith":
        return isinstance(have, str) and have.endswith(want)
    if op in ("lt", "lte", "gt", "gte"):
        if have is None:
            return False
        if isinstance(have, datetime) and isinstance(want, str):
            want = _coerce({"type": "DateTime"}, want)
        if isinstance(want, datetime) and want.tzinfo is None:
            want = want.replace(tzinfo=timezone.utc)
        return {"lt": have < want, "lte": have <= want, "gt": have > want, "gte": have >= want}[op]
    if op == "has":
        return want in (have or [])
    if op == "hasSome":
        return bool(set(have or []) & set(want))
    if op == "hasEvery":
        return set(want) <= set(have or [])
    if op == "isEmpty":
        return (not have) == want
    if op == "path":  # JSON path filters: not needed by the key routes
        return True
    raise NotImplementedError(f"where operator {op}")


def _matches_value(have: Any, want: Any, insensitive: bool = False) -> bool:
    if isinstance(want, dict):
        insensitive = want.get("mode") == "insensitive"
        return all(_compare(have, op, value, insensitive) for op, value in want.items() if op != "mode")
    return have == want


def matches(row: dict[str, Any], where: dict[str, Any] | None) -> bool:
    for key, want in (where or {}).items():
        if key == "AND":
            if not all(matches(row, w) for w in (want if isinstance(want, list) else [want])):
                return False
        elif key == "OR":
            if not any(matches(row, w) for w in want):
                return False
        elif key == "NOT":
            if any(matches(row, w) for w in (want if isinstance(want, list) else [want])):
                return False
        elif key not in row and isinstance(want, dict) and "_" in key and all(k in row for k in want):
            if not all(row[k] == v for k, v in want.items()):  # a compound unique key: {"a_b": {"a":.., "b":..}}
                return False
        elif not _matches_value(row.get(key), want):
            return False
    return True


class Table:
    def __init__(self, name: str, columns: dict[str, dict[str, Any]]):
        self.name, self.columns = name, columns
        self.rows: list[dict[str, Any]] = []

    def _new_row(self, data: dict[str, Any]) -> dict[str, Any]:
        row = {name: _default(col) for name, col in self.columns.items()}
        row.update(self._values(data))
        return row

    def _values(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in data.items():
            column = self.columns.get(key)
            if column is None:
                continue  # relation writes ({"connect": ...}) and unknown keys: not stored
            if isinstance(value, dict) and set(value) <= {"set", "increment", "decrement", "push"}:
                out[key] = value  # resolved against the row in _apply
            else:
                out[key] = _coerce(column, value)
        return out

    def _apply(self, row: dict[str, Any], data: dict[str, Any]) -> None:
        for key, value in self._values(data).items():
            if isinstance(value, dict) and set(value) <= {"set", "increment", "decrement", "push"}:
                if "set" in value:
                    row[key] = _coerce(self.columns[key], value["set"])
                elif "increment" in value:
                    row[key] = (row.get(key) or 0) + value["increment"]
                elif "decrement" in value:
                    row[key] = (row.get(key) or 0) - value["decrement"]
                else:
                    row[key] = list(row.get(key) or []) + list(value["push"] if isinstance(value["push"], list)
                                                                else [value["push"]])
            else:
                row[key] = value
        for key, column in self.columns.items():
            if column["updated_at"]:
                row[key] = _now()

    @staticmethod
    def _out(row: dict[str, Any] | None, include: Any = None) -> Record | None:
        if row is None:
            return None
        record = Record(copy.deepcopy(row))
        for relation in (include or {}):
            record.setdefault(relation, None)
        return record

    def _find(self, where: dict[str, Any] | None) -> list[dict[str, Any]]:
        return [row for row in self.rows if matches(row, where)]

    async def find_unique(self, where: dict[str, Any], include: Any = None, **_: Any) -> Record | None:
        found = self._find(where)
        return self._out(found[0] if found else None, include)

    async def find_unique_or_raise(self, where: dict[str, Any], include: Any = None, **_: Any) -> Record:
        found = await self.find_unique(where, include)
        if found is None:
            raise LookupError(f"{self.name}: no row for {where}")
        return found

    async def find_first(self, where: dict[str, Any] | None = None, order: Any = None, include: Any = None,
                         skip: int | None = None, **_: Any) -> Record | None:
        rows = await self.find_many(where=where, order=order, include=include, skip=skip, take=1)
        return rows[0] if rows else None

    async def find_many(self, where: dict[str, Any] | None = None, skip: int | None = None, take: int | None = None,
                        order: Any = None, include: Any = None, **_: Any) -> list[Record]:
        rows = self._find(where)
        for spec in reversed(order if isinstance(order, list) else [order] if order else []):
            for key, direction in reversed(list(spec.items())):
                present = [r for r in rows if r.get(key) is not None]
                missing = [r for r in rows if r.get(key) is None]
                present.sort(key=lambda r: r[key], reverse=direction == "desc")
                rows = present + missing if direction == "asc" else missing + present
        rows = rows[skip or 0:]
        if take is not None:
            rows = rows[:take]
        return [self._out(r, include) for r in rows]

    async def count(self, where: dict[str, Any] | None = None, **_: Any) -> int:
        return len(self._find(where))

    async def create(self, data: dict[str, Any], include: Any = None, **_: Any) -> Record:
        row = self._new_row(data)
        self.rows.append(row)
        return self._out(row, include)

    async def create_many(self, data: list[dict[str, Any]], skip_duplicates: bool = False, **_: Any) -> int:
        for item in data:
            self.rows.append(self._new_row(item))
        return len(data)

    async def upsert(self, where: dict[str, Any], data: dict[str, Any], include: Any = None, **_: Any) -> Record:
        found = self._find(where)
        if found:
            self._apply(found[0], data.get("update", {}))
            return self._out(found[0], include)
        return await self.create({**where, **data.get("create", {})}, include)

    async def update(self, where: dict[str, Any], data: dict[str, Any], include: Any = None, **_: Any):
        found = self._find(where)
        if not found:
            return None
        self._apply(found[0], data)
        return self._out(found[0], include)

    async def update_many(self, where: dict[str, Any] | None = None, data: dict[str, Any] | None = None, **_: Any):
        found = self._find(where)
        for row in found:
            self._apply(row, data or {})
        return len(found)

    async def delete(self, where: dict[str, Any], **_: Any) -> Record | None:
        found = self._find(where)
        if found:
            self.rows.remove(found[0])
        return self._out(found[0] if found else None)

    async def delete_many(self, where: dict[str, Any] | None = None, **_: Any) -> int:
        found = self._find(where)
        for row in found:
            self.rows.remove(row)
        return len(found)

    async def group_by(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


_COMBINED_VIEW = '"LiteLLM_VerificationToken" AS v'


class FakeDB:
    """`prisma_client.db`: one Table per model, by Prisma's lower-case accessor name, plus raw SQL."""

    def __init__(self, schema: dict[str, dict[str, dict[str, Any]]]):
        self.tables = {name.lower(): Table(name, columns) for name, columns in schema.items()}
        self.raw_calls: list[str] = []

    def __getattr__(self, name: str) -> Table:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)

    def tx(self, *_: Any, **__: Any) -> FakeDB:
        return self

    async def __aenter__(self) -> FakeDB:
        return self

    async def __aexit__(self, *exc: object) -> bool:
        return False

    def is_connected(self) -> bool:
        return True

    async def connect(self, *_: Any, **__: Any) -> None:
        return None

    async def disconnect(self) -> None:
        return None

    async def query_first(self, query: str, *args: Any) -> dict[str, Any] | None:
        sql = query  # LiteLLM <= 1.80 passes it by keyword, with the token inlined instead of as an argument
        self.raw_calls.append(sql.split("FROM")[-1][:60])
        inlined = re.search(r"token\s*=\s*'([0-9a-f]{64})'", sql)
        token = args[0] if args else inlined.group(1) if inlined else None
        if _COMBINED_VIEW in sql and token:
            found = [r for r in self.tables["litellm_verificationtoken"].rows if r["token"] == token]
            if not found:
                return None
            view = json.loads(json.dumps(found[0], default=lambda v: v.isoformat()))
            for name in re.findall(r" AS (\w+)", sql.split("FROM")[0], re.I):
                view.setdefault(name, None)
            view["org_id"] = found[0].get("organization_id")
            return view
        return None

    async def query_raw(self, sql: str, *args: Any) -> list[Any]:
        self.raw_calls.append(sql[:60])
        return []

    async def execute_raw(self, sql: str, *args: Any) -> int:
        self.raw_calls.append(sql[:60])
        return 0


class _ErrorsModule(types.ModuleType):
    """`prisma.errors` and `prisma.engine.errors`: LiteLLM's error classifier imports them on every failed request
    (to tell a database outage from a bad request). Any class it names is an Exception subclass nothing raises."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (Exception,), {})
        setattr(self, name, cls)
        return cls


def _install_prisma_package() -> None:
    if "prisma" in sys.modules:
        return
    package = types.ModuleType("prisma")
    engine = types.ModuleType("prisma.engine")
    package.errors = _ErrorsModule("prisma.errors")  # type: ignore[attr-defined]
    engine.errors = _ErrorsModule("prisma.engine.errors")  # type: ignore[attr-defined]
    package.engine = engine  # type: ignore[attr-defined]
    package.Json = _json  # type: ignore[attr-defined]  # /user/new wraps JSON columns in it; the stand-in stores values
    sys.modules.update({"prisma": package, "prisma.errors": package.errors, "prisma.engine": engine,
                        "prisma.engine.errors": engine.errors})


def _json(data: Any) -> Any:
    return data


def install(proxy_server: Any) -> Any:
    """Replace the proxy's (absent) database with the stand-in."""
    from litellm.proxy.utils import PrismaClient

    _install_prisma_package()

    schema_path = Path(proxy_server.__file__).parent / "schema.prisma"

    class FakePrismaClient(PrismaClient):
        def __init__(self) -> None:  # PrismaClient's own needs the generated client; none of it is used here
            self.proxy_logging_obj = proxy_server.proxy_logging_obj
            self.db = FakeDB(_parse_schema(schema_path.read_text()))
            self.token_auth = None
            self.iam_token_db_auth = False
            self.baseline_accounting_transactions = []

        @property
        def writer_db(self) -> FakeDB:  # type: ignore[override]
            return self.db

        @property
        def read_db(self) -> FakeDB:  # type: ignore[override]
            return self.db

        def tx(self, *args: Any, **kwargs: Any) -> FakeDB:  # type: ignore[override]
            return self.db

        async def _query_first_with_cached_plan_fallback(self, sql_query: str, *args: Any) -> dict | None:
            return await self.db.query_first(sql_query, *args)

        async def health_check(self) -> bool:  # type: ignore[override]
            return True

        async def connect(self) -> None:  # type: ignore[override]
            return None

        async def disconnect(self) -> None:  # type: ignore[override]
            return None

    client = FakePrismaClient()
    proxy_server.prisma_client = client
    return client
