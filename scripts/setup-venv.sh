#!/usr/bin/env bash
# Create .venv and install Hallwatch into it (editable). With "test", also the test tools.
# Re-runs are quick: nothing is reinstalled while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "Hallwatch needs Python 3.11 or newer as '$python' (set PYTHON=...)." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$python" -m venv .venv 2>/dev/null; then
        echo "python3-venv is missing: installing it with apt-get" >&2
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
        rm -rf .venv
        "$python" -m venv .venv
    fi
fi

spec="."
[ "$extras" = "test" ] && spec=".[test]"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras:-base}"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e "$spec"
    touch "$stamp"
fi
