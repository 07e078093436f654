"""LiteLLM's real proxy, from the conformance tier's pinned virtualenv, on a real PostgreSQL, on 127.0.0.1: shared by
the conformance and security tiers. It is started with its own `litellm` command on a throwaway cluster migrated
with LiteLLM's own migrations; Prisma's engine is tests/conformance/prisma_engine (docs/testing.md says why).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import yaml
from helpers import MASTER
from postgres import Postgres, bindir, free_port

HERE = Path(__file__).parent / "conformance"
ROOT = HERE.parent.parent
MODELS = ROOT / "tests" / "data" / "litellm" / "proxy-config.yaml"
ENGINE = HERE / "prisma_engine"


def _python() -> str | None:
    explicit = os.environ.get("LITELLM_CONFORMANCE_PYTHON")
    if explicit:
        return explicit
    default = ROOT / ".venv-litellm" / "bin" / "python"
    return str(default) if default.exists() else None


class LiteLLMProxy:
    def __init__(self, url: str, database: Postgres):
        self.url, self.database = url, database
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30)

    def reset(self) -> None:
        """Empty tables, as a fresh install has them."""
        self.database.truncate()

    def keys(self) -> list[dict]:
        return self.http.get("/key/list", params={"size": 100, "return_full_object": "true"}).json()["keys"]

    def managed(self) -> list[dict]:
        return [k for k in self.keys() if (k.get("metadata") or {}).get("managed_by") == "litellm-roster"]

    def chat(self, secret: str, model: str) -> int:
        """A model call with the key (the models answer with mock_response, reaching no provider): the status."""
        answer = httpx.post(f"{self.url}/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                            json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
        return answer.status_code

    def user(self, user_id: str) -> dict | None:
        """The user's row as /user/list has it (not /user/info, which 1.77 and older answer for any id)."""
        users = self.http.get("/user/list", params={"user_ids": user_id, "page_size": 100}).json()["users"]
        return next((u for u in users if u["user_id"] == user_id), None)

    def models_for(self, secret: str) -> list[str] | int:
        r = httpx.get(f"{self.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        return sorted(m["id"] for m in r.json()["data"]) if r.status_code == 200 else r.status_code


def start_on_postgres(python: str, database: Postgres, master: str = MASTER,
                      models: Path = MODELS) -> tuple[subprocess.Popen, str]:
    """`litellm --config ...`, as users start it, with the schema already migrated (DISABLE_SCHEMA_UPDATE): there is
    no Prisma schema engine here. Its own session, so teardown ends it and the engine it started by one signal."""
    config = database.root / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": yaml.safe_load(models.read_text())["model_list"],
                                      "general_settings": {"master_key": master},
                                      "litellm_settings": {"telemetry": False}}))
    venv_bin = Path(python).parent
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LITELLM_", "PRISMA_"))}
    env.update({"PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", "DATABASE_URL": database.url,
                "DISABLE_SCHEMA_UPDATE": "true", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_TELEMETRY": "False", "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True", "LITELLM_LOG": "ERROR",
                "PRISMA_QUERY_ENGINE_BINARY": str(ENGINE / "query-engine"),
                "PRISMA_SCHEMA_ENGINE_BINARY": str(ENGINE / "schema-engine"), "CHECKPOINT_DISABLE": "1"})
    log = database.root / "litellm.log"
    process = subprocess.Popen([venv_bin / "litellm", "--config", config, "--host", "127.0.0.1", "--port", str(port)],
                               env=env, cwd=database.root, stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            ready = httpx.get(f"{url}/health/readiness", timeout=5)
            if ready.status_code == 200 and ready.json().get("db") == "connected":
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    _stop(process)
    raise RuntimeError(f"LiteLLM's proxy did not start on PostgreSQL:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    try:  # the engine it started may outlive it by a moment
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def running_litellm(python: str, programs: Path, master: str = MASTER, models: Path = MODELS):
    """A fresh PostgreSQL, migrated with this LiteLLM's own migrations, and the proxy on it; all stopped after."""
    database = Postgres(programs).start()
    try:
        database.migrate(Path(subprocess.run(
            [python, "-c", "import litellm_proxy_extras, os; print(os.path.dirname(litellm_proxy_extras.__file__))"],
            capture_output=True, text=True, check=True).stdout.strip()) / "migrations")
        process, url = start_on_postgres(python, database, master, models)
        try:
            yield LiteLLMProxy(url, database)
        finally:
            _stop(process)
    finally:
        database.stop()


def serve_litellm_app():
    """Session-wide: one LiteLLM process, reset (empty tables) by each test that uses it."""
    import pytest

    def unavailable(why: str):
        if os.environ.get("CI"):
            pytest.fail(f"{why}: .ci/run must install it")
        pytest.skip(why)

    python = _python()
    if python is None:
        unavailable("LiteLLM's conformance virtualenv is missing: bash tests/conformance/setup.sh")
    programs = bindir()
    if programs is None:
        unavailable("PostgreSQL is missing: apt-get install postgresql")
    with running_litellm(python, programs) as proxy:
        try:
            yield proxy
        finally:
            proxy.http.close()
