#!/usr/bin/env bash
# Set up (idempotent), then run lint, type checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
if [ -f dashboard/node_modules/.package-lock.json ]; then
    echo "== dashboard (vitest; its types were checked by the build)"
    (cd dashboard && npm test --silent)
fi
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
