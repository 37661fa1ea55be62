#!/usr/bin/env bash
# Install everything the tests need (Debian packages: the GStreamer RTSP server and
# ffmpeg; Python test tools in .venv), lint, then run the test suite with pytest.
# Arguments go to pytest, for example: scripts/test.sh -k hub
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
scripts/setup-venv.sh test
.venv/bin/ruff check streams vms tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
