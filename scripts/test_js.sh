#!/usr/bin/env bash
# The JavaScript side, on a fresh Debian machine as root or on a developer's:
#   clients/js            npm ci, type build, then vitest: the client and the React hooks
#                         against a real `streamcore serve`, the wire types against the
#                         server's msgspec Structs, streamcore/static/streamcore.js against
#                         its TypeScript source;
#   examples/react-chat   npm ci, vite build, then the built app in Debian's Chromium.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else "$@"; fi; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Node.js 20.19+ and npm (Vite 7 needs 20.19; Debian's own nodejs may be older: then say so).
if ! command -v node >/dev/null 2>&1; then apt_install nodejs; fi
if ! command -v npm >/dev/null 2>&1; then apt_install npm; fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  echo "test_js.sh: Node.js >= 20.19 is needed, found $(node --version)" >&2
  exit 1
fi
# The Chromium tests drive Debian's Chromium (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then apt_install chromium; fi
export CHROMIUM=${CHROMIUM:-$(command -v chromium)}

# The Python package: the tests start `.venv/bin/streamcore serve`.
if [ ! -x .venv/bin/streamcore ]; then (source scripts/_env.sh); fi
export STREAMCORE_BIN=${STREAMCORE_BIN:-$ROOT/.venv/bin/streamcore}

export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false
export CI=${CI:-true}  # vitest: run once, no watch

echo "== clients/js"
cd "$ROOT/clients/js"
npm ci --no-fund --no-audit --loglevel=error
npm run --silent build:lib
npx vitest run

echo "== examples/react-chat"
cd "$ROOT/examples/react-chat"
npm ci --no-fund --no-audit --loglevel=error
npm run --silent build
npx vitest run
echo "js tests: ok"
