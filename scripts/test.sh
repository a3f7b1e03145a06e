#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what the tests need, then pytest,
# then the benchmark suite in --quick mode as a smoke test (its figures are not judged).
source "$(dirname "$0")/_env.sh"
.venv/bin/python -m pytest "$@"
.venv/bin/python -m benchmarks --quick --no-write > /dev/null
echo "benchmark smoke run: ok"
