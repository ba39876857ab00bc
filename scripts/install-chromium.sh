#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser tests (tests/tracking/test_browser.py) and for
# rendering reports/report.pdf. Idempotent: exits 0 at once if /usr/bin/chromium is there.
# Playwright (PyPI) drives this browser; it never downloads one of its own.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; install Chromium by hand (the browser tests are skipped without it)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "error: installing chromium needs root (or password-less sudo)" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium
/usr/bin/chromium --version
