#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when missing.
# Headless Chromium renders the HTML report in tests/test_report_browser.py.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: chromium missing and cannot apt-get install it; the browser test will be skipped" >&2
  exit 0
fi
echo "sysdeps: installing chromium (Debian) for the report test" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null || {
  echo "sysdeps: apt-get install chromium failed; the browser test will be skipped" >&2
}
exit 0
