#!/usr/bin/env bash
# Debian's Chromium for the web page's browser tests (tests/test_web_page.py drives it with Playwright); installs
# it when missing and prints its path. Playwright's own browser download is not used: it needs a CDN.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (Debian)…" >&2
  sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
  $sudo_ apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium >&2
fi
command -v chromium
