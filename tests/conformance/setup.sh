#!/usr/bin/env bash
# Make (or reuse) a virtualenv with LiteLLM's real proxy and print its python's path.
#   bash tests/conformance/setup.sh            the pin in requirements.txt, in .venv-litellm
#   bash tests/conformance/setup.sh 1.80.17    another version (versions.txt lists CI's matrix), in .venv-litellm-1.80.17
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export LITELLM_LOCAL_MODEL_COST_MAP=True   # else importing litellm fetches its cost map from the internet
refuse() {
  case "$1" in
    1.82.7|1.82.8|1.107.*) echo "refusing litellm $1: a compromised release" >&2; exit 1;;
  esac
}
if [ $# -eq 0 ]; then
  venv="${LITELLM_CONFORMANCE_VENV:-$here/../../.venv-litellm}"
  pin="$(grep -E '^litellm' "$here/requirements.txt")"
  case "$pin" in
    *==*) version="${pin##*==}";;
    *) echo "refusing '$pin': the conformance tier pins an exact LiteLLM version" >&2; exit 1;;
  esac
else
  version="$1"
  venv="$here/../../.venv-litellm-$version"
fi
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "refusing '$version': not an exact version" >&2; exit 1; }
refuse "$version"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import litellm.proxy.proxy_server" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --upgrade pip >&2
  if ! "$venv/bin/pip" install -q "litellm[proxy]==$version" pyyaml >&2 2>/dev/null; then
    # Some releases require a litellm-proxy package that is not published: install the litellm wheel and the
    # proxy extra's dependencies without it.
    wheels="$(mktemp -d)"
    "$venv/bin/pip" download -q --no-deps -d "$wheels" "litellm==$version" >&2
    "$venv/bin/python" "$here/proxy_requirements.py" "$wheels"/litellm-*.whl > "$wheels/requirements.txt"
    "$venv/bin/pip" install -q "$wheels"/litellm-*.whl -r "$wheels/requirements.txt" pyyaml >&2
    rm -rf "$wheels"
  fi
fi
installed="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
refuse "$installed"
[ "$installed" = "$version" ] || { echo "$venv holds litellm $installed, not $version: delete it" >&2; exit 1; }
# The real proxy's database client: prisma-client-python 0.15.0 (Prisma 5.17.0), generated for this LiteLLM's own
# schema. Prisma's engine binaries cannot be downloaded here; prisma_engine/ serves the same engine commit from npm
# (WebAssembly), and migrations are applied with psql (docs/testing.md).
engine="$here/prisma_engine"
[ -d "$engine/node_modules" ] || npm ci --prefix "$engine" --no-audit --no-fund --silent >&2
if ! "$venv/bin/python" -c "from prisma import Prisma" 2>/dev/null; then
  "$venv/bin/pip" install -q "prisma==0.15.0" >&2
  schema="$("$venv/bin/python" -c 'import litellm.proxy, os; print(os.path.join(os.path.dirname(litellm.proxy.__file__), "schema.prisma"))')"
  work="$(mktemp -d)"
  (cd "$work" && PATH="$venv/bin:$PATH" PRISMA_QUERY_ENGINE_BINARY="$engine/query-engine" \
    PRISMA_SCHEMA_ENGINE_BINARY="$engine/schema-engine" PRISMA_HIDE_UPDATE_MESSAGE=1 CHECKPOINT_DISABLE=1 \
    prisma generate --schema "$schema" >&2)
  rm -rf "$work"
fi
echo "$venv/bin/python"
