#!/usr/bin/env bash
# System packages turnwise needs beyond Python: the venv module and a redis-server for the tests; where
# apt-get is available, also Chromium and its chromedriver for the browser tests of /monitor and /docs
# (optional: those tests skip without them, so a failed browser install only prints a note).
set -euo pipefail
need=()
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
command -v redis-server >/dev/null || need+=(redis-server)
browser=()
if command -v apt-get >/dev/null; then
  command -v chromium >/dev/null || browser+=(chromium)
  command -v chromedriver >/dev/null || browser+=(chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && [ ${#browser[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
if command -v apt-get >/dev/null; then
  echo "installing system packages: ${need[*]} ${browser[*]}"
  $sudo apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
  fi
  if [ ${#browser[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${browser[@]}" >/dev/null \
      || echo "could not install ${browser[*]}: the browser tests will skip" >&2
  fi
else
  echo "please install: ${need[*]} (no apt-get on this machine)" >&2
  exit 1
fi
