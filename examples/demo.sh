#!/usr/bin/env bash
# The README's first command: plan and apply the example roster against the bundled sandbox proxy, then read one
# delivered key the way its developer would, and prove it works. Needs only Python 3.10+ and pip.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
[ -x "$venv/bin/reconcile" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -e "$repo"; }
# The sandbox is a distribution of its own (the tool itself ships none of it).
[ -x "$venv/bin/litellm-roster-sandbox" ] || "$venv/bin/pip" install -q -e "$repo/sandbox"
PATH="$venv/bin:$PATH"

work="$(mktemp -d)"
cp "$repo/roster.yaml" "$work/"
export LITELLM_MASTER_KEY="sk-sandbox-master-key"   # the sandbox's; a real one comes from your secret store
export RECONCILE_PROOF_KEY="demo-proof-key-not-for-production-0123456789"  # a real one: 32+ random characters

litellm-roster-sandbox --port 0 > "$work/sandbox.log" 2>&1 &
sandbox=$!
trap 'kill $sandbox 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q listening "$work/sandbox.log" 2>/dev/null && break; sleep 0.1; done
export LITELLM_PROXY_URL="$(grep -o 'http://[0-9.:]*' "$work/sandbox.log")"

cd "$work"
echo "== reconcile plan"
reconcile plan
echo "== reconcile apply"
reconcile apply
echo "== reconcile plan --detailed-exitcode (after apply: nothing left to do)"
reconcile plan --detailed-exitcode

echo "== jane-smith reads her key with her age identity and lists her models (the key is never printed)"
export SOPS_AGE_KEY_FILE="$repo/examples/demo-identities.txt"
printf 'Authorization: Bearer %s\n' "$(sops decrypt --extract '["api_key"]' keys/jane-smith.sops.yaml)" \
  | python3 -c 'import sys, json, urllib.request
h = sys.stdin.readline().rstrip("\n").split(": ", 1)
req = urllib.request.Request(sys.argv[1] + "/v1/models", headers={h[0]: h[1]})
print([m["id"] for m in json.load(urllib.request.urlopen(req))["data"]])' "$LITELLM_PROXY_URL"
