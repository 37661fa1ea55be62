#!/usr/bin/env bash
# Install everything the tests need (Debian packages: the GStreamer RTSP server and
# ffmpeg; Python test tools in .venv), lint, then run the test suite with pytest.
# Arguments go to pytest, for example: scripts/test.sh -k hub
#
# Without arguments the suite runs in two phases. Everything but the browser tests runs
# on two workers (pytest-xdist, one test file per worker at a time, so a module's fixtures
# start once): most tests wait on sockets, cameras and clocks, not on the CPU. The browser
# tests, which load both cores and bound latencies, run after, alone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
scripts/setup-venv.sh test
.venv/bin/ruff check streams vms tests bench
.venv/bin/mypy
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
status=0
.venv/bin/python -m pytest -n 2 --dist loadfile --durations=15 --ignore tests/browser || status=$?
.venv/bin/python -m pytest tests/browser || status=$?
exit "$status"
