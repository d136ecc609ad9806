#!/usr/bin/env bash
# Debian's Chromium and Firefox ESR for the web page's browser tests (tests/test_web_page.py drives Chromium with
# Playwright and Firefox with Mozilla's Marionette client); installs what is missing and prints Chromium's path.
# Playwright's own browser downloads are not used: they need a CDN.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || missing+=(firefox-esr)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian)…" >&2
  sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
  $sudo_ apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >&2
fi
command -v chromium
