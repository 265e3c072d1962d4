#!/usr/bin/env bash
# Installs the system packages movierec needs, when they are missing: PostgreSQL (server
# binaries) and Redis for the local runtime, Chromium and its driver for the web page's
# browser test, Prometheus (its promtool checks deploy/monitoring/; `make monitor` runs
# the server). Debian/Ubuntu only; needs root (or sudo).
# Anything already present is left alone, so running it again is cheap.
set -euo pipefail

need=()
have_pg() { command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; }
have_pg || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && { echo "system-deps: postgresql, redis-server, chromium, prometheus present"; exit 0; }

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]} and no apt-get here; install them, or set" \
       "DATABASE_URL and REDIS_URL to running servers" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "system-deps: need root to install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# policy-rc.d keeps the packages from starting system-wide servers; movierec starts its own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "system-deps: installed ${need[*]}"
