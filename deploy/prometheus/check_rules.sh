#!/usr/bin/env bash
# Runs `promtool check rules` on the given rule files. Installs promtool (Debian package
# `prometheus`) with apt when it is missing and this user may. Exit codes: 0 the rules
# are valid, 1 promtool refused them, 3 promtool is unavailable (the caller decides
# whether that fails: under CI it does).
set -euo pipefail
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; }) \
      || true
  fi
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool is not installed and could not be installed" >&2
  exit 3
fi
exec promtool check rules "$@"
