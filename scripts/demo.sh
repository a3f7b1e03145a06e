#!/usr/bin/env bash
# Start the demo server: no API key, no network. Open http://127.0.0.1:8000/ in a browser.
source "$(dirname "$0")/_env.sh"
exec .venv/bin/streamcore serve "$@"
