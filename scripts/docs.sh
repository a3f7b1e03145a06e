#!/usr/bin/env bash
# Build the documentation site with warnings as errors (what CI and tests/test_docs.py run):
#   bash scripts/docs.sh            # build into site/ (mkdocs build --strict)
#   bash scripts/docs.sh serve      # preview on http://127.0.0.1:8001/
# Needs the `docs` extra (mkdocs, mkdocs-material, mkdocstrings[python]); uses .venv when
# present, else the python3 on PATH (PYTHON overrides).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import mkdocs, mkdocstrings" 2>/dev/null; then
  echo "docs: mkdocs and mkdocstrings are not installed: pip install -e '.[docs]'" >&2
  exit 3
fi
# mkdocs-material is optional: fall back to MkDocs' own theme.
if [ -z "${MKDOCS_THEME:-}" ] && ! "$PYTHON" -c "import material" 2>/dev/null; then
  export MKDOCS_THEME=mkdocs
fi
# The hooks import streamcore from this work tree; material's 2.0 notice is not a warning.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" NO_MKDOCS_2_WARNING=1
if [ "${1:-build}" = serve ]; then
  shift || true
  exec "$PYTHON" -m mkdocs serve --strict -a 127.0.0.1:8001 "$@"
fi
[ "${1:-}" = build ] && shift
exec "$PYTHON" -m mkdocs build --strict --clean --site-dir "${SITE_DIR:-site}" "$@"
