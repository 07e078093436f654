"""Serve LiteLLM's real proxy app on 127.0.0.1, its database replaced by the in-memory stand-in in fake_prisma.py.

Runs inside the conformance virtualenv (litellm[proxy]==1.108.7), not the project's:
    python serve_litellm.py --models models.yaml --master-key sk-... [--port 0]
prints `listening on http://127.0.0.1:PORT` when ready. Nothing here reaches the network: the model cost map is
LiteLLM's bundled copy and telemetry is off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True)
    parser.add_argument("--master-key", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-db", action="store_true", help="serve without the stand-in, as the real proxy does")
    args = parser.parse_args()

    os.environ.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                       "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True", "LITELLM_LOG": "ERROR",
                       "DISABLE_ADMIN_UI": "True", "NO_DOCS": "False"})
    os.environ.pop("DATABASE_URL", None)
    models = yaml.safe_load(Path(args.models).read_text())
    config = {"model_list": models.get("model_list", models),
              "general_settings": {"master_key": args.master_key},
              "litellm_settings": {"telemetry": False}}
    config_path = Path(tempfile.mkdtemp(prefix="litellm-conf-")) / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    os.environ["WORKER_CONFIG"] = str(config_path)
    os.environ["CONFIG_FILE_PATH"] = str(config_path)

    import uvicorn
    from litellm.proxy import proxy_server

    server = uvicorn.Server(uvicorn.Config(proxy_server.app, host="127.0.0.1", port=args.port, log_level="error",
                                           lifespan="on"))

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        if not args.no_db:
            sys.path.insert(0, str(Path(__file__).parent))
            from fake_prisma import install

            client = install(proxy_server)

            async def reset() -> dict:
                """Tests start from an empty database: clear the tables and LiteLLM's in-memory auth cache."""
                for table in client.db.tables.values():
                    table.rows.clear()
                proxy_server.user_api_key_cache.flush_cache()
                return {"reset": True}

            # Registered on LiteLLM's app but outside its routes' auth: reachable only on 127.0.0.1, for tests.
            proxy_server.app.add_api_route("/_conformance/reset", reset, methods=["POST"])
            proxy_server.app.router.routes.insert(0, proxy_server.app.router.routes.pop())
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
