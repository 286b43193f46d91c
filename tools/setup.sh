#!/usr/bin/env bash
# Installs what Cloud-X needs on a fresh Debian 12 machine (run as root from the repository):
# Debian packages (scanners, test-host tools) and a virtual environment in .venv with the controller.
#   tools/setup.sh          the service
#   tools/setup.sh --test   the service, the test tools and the benchmarks (python -m bench)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test,bench]"
export DEBIAN_FRONTEND=noninteractive
packages=(python3 python3-venv python3-dev gcc iproute2 nmap masscan zmap openssh-client)
# The tests also run the Celery executor on their own PostgreSQL cluster and Redis server (never the system ones);
# the API benchmark's load generator is wrk; the web dashboard's tests drive Debian's headless Chromium through its chromedriver.
[ -n "$extras" ] && packages+=(nftables openssh-server debootstrap systemd-container procps sshpass gnupg apt-utils shellcheck dpkg-dev
  postgresql redis-server wrk chromium chromium-driver fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".${extras}"
# Every job starts a Python worker: compiled once here, its modules load without being compiled at each start
# (an editable install is not compiled by pip, and PYTHONDONTWRITEBYTECODE would stop Python from caching them).
.venv/bin/python -m compileall -q controller roles/scanner/module_utils >/dev/null
