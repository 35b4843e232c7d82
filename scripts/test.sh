#!/usr/bin/env bash
# The whole test suite: services it needs, lint, types, then pytest. Nothing is skipped:
# a service that cannot be started fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv

APT_UPDATED=""
apt_install() {
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then return; fi
    echo "== installing Chromium (Debian package) for the browser tests"
    apt_install chromium
}

# Without a CJK font headless Chromium draws Korean as boxes, and the UI tests' screenshots
# cannot be read. Chromium brings fontconfig, so fc-list is there once it is installed.
ensure_cjk_font() {
    if command -v fc-list >/dev/null && [ -n "$(fc-list :lang=ko family)" ]; then return; fi
    echo "== installing a CJK font (Debian package fonts-noto-cjk) for the browser tests"
    apt_install fonts-noto-cjk
}

ensure_postgres() {
    if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return; fi
    echo "== starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 50); do pg_isready -h 127.0.0.1 -p 5432 -q && return; sleep 0.2; done
    echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1
}

ensure_redis() {
    if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
    echo "== starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return; sleep 0.2; done
    echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1
}

ensure_chromium
ensure_cjk_font
ensure_postgres
ensure_redis

echo "== ruff"
$VENV/bin/ruff check src tests bench
echo "== mypy"
$VENV/bin/mypy
echo "== pytest"
export DARI_TEST_REQUIRE_SERVICES=1
# Two workers, a test file each at a time (module fixtures stay on one worker): most tests
# wait on timers and sockets, so two share this 2-core machine well.
exec $VENV/bin/pytest -n 2 --dist loadfile "$@"
