#!/usr/bin/env bash
# The SSE dialects against the real client libraries: the Vercel AI SDK (`ai`) and
# AG-UI (`@ag-ui/client`), from the npm registry, run with Node.js.
#
#   bash scripts/test_sse_clients.sh            # install what is missing, run the tests
#   bash scripts/test_sse_clients.sh --install  # install only (tests/test_sse_clients.py calls this)
#
# Node.js and npm come from Debian (apt) when missing; the libraries are the exact
# versions of tests/sse_clients/package-lock.json (`npm ci`), installed once.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "test_sse_clients: Node.js >= 18 and npm are needed (apt-get install nodejs npm)" >&2
    exit 1
  fi
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
  echo "test_sse_clients: Node.js >= 18 is needed, found $(node --version)" >&2
  exit 1
fi

dir=tests/sse_clients
# npm ci writes node_modules/.package-lock.json: reinstall only when the lock changed.
if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

if [ "${1:-}" = "--install" ]; then
  exit 0
fi
source scripts/_env.sh
exec .venv/bin/python -m pytest tests/test_sse_clients.py tests/test_sse_examples.py "$@"
