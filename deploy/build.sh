#!/usr/bin/env bash
# Build the image from a base pinned by digest, then smoke-test the built image's reconcile.
#   deploy/build.sh IMAGE[:TAG]      (docker, or podman/buildah through DOCKER=podman)
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:?usage: deploy/build.sh IMAGE[:TAG]}"
docker="${DOCKER:-docker}"
# The base by digest: a tag can be moved under you. Resolve it once and keep the digest with the build.
base="${BASE:-python:3.12-slim}"
if [[ "$base" != *@sha256:* ]]; then
  "$docker" pull -q "$base" >/dev/null
  base="$("$docker" image inspect --format '{{index .RepoDigests 0}}' "$base")"
fi
echo "base: $base"
"$docker" build --pull=false --build-arg "BASE=$base" -f deploy/Dockerfile -t "$image" .
# The smoke test: the tool answers, sops is the pinned one, and it runs as the non-root user.
"$docker" run --rm "$image" --version
"$docker" run --rm --entrypoint sops "$image" --disable-version-check --version | grep -q '^sops 3\.11\.0'
[ "$("$docker" run --rm --entrypoint id "$image" -u)" = 10001 ]
"$docker" run --rm "$image" schema | python3 -c 'import json, sys; json.load(sys.stdin)'
echo "built and checked: $image"
