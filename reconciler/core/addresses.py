"""One spelling per proxy address, so the lock, key files and reports agree on which proxy they mean."""

from __future__ import annotations

from urllib.parse import urlsplit

_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


def normalize_url(url: str) -> str:
    """Lowercase scheme and host, loopback names as 127.0.0.1, no default port, no trailing slash: the spellings
    of one address (`http://LOCALHOST:4000/` and `http://127.0.0.1:4000`) become one."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if host in _LOOPBACK or host.startswith("127."):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"
