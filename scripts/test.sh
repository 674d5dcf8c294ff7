#!/usr/bin/env bash
# Set up, then run the whole test suite (root-only lab tests run when this is run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
