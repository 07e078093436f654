"""`litellm-roster-sandbox` (or `python -m litellm_roster_sandbox`): serve the sandbox until interrupted."""

from __future__ import annotations

import argparse
import os
import sys

from .server import DEFAULT_MASTER_KEY, Fault, SandboxError, load_models, start_sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litellm-roster-sandbox",
                                     description="Serve a LiteLLM-compatible key API in memory, for trying a roster.")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4000, help="the port (default 4000; 0 picks a free one)")
    parser.add_argument("--master-key", help=f"default: LITELLM_MASTER_KEY, else {DEFAULT_MASTER_KEY}")
    parser.add_argument("--models", help="a LiteLLM config (model_list) to serve; default: a few Claude models")
    parser.add_argument("--fault", action="append", metavar="SPEC",
                        help="inject faults, e.g. 'POST /key/generate=503@0.3', '*=reset-after@0.1', "
                             "'GET /key/list=delay:2@1', 'GET /key/list=429:1@0.5' (Retry-After 1)")
    args = parser.parse_args(argv)
    master = args.master_key or os.environ.get("LITELLM_MASTER_KEY") or DEFAULT_MASTER_KEY
    try:
        faults = [Fault.parse(spec) for spec in args.fault or []]
        models = load_models(args.models)
        sandbox = start_sandbox(args.port, master, models, host=args.host, faults=faults)
    except (SandboxError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"sandbox listening on {sandbox.url} ({len(models)} models); Ctrl-C stops it", flush=True)
    try:
        sandbox.thread.join()
    except KeyboardInterrupt:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
