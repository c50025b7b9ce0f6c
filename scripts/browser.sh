#!/usr/bin/env bash
# Make headless Chromium and its driver available for the dashboard's browser tests.
# Installs Debian's chromium and chromium-driver when they are missing and this runs
# as root on Debian; anywhere else it only says what is missing (the tests then skip,
# except under CI=true, where a missing browser fails them).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium && have chromedriver; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && have apt-get && [ -f /etc/debian_version ]; then
    echo "browser.sh: installing chromium and chromium-driver" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q chromium chromium-driver >/dev/null
    exit 0
fi

echo "browser.sh: chromium and chromedriver are missing; install them (Debian: apt-get install chromium chromium-driver) or the dashboard browser tests skip" >&2
exit 0
