#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what the tests need (Python
# packages in .venv; Debian's chromium, redis-server and nodejs), then pytest (arguments
# are passed on), then the JavaScript suites, then the benchmark suite in --quick mode as a
# smoke test (its figures are not judged).
source "$(dirname "$0")/_env.sh"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else "$@"; fi; }
missing=()
# The browser tests drive Debian's Chromium (never a downloaded browser); the multi-worker
# tests start a real redis-server; the client-library tests run on Node.js.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The SSE dialects are tested with the real `ai` and `@ag-ui/client` npm packages.
bash scripts/test_sse_clients.sh --install
.venv/bin/python -m pytest "$@"
# With pytest arguments (a subset), stop here; the whole run goes on.
if [ $# -gt 0 ]; then exit 0; fi
echo "== JavaScript: clients/js and examples/react-chat"
bash scripts/test_js.sh
echo "== benchmark smoke run (--quick; figures not judged)"
.venv/bin/python -m benchmarks --quick --no-write
echo "benchmark smoke run: ok"
