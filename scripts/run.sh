#!/usr/bin/env bash
# Install Hallwatch into .venv and start it. Without arguments it serves the embedded
# default (eight halls, sixteen simulated cameras) at http://127.0.0.1:8000/.
# Arguments go to `hallwatch serve`, for example: scripts/run.sh --config site.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
exec .venv/bin/hallwatch serve "$@"
