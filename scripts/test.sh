#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what the tests need, then pytest,
# then the benchmark suite in --quick mode as a smoke test (its figures are not judged).
source "$(dirname "$0")/_env.sh"
# The browser tests drive Debian's Chromium (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
.venv/bin/python -m pytest "$@"
.venv/bin/python -m benchmarks --quick --no-write > /dev/null
echo "benchmark smoke run: ok"
