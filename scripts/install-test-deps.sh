#!/usr/bin/env bash
# System packages the test suite and benchmarks need: GStreamer's RTSP server
# (driven by the system python3 through PyGObject), ffmpeg, PostgreSQL (the
# tests start their own throwaway cluster with its initdb and pg_ctl), and
# Debian's Chromium with a CJK font for the dashboard tests (Playwright, a Python
# package, drives /usr/bin/chromium; it never downloads a browser of its own), and
# nginx, for the test that plays video through the README's reverse-proxy example,
# and SIPp (sip-tester), which plays a GB/T 28181 superior platform in the cascade tests.
# Idempotent; run as root on Debian. Python packages are installed elsewhere.
set -euo pipefail

packages=(
    gstreamer1.0-rtsp
    gir1.2-gst-rtsp-server-1.0
    python3-gi
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good
    gstreamer1.0-plugins-ugly
    gstreamer1.0-plugins-bad
    gstreamer1.0-tools
    ffmpeg
    postgresql
    chromium
    fonts-droid-fallback
    nginx-light
    sip-tester
)

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "test system packages: all installed"
else
    if ((EUID != 0)); then
        echo "missing packages: ${missing[*]}; run this script as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when apt cannot find a candidate for what is missing.
    needs_update=0
    for pkg in "${missing[@]}"; do
        candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
            needs_update=1
            break
        fi
    done
    if ((needs_update)); then
        apt-get update
    fi
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" \
    || { echo "GstRtspServer still cannot be imported by /usr/bin/python3" >&2; exit 1; }
echo "GStreamer RTSP server: OK"

compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    || { echo "PostgreSQL's initdb is missing under /usr/lib/postgresql" >&2; exit 1; }
echo "PostgreSQL: OK"

/usr/bin/chromium --headless --no-sandbox --disable-gpu --version >/dev/null 2>&1 \
    || { echo "/usr/bin/chromium does not run" >&2; exit 1; }
echo "Chromium: OK"

# sipp -v prints its version and exits 99.
[[ "$(sipp -v 2>&1 || true)" == *"SIPp v"* ]] \
    || { echo "sipp (sip-tester) does not run" >&2; exit 1; }
echo "SIPp: OK"
