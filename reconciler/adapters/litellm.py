"""The LiteLLM key API, over httpx: paged listing, generate, update, delete, block, models. Retries, errors.

Every route and quirk used here is in docs/litellm.md; section numbers are cited where the code depends on one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import AuthError, ProxyError
from ..redact import REDACT

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
TESTED_VERSIONS = ("1.74.15", "1.110.2")  # the oldest and newest LiteLLM the conformance tier runs (README)
MAX_BODY = 16 * 1024 * 1024  # a page of 100 full key objects is about 100 KB; anything near this is not LiteLLM


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read whole within the size and time bounds."""

    status: int
    content_type: str
    content: bytes
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.content)


def error_message(answer: Answer) -> str:
    """LiteLLM's message out of whichever of its error shapes came back (docs/litellm.md §6). A successful answer
    that is not JSON is described, never quoted: it could echo the request, credentials included."""
    try:
        body = answer.json()
    except ValueError:
        kind = answer.content_type.split(";")[0] or "no content type"
        if answer.ok:
            return f"the proxy answered {kind}, not JSON; is the URL a LiteLLM proxy?"
        snippet = REDACT.shorten(answer.content.decode("utf-8", "replace"), 120)
        return f"the proxy answered {kind}, not JSON ({snippet!r}); is the URL a LiteLLM proxy?"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message") is not None:
            message = str(error["message"])
            quoted = re.fullmatch(r"""\{'error': (['"])(.*)\1\}""", message, re.S)  # a str()-ed dict (§6 quirk)
            return REDACT.shorten(quoted.group(2) if quoted else message, 300)
        detail = body.get("detail")
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    where = ".".join(str(p) for p in item.get("loc", []))
                    parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
            return REDACT.shorten("; ".join(parts) or "validation error", 300)
        if detail is not None:
            return REDACT.shorten(str(detail), 300)
    return f"unexpected error body: {REDACT.shorten(json.dumps(body, default=str), 120)}"


def shape_error(route: str, what: str) -> ProxyError:
    """An answer of the wrong shape: a one-line error naming the route and what was wrong."""
    return ProxyError(route, 200, f"unexpected answer: {what}; is this a LiteLLM proxy?")


@dataclass(frozen=True)
class Listing:
    """One of LiteLLM's paged listings: where it is, and what its pages call things."""

    path: str
    items: str
    ident: str
    total: str
    size_param: str
    what: str
    params: dict[str, str]

    @property
    def route(self) -> str:
        return f"GET {self.path}"


KEY_LISTING = Listing("/key/list", "keys", "token", "total_count", "size", "key",
                      {"return_full_object": "true", "sort_by": "token", "sort_order": "asc"})
# Ordered by user_id where the version sorts (unique, so pages cannot overlap); the count check covers the rest.
USER_LISTING = Listing("/user/list", "users", "user_id", "total", "page_size", "user",
                       {"sort_by": "user_id", "sort_order": "asc"})


@dataclass(frozen=True)
class Identity:
    """Whose credential the client holds, as the proxy sees it."""

    master: bool
    user_id: str | None = None
    role: str | None = None


@dataclass
class RequestStats:
    """What a run cost the proxy: for benchmarks and for the run summary."""

    requests: int = 0
    retries: int = 0


class LiteLLMClient:
    PAGE_SIZE = 100  # the most /key/list allows (§3)
    TIMEOUT = httpx.Timeout(15.0, connect=5.0)
    MAX_ATTEMPTS = 4
    BACKOFF_BASE = 0.25
    BACKOFF_CAP = 8.0
    LIST_CONCURRENCY = 8
    MAX_PAGES = 5_000  # 500,000 keys: far past any roster's proxy, and still bounded memory

    def __init__(self, base_url: str, master_key: str, *, headers: dict[str, str] | None = None,
                 actor: str | None = None, timeout: httpx.Timeout | float | None = None,
                 transport: httpx.BaseTransport | None = None, verify: bool | str = True):
        if not master_key:
            raise AuthError("setup", None, "no master key: set LITELLM_MASTER_KEY")
        REDACT.add(master_key, *(headers or {}).values())
        base_headers = {**(headers or {}), "Authorization": f"Bearer {master_key}", "Accept": "application/json"}
        if actor:
            base_headers["litellm-changed-by"] = actor  # LiteLLM's audit trail (§9)
        self.base_url = base_url.rstrip("/")
        self.stats = RequestStats()
        timeout = httpx.Timeout(timeout) if isinstance(timeout, (int, float)) else timeout or self.TIMEOUT
        # The whole of one attempt, not just each read: a proxy that drips a byte a second never trips a read timeout.
        self._deadline = 2 * (timeout.read or self.TIMEOUT.read or 15.0)
        # An http:// proxy never speaks TLS (redirects are not followed), so loading the CA store (a fifth of a
        # plan's start-up at 100 keys) is skipped for it.
        tls = self.base_url.startswith("https://")
        self._http = httpx.Client(base_url=self.base_url, headers=base_headers, timeout=timeout,
                                  transport=transport, verify=verify if tls else False,
                                  limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LiteLLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transport

    def _sleep_before_retry(self, attempt: int, answer: Answer | None) -> None:
        delay = min(self.BACKOFF_CAP, self.BACKOFF_BASE * 2 ** attempt) * random.uniform(0.5, 1.0)
        if answer is not None and (after := answer.retry_after):
            try:
                delay = min(self.BACKOFF_CAP, max(0.0, float(after)))
            except ValueError:
                pass
        self.stats.retries += 1
        time.sleep(delay)

    def request(self, method: str, route: str, *, params: dict | None = None, body: Any = None,
                auth: str | None = None, retry: bool = True) -> Any:
        """One call; JSON back, or ProxyError. `retry` only for calls that are safe to repeat."""
        route_name = f"{method} {route}"
        headers = {"Authorization": f"Bearer {auth}"} if auth else None
        attempts = self.MAX_ATTEMPTS if retry else 1
        for attempt in range(attempts):
            answer = None
            try:
                self.stats.requests += 1
                answer = self._send(route_name, method, route, params, body, headers)
            except httpx.TransportError as exc:
                if attempt + 1 < attempts:
                    log.debug("%s: %s; retrying", route_name, type(exc).__name__)
                    self._sleep_before_retry(attempt, None)
                    continue
                raise ProxyError(route_name, None, self._describe_transport_error(exc, attempts)) from None
            if answer.status in RETRY_STATUSES and attempt + 1 < attempts:
                log.debug("%s: HTTP %s; retrying", route_name, answer.status)
                self._sleep_before_retry(attempt, answer)
                continue
            break
        assert answer is not None
        if answer.ok:
            try:
                return answer.json()
            except ValueError:
                raise ProxyError(route_name, answer.status, error_message(answer)) from None
        error_type = AuthError if answer.status in (401, 403) and auth is None else ProxyError
        raise error_type(route_name, answer.status, error_message(answer))

    def _send(self, route_name: str, method: str, route: str, params: dict | None, body: Any,
              headers: dict[str, str] | None) -> Answer:
        """One attempt, its answer read whole, but never more than MAX_BODY bytes or longer than the deadline."""
        deadline = time.monotonic() + self._deadline
        with self._http.stream(method, route, params=params, json=body, headers=headers) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY:
                raise ProxyError(route_name, response.status_code, f"the answer is {int(declared):,} bytes, over "
                                 f"the {MAX_BODY:,}-byte limit; is this a LiteLLM proxy?")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_BODY:
                    raise ProxyError(route_name, response.status_code, f"the answer passed the {MAX_BODY:,}-byte "
                                     "limit; is this a LiteLLM proxy?")
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"the answer took over {self._deadline:g} s")
                chunks.append(chunk)
            return Answer(response.status_code, response.headers.get("content-type", ""), b"".join(chunks),
                          response.headers.get("retry-after"))

    def _describe_transport_error(self, exc: httpx.TransportError, attempts: int) -> str:
        text = REDACT.shorten(str(exc) or type(exc).__name__, 200)
        if isinstance(exc, httpx.ConnectError):
            if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
                return f"TLS failed for {self.base_url}: {text}; check the certificate, or pass --ca-bundle"
            return f"cannot connect to {self.base_url} ({text}); is the proxy running, and is the URL right?"
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out talking to {self.base_url} after {attempts} attempt{'s' if attempts > 1 else ''}"
        return f"{type(exc).__name__} talking to {self.base_url}: {text}"

    # ------------------------------------------------------------ reads

    def list_keys(self) -> list[dict[str, Any]]:
        """Every live key as a full object, in pages of 100, ordered by hash.

        By hash because it is unique: ordered by created_at, which many keys can share (a bulk import, a migration),
        PostgreSQL may return a key on two pages and skip another (LiteLLM adds no tiebreaker; docs/litellm.md §3).
        """
        return self._list_all(KEY_LISTING)

    def list_users(self) -> list[dict[str, Any]]:
        """Every LiteLLM user, in pages of 100 (docs/litellm.md §11)."""
        return self._list_all(USER_LISTING)

    def _list_all(self, listing: Listing) -> list[dict[str, Any]]:
        """A row created or deleted while we page can still shift one past us, so the count is checked and the
        listing repeated; a listing that never adds up is an error, never a plan made from part of the rows."""
        for _ in range(3):
            rows, total = self._list_once(listing)
            unique = {r[listing.ident]: r for r in rows}
            if len(unique) == total:
                return list(unique.values())
            log.debug("%s changed while paging (%d seen, %d reported); listing again", listing.route, len(unique),
                      total)
        raise ProxyError(listing.route, 200, f"the listing did not add up three times ({len(unique):,} distinct "
                                             f"seen, {total:,} reported): it is changing; try again")

    def _list_page(self, listing: Listing, page: int) -> dict[str, Any]:
        params = {"page": page, listing.size_param: self.PAGE_SIZE, **listing.params}
        body = self.request("GET", listing.path, params=params)
        route, what = listing.route, listing.what
        if not isinstance(body, dict) or not isinstance(body.get(listing.items), list):
            raise shape_error(route, f"page {page} is {_kind(body)} without a '{listing.items}' list")
        if len(body[listing.items]) > self.PAGE_SIZE:
            raise shape_error(route, f"page {page} holds {len(body[listing.items])} {what}s, more than the "
                                     f"{self.PAGE_SIZE} asked for")
        for i, row in enumerate(body[listing.items]):
            if not isinstance(row, dict) or not isinstance(row.get(listing.ident), str) or not row[listing.ident]:
                raise shape_error(route, f"page {page}, {what} #{i + 1} is {_kind(row)} without a "
                                         f"'{listing.ident}' string")
        for name in ("total_pages", listing.total):
            if not _count(body.get(name)):
                raise shape_error(route, f"{name} is {_kind(body.get(name))}, not a count")
        return body

    def _list_once(self, listing: Listing) -> tuple[list[dict[str, Any]], int]:
        first = self._list_page(listing, 1)
        total = first[listing.total]
        pages = first["total_pages"]
        # Bounded by what the count implies and by a hard ceiling, so a lying proxy cannot keep us paging.
        if pages > math.ceil(total / self.PAGE_SIZE) + 1 or pages > self.MAX_PAGES:
            raise shape_error(listing.route, f"{pages:,} pages for {total:,} {listing.what}s (at most "
                                             f"{self.MAX_PAGES:,} pages of {self.PAGE_SIZE} are read)")
        rows = list(first[listing.items])
        if pages > 1:
            with ThreadPoolExecutor(min(self.LIST_CONCURRENCY, pages - 1)) as pool:
                for body in pool.map(lambda page: self._list_page(listing, page), range(2, pages + 1)):
                    rows.extend(body[listing.items])
        return rows, total

    def model_info(self) -> list[dict[str, Any]]:
        body = self.request("GET", "/model/info")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise shape_error("GET /model/info", f"{_kind(body)} without a 'data' list")
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str) \
                    or not isinstance(entry.get("litellm_params") or {}, dict):
                raise shape_error("GET /model/info", f"model #{i + 1} is {_kind(entry)} without a 'model_name' "
                                                     "string and 'litellm_params' object")
        return data

    def _found(self, route: str, params: dict[str, str]) -> Any:
        """A GET whose "not found" (in any of LiteLLM's ways of saying it) is None."""
        try:
            return self.request("GET", route, params=params)
        except ProxyError as exc:
            if not_found(exc):
                return None
            raise

    def key_info(self, key: str) -> dict[str, Any] | None:
        """A key's row by hash, or None if LiteLLM never saw it. Deleted keys answer too (§4)."""
        body = self._found("/key/info", {"key": key})
        if body is None:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("info"), dict):
            raise shape_error("GET /key/info", f"{_kind(body)} without an 'info' object")
        return body["info"]

    def list_teams(self) -> list[dict[str, Any]]:
        """Every team. A proxy without teams (the bundled sandbox; LiteLLM without a database) has none."""
        try:
            body = self.request("GET", "/team/list")
        except ProxyError as exc:
            if exc.status == 404:
                return []
            raise
        if not isinstance(body, list) or not all(isinstance(t, dict) for t in body):
            raise shape_error("GET /team/list", f"{_kind(body)}, not a list of teams")
        return body

    def team_info(self, team_id: str) -> dict[str, Any] | None:
        """{"team_info": ..., "keys": [...], "team_memberships": [...]}, or None if there is no such team."""
        body = self._found("/team/info", {"team_id": team_id})
        if body is None:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("team_info"), dict) \
                or not isinstance(body.get("keys", []), list):
            raise shape_error("GET /team/info", f"{_kind(body)} without a 'team_info' object and a 'keys' list")
        return body

    def new_team(self, body: dict[str, Any]) -> str:
        answer = self._write("/team/new", body)
        if not isinstance(answer.get("team_id"), str) or not answer["team_id"]:
            raise shape_error("POST /team/new", "no 'team_id' string in the answer")
        return answer["team_id"]

    def update_team(self, body: dict[str, Any]) -> None:
        self._write("/team/update", body)

    def new_user(self, body: dict[str, Any]) -> None:
        """/user/new, never with a key of its own (it makes one unless told not to)."""
        self._write("/user/new", {**body, "auto_create_key": False})

    def user_info(self, user_id: str) -> dict[str, Any] | None:
        """The user's row, or None if there is none (1.77 and older answer 200 with an empty row)."""
        body = self._found("/user/info", {"user_id": user_id})
        info = body.get("user_info") if isinstance(body, dict) else None
        return info if isinstance(info, dict) and info.get("user_id") == user_id else None

    def update_user(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._write("/user/update", body)

    def delete_user(self, user_id: str) -> None:
        try:  # the answer is the number of users deleted
            self.request("POST", "/user/delete", body={"user_ids": [user_id]})
        except ProxyError as exc:
            if not not_found(exc):
                raise

    def keys_of_user(self, user_id: str) -> list[str]:
        """The hashes of a user's keys, read now (at most one page: the caller wants to know whether any is left)."""
        body = self.request("GET", "/key/list", params={"user_id": user_id, "size": self.PAGE_SIZE})
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list):
            raise shape_error("GET /key/list", f"{_kind(body)} without a 'keys' list")
        return [k if isinstance(k, str) else str((k or {}).get("token", "")) for k in keys]

    def set_member_permissions(self, team_id: str, permissions: list[str]) -> None:
        self._write("/team/permissions_update", {"team_id": team_id, "team_member_permissions": permissions})

    def delete_team(self, team_id: str) -> None:
        try:
            self._write("/team/delete", {"team_ids": [team_id]})
        except ProxyError as exc:
            if not not_found(exc):
                raise

    def add_member(self, team_id: str, user_id: str, budget: float | None) -> None:
        body: dict[str, Any] = {"team_id": team_id, "member": {"user_id": user_id, "role": "user"}}
        if budget is not None:
            body["max_budget_in_team"] = budget
        try:
            self._write("/team/member_add", body)
        except ProxyError as exc:  # a repeat whose first answer was lost
            if "already in team" not in exc.detail.lower():
                raise
            if budget is not None:
                self.set_member_budget(team_id, user_id, budget)

    def set_member_budget(self, team_id: str, user_id: str, budget: float | None) -> None:
        self._write("/team/member_update", {"team_id": team_id, "user_id": user_id, "max_budget_in_team": budget})

    def remove_member(self, team_id: str, user_id: str) -> None:
        try:
            self._write("/team/member_delete", {"team_id": team_id, "user_id": user_id})
        except ProxyError as exc:
            if not (not_found(exc) or "not found in team" in exc.detail.lower()):
                raise

    def version(self) -> str | None:
        """LiteLLM's version, as /health/readiness reports it; None when it does not say (never an error)."""
        try:
            body = self.request("GET", "/health/readiness", retry=False)
        except ProxyError:
            return None
        version = body.get("litellm_version") if isinstance(body, dict) else None
        return version if isinstance(version, str) and re.fullmatch(r"\d+\.\d+\.\d+\S*", version) else None

    def whoami(self) -> Identity:
        """GET /key/info without a key describes the caller's own key. The master key is not a row in LiteLLM's
        key table, so it alone authenticates and is then not found (docs/litellm.md, "Credentials")."""
        try:
            body = self.request("GET", "/key/info")
        except ProxyError as exc:
            if exc.status == 404:
                return Identity(master=True)
            raise
        if not isinstance(body, dict) or not isinstance(body.get("info"), dict):
            raise shape_error("GET /key/info", f"{_kind(body)} without an 'info' object")
        user = body["info"].get("user_id")
        if not isinstance(user, str):
            return Identity(master=False)
        role = None
        try:
            data = self.request("GET", "/user/info", params={"user_id": user})
            role = (data.get("user_info") or {}).get("user_role") if isinstance(data, dict) else None
        except ProxyError:
            pass  # the role only sharpens the message
        return Identity(master=False, user_id=user, role=role if isinstance(role, str) else None)

    def models_visible_to(self, secret: str) -> list[str]:
        """What a key itself sees on /v1/models: the proof that a delivered key works with its scope."""
        body = self.request("GET", "/v1/models", auth=secret)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise shape_error("GET /v1/models", f"{_kind(body)}, not a 'data' list of models with string ids")
        return [m["id"] for m in data]

    # ------------------------------------------------------------ writes

    def _write(self, route: str, body: dict[str, Any], *, retry: bool = True) -> dict[str, Any]:
        answer = self.request("POST", route, body=body, retry=retry)
        if not isinstance(answer, dict):
            raise shape_error(f"POST {route}", f"{_kind(answer)}, not an object")
        return answer

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        # Safe to repeat: the body carries our own `key`, and re-posting one is a no-op (§1). A repeat that meets
        # "alias already exists" is sorted out by the caller, which looks the hash up.
        return self._write("/key/generate", body)

    def update(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._write("/key/update", body)
        except ProxyError as exc:
            # Removing an expiry: "-1" on 1.80 and later (which ignore null), null on 1.77 (which refuses "-1").
            if body.get("duration") == "-1" and exc.status == 400 and "duration" in exc.detail.lower():
                return self._write("/key/update", {**body, "duration": None})
            raise

    def delete(self, tokens: list[str]) -> None:
        try:
            self._write("/key/delete", {"keys": tokens})
        except ProxyError as exc:
            # "No keys found": already gone (an earlier attempt whose answer was lost, or a concurrent delete).
            if not not_found(exc):
                raise

    def block(self, token: str) -> None:
        self._write("/key/block", {"key": token})

    def unblock(self, token: str) -> None:
        # /key/update, not /key/unblock: LiteLLM 1.74 hashes an already-hashed key on /key/unblock and answers 401.
        self._write("/key/update", {"key": token, "blocked": False})


def version_warning(version: str | None) -> str | None:
    """A plan warning when the proxy's LiteLLM is outside the tested range."""
    if version is None:
        return None
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:3])
    low, high = TESTED_VERSIONS
    if parts(low) <= parts(version) <= parts(high):
        return None
    return (f"the proxy runs LiteLLM {version}, outside the versions this tool is tested with ({low} to {high}); "
            "check the plan closely")


def not_found(exc: ProxyError) -> bool:
    """404, or the 401 that LiteLLM 1.80 and older answer on key routes for a key "not found in db"."""
    return exc.status == 404 or (exc.status == 401 and "not found" in exc.detail.lower())


def _kind(value: Any) -> str:
    """What a value is, for an error message, without quoting it (it could echo a secret)."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
