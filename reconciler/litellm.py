"""The LiteLLM key API, over httpx: paged listing, generate, update, delete, block, models. Retries, errors.

Every route and quirk used here is in docs/litellm.md; section numbers are cited where the code depends on one.
"""

from __future__ import annotations

import logging
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import AuthError, ProxyError

log = logging.getLogger(__name__)

_SECRETISH = re.compile(r"sk-[A-Za-z0-9_\-]{6,}")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def redact(text: str, *secrets: str) -> str:
    """Remove anything that could be a credential from text meant for a user."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRETISH.sub("sk-***", text)


def error_message(response: httpx.Response) -> str:
    """LiteLLM's message out of whichever of its error shapes came back (docs/litellm.md §6)."""
    try:
        body = response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        snippet = " ".join(response.text.split())[:120]
        return f"the proxy answered {kind}, not JSON ({snippet!r}); is the URL a LiteLLM proxy?"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message") is not None:
            message = str(error["message"])
            quoted = re.fullmatch(r"""\{'error': (['"])(.*)\1\}""", message, re.S)  # a str()-ed dict (§6 quirk)
            return quoted.group(2) if quoted else message
        detail = body.get("detail")
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    where = ".".join(str(p) for p in item.get("loc", []))
                    parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
            return "; ".join(parts) or "validation error"
        if detail is not None:
            return str(detail)
    return f"unexpected error body: {str(body)[:120]}"


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

    def __init__(self, base_url: str, master_key: str, *, headers: dict[str, str] | None = None,
                 actor: str | None = None, timeout: httpx.Timeout | float | None = None,
                 transport: httpx.BaseTransport | None = None, verify: bool | str = True):
        if not master_key:
            raise AuthError("setup", None, "no master key: set LITELLM_MASTER_KEY")
        self._master_key = master_key
        self._extra_secrets = tuple(v for v in (headers or {}).values() if v)
        base_headers = {**(headers or {}), "Authorization": f"Bearer {master_key}", "Accept": "application/json"}
        if actor:
            base_headers["litellm-changed-by"] = actor  # LiteLLM's audit trail (§9)
        self.base_url = base_url.rstrip("/")
        self.stats = RequestStats()
        self._http = httpx.Client(base_url=self.base_url, headers=base_headers, timeout=timeout or self.TIMEOUT,
                                  transport=transport, verify=verify,
                                  limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LiteLLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transport

    def _sleep_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        delay = min(self.BACKOFF_CAP, self.BACKOFF_BASE * 2 ** attempt) * random.uniform(0.5, 1.0)
        if response is not None and (after := response.headers.get("retry-after")):
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
            response = None
            try:
                self.stats.requests += 1
                response = self._http.request(method, route, params=params, json=body, headers=headers)
            except httpx.TransportError as exc:
                if attempt + 1 < attempts:
                    log.debug("%s: %s; retrying", route_name, type(exc).__name__)
                    self._sleep_before_retry(attempt, None)
                    continue
                raise ProxyError(route_name, None, self._describe_transport_error(exc, attempts)) from None
            if response.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                log.debug("%s: HTTP %s; retrying", route_name, response.status_code)
                self._sleep_before_retry(attempt, response)
                continue
            break
        assert response is not None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise ProxyError(route_name, response.status_code, error_message(response)) from None
        message = redact(error_message(response), self._master_key, *self._extra_secrets)
        error_type = AuthError if response.status_code in (401, 403) and auth is None else ProxyError
        raise error_type(route_name, response.status_code, message)

    def _describe_transport_error(self, exc: httpx.TransportError, attempts: int) -> str:
        text = redact(str(exc) or type(exc).__name__, self._master_key, *self._extra_secrets)
        if isinstance(exc, httpx.ConnectError):
            if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
                return f"TLS failed for {self.base_url}: {text}; check the certificate, or pass --ca-bundle"
            return f"cannot connect to {self.base_url} ({text}); is the proxy running, and is the URL right?"
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out talking to {self.base_url} after {attempts} attempt{'s' if attempts > 1 else ''}"
        return f"{type(exc).__name__} talking to {self.base_url}: {text}"

    # ------------------------------------------------------------ reads

    def list_keys(self) -> list[dict[str, Any]]:
        """Every live key as a full object, in pages of 100, oldest first.

        Oldest first, so a key created while we page lands on the last page instead of shifting the others. A key
        deleted while we page could shift one past us, so the count is checked and the listing retried once.
        """
        for _ in range(2):
            keys, total = self._list_once()
            unique = {k["token"]: k for k in keys if isinstance(k, dict) and k.get("token")}
            if len(unique) == total:
                return list(unique.values())
            log.debug("key list changed while paging (%d seen, %d reported); listing again", len(unique), total)
        return list(unique.values())

    def _list_page(self, page: int) -> dict[str, Any]:
        params = {"page": page, "size": self.PAGE_SIZE, "return_full_object": "true",
                  "sort_by": "created_at", "sort_order": "asc"}
        body = self.request("GET", "/key/list", params=params)
        if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
            raise ProxyError("GET /key/list", 200, "the answer has no 'keys' list; is this a LiteLLM proxy?")
        return body

    def _list_once(self) -> tuple[list[dict[str, Any]], int]:
        first = self._list_page(1)
        pages = int(first.get("total_pages") or 0)
        keys = list(first["keys"])
        if pages > 1:
            with ThreadPoolExecutor(min(self.LIST_CONCURRENCY, pages - 1)) as pool:
                for body in pool.map(self._list_page, range(2, pages + 1)):
                    keys.extend(body["keys"])
        return keys, int(first.get("total_count") or len(keys))

    def model_info(self) -> list[dict[str, Any]]:
        body = self.request("GET", "/model/info")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ProxyError("GET /model/info", 200, "the answer has no 'data' list")
        return data

    def key_info(self, key: str) -> dict[str, Any] | None:
        """A key's row by hash, or None if LiteLLM never saw it. Deleted keys answer too (§4)."""
        try:
            body = self.request("GET", "/key/info", params={"key": key})
        except ProxyError as exc:
            if exc.status == 404:
                return None
            raise
        return body.get("info") if isinstance(body, dict) else None

    def whoami(self) -> Identity:
        """GET /key/info without a key describes the caller's own key. The master key is not a row in LiteLLM's
        key table, so it alone authenticates and is then not found (docs/litellm.md, "Credentials")."""
        try:
            body = self.request("GET", "/key/info")
        except ProxyError as exc:
            if exc.status == 404:
                return Identity(master=True)
            raise
        info = body.get("info") if isinstance(body, dict) else None
        user = info.get("user_id") if isinstance(info, dict) else None
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
        return [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]

    # ------------------------------------------------------------ writes

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        # Safe to repeat: the body carries our own `key`, and re-posting one is a no-op (§1). A repeat that meets
        # "alias already exists" is sorted out by the caller, which looks the hash up.
        return self.request("POST", "/key/generate", body=body)

    def update(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/key/update", body=body)

    def delete(self, tokens: list[str]) -> None:
        try:
            self.request("POST", "/key/delete", body={"keys": tokens})
        except ProxyError as exc:
            # 404 "No keys found": already gone (an earlier attempt whose answer was lost, or a concurrent delete).
            if exc.status != 404:
                raise

    def block(self, token: str) -> None:
        self.request("POST", "/key/block", body={"key": token})

    def unblock(self, token: str) -> None:
        self.request("POST", "/key/unblock", body={"key": token})
