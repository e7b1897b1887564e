#!/usr/bin/env bash
# Chromium for the browser tests (tests/browser): Debian's package, driven by pip playwright
# (playwright's own browser download is not used). Idempotent and quiet; installs only as
# root, otherwise says what is missing (the browser tests then skip).
set -euo pipefail

CHROMIUM="${ETP_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser-deps: $CHROMIUM missing and not root (or no apt-get): the browser tests" \
         "will be skipped; as root run: apt-get install chromium"
    exit 0
fi
echo "browser-deps: installing chromium (Debian package)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# fonts-liberation: text in screenshots (a recommended package, not a dependency)
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
if [ ! -x "$CHROMIUM" ]; then
    echo "browser-deps: chromium installed but $CHROMIUM is not there" >&2
    exit 1
fi
echo "browser-deps: $("$CHROMIUM" --version 2>/dev/null | head -n 1)"
