#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the dashboard's browser test, if they are missing.
# Idempotent; needs root (or sudo) the first time. Used by `make test`.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup-browser: need root or sudo to apt-get install chromium chromium-driver" >&2; exit 1; }
    SUDO="sudo"
fi
echo "setup-browser: installing chromium and chromium-driver (Debian packages)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >&2
