#!/usr/bin/env bash
# Set up, then analyse the bundled capture (real kernel sockets on loopback, recorded by `whyreset lab`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
.venv/bin/whyreset analyze examples/demo.pcap "$@" || status=$?
# Exit status 1 means "abnormal connections found": that is the demo's point, not a failure.
[ "$status" -le 1 ] || exit "$status"
