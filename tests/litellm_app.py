"""LiteLLM's own proxy app, served from the conformance tier's pinned virtualenv on 127.0.0.1: shared by the
conformance and security tiers."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
from helpers import MASTER

HERE = Path(__file__).parent / "conformance"
ROOT = HERE.parent.parent
MODELS = ROOT / "tests" / "data" / "litellm" / "proxy-config.yaml"


def _python() -> str | None:
    explicit = os.environ.get("LITELLM_CONFORMANCE_PYTHON")
    if explicit:
        return explicit
    default = ROOT / ".venv-litellm" / "bin" / "python"
    return str(default) if default.exists() else None


class LiteLLMProxy:
    def __init__(self, process: subprocess.Popen, url: str):
        self.process, self.url = process, url
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30)

    def reset(self) -> None:
        self.http.post("/_conformance/reset").raise_for_status()

    def keys(self) -> list[dict]:
        return self.http.get("/key/list", params={"size": 100, "return_full_object": "true"}).json()["keys"]

    def managed(self) -> list[dict]:
        return [k for k in self.keys() if (k.get("metadata") or {}).get("managed_by") == "litellm-roster"]

    def models_for(self, secret: str) -> list[str] | int:
        r = httpx.get(f"{self.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        return sorted(m["id"] for m in r.json()["data"]) if r.status_code == 200 else r.status_code


def start_litellm(python: str, master: str = MASTER) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([python, str(HERE / "serve_litellm.py"), "--models", str(MODELS), "--master-key",
                                master], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("listening on "):
            return process, line.split()[-1]
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("LiteLLM's proxy did not start; run tests/conformance/serve_litellm.py by hand to see why")




def serve_litellm_app():
    """Session-wide: one LiteLLM process, reset (empty tables) by each test that uses it."""
    import pytest

    python = _python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("the conformance virtualenv is missing: .ci/run must run tests/conformance/setup.sh")
        pytest.skip("LiteLLM's conformance virtualenv is missing: bash tests/conformance/setup.sh")
    process, url = start_litellm(python)
    proxy = LiteLLMProxy(process, url)
    try:
        yield proxy
    finally:
        proxy.http.close()
        process.terminate()
        process.wait(timeout=20)
