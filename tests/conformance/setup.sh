#!/usr/bin/env bash
# Make (or reuse) the conformance virtualenv with LiteLLM's real proxy. Prints its python's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${LITELLM_CONFORMANCE_VENV:-$here/../../.venv-litellm}"
pin="$(grep -E '^litellm' "$here/requirements.txt")"
case "$pin" in
  *==1.82.7*|*==1.82.8*|*==1.107.*) echo "refusing $pin: a compromised LiteLLM release" >&2; exit 1;;
  *==*) ;;
  *) echo "refusing '$pin': the conformance tier pins an exact LiteLLM version" >&2; exit 1;;
esac
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import litellm.proxy.proxy_server" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q -r "$here/requirements.txt" >&2
fi
installed="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
case "$installed" in
  1.82.7|1.82.8|1.107.*) echo "the conformance venv holds litellm $installed, a compromised release: delete $venv" >&2; exit 1;;
esac
echo "$venv/bin/python"
