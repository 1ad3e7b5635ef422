#!/usr/bin/env bash
# Installs every system dependency of hearth from Debian packages.
# Idempotent: packages already present are skipped; safe to run as root on a fresh machine.
set -euo pipefail
PKGS=(build-essential cmake pkg-config python3 python3-venv python3-pip
      libjansson-dev libpcre2-dev libmicrohttpd-dev libcurl4-openssl-dev
      clang)  # clang: the bounded libFuzzer runs in the tests
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
