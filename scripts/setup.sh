#!/usr/bin/env bash
# Idempotent set-up: system packages (Mosquitto, PostgreSQL), a project-local virtual
# environment in .venv, and the project with its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${need_apt[*]} (Debian packages)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # A temporary policy-rc.d keeps the packages from starting system services on the
        # ports the tests and the demo use; the tests start their own instances.
        own_policy=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            own_policy=1
        fi
        apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
        if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    else
        echo "setup: ${need_apt[*]} missing and not root: tests that need them will be skipped"
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.etp-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing the project and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[tools,dev]"
    touch "$stamp"
fi
# The dashboard's static build (dashboard/dist), which the hub serves at /: rebuilt when any of
# its sources is newer than the last build.
if [ -f dashboard/package-lock.json ]; then
    if ! command -v npm >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "setup: installing nodejs and npm (Debian packages)"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                nodejs npm >/dev/null
        else
            echo "setup: npm missing and not root: the dashboard is not built (/ answers 503)"
        fi
    fi
    built=dashboard/dist/.etp-built
    if command -v npm >/dev/null 2>&1 && { [ ! -f "$built" ] || [ -n "$(find dashboard \
            \( -path dashboard/node_modules -o -path dashboard/dist \) -prune -o \
            -type f -newer "$built" -print -quit)" ]; }; then
        echo "setup: building the dashboard (npm ci, npm run build)"
        (cd dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run -s build)
        touch "$built"
    fi
fi
bash scripts/browser-deps.sh  # Debian's chromium for tests/browser (when missing, as root)
# The on-chain program (anchor/): Debian's rustc-web, its bpfel libcore and LLVM 22, then the
# build (about 1 s; anchor/README.md). Without root the packages cannot be installed: its tests
# skip and say so.
if [ "$(id -u)" = 0 ]; then
    bash anchor/setup-deps.sh | grep -v "^anchor build deps: installed" || true
fi
if [ -x /usr/bin/rustc ] && command -v llc-22 >/dev/null 2>&1; then
    .venv/bin/python anchor/build.py >/dev/null
    echo "setup: on-chain program built (anchor/target/etp_settlement.so)"
else
    echo "setup: the on-chain program's build tools are missing: run anchor/setup-deps.sh as root"
fi
echo "setup: ready ($(.venv/bin/python --version), $(.venv/bin/micropython -c 'import sys; print("micropython", sys.version)' 2>/dev/null || echo 'micropython missing'))"
