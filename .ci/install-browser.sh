#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for tests/test_browser.py (figures render offline in a real
# browser). Idempotent: does nothing when a Chromium is already on PATH. Needs root (CI containers run as root).
set -euo pipefail
for candidate in chromium chromium-browser google-chrome; do
    if command -v "$candidate" >/dev/null 2>&1; then
        echo "install-browser: $candidate already installed ($("$candidate" --version 2>/dev/null || true))"
        exit 0
    fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "install-browser: $(chromium --version 2>/dev/null || echo 'chromium installed')"
