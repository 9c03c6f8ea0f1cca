# Sourced by scripts/test: makes sure Debian's Chromium (and a CJK font, so Chinese pages render in
# screenshots) is there for the browser tests. Playwright never downloads a browser here; it launches
# /usr/bin/chromium. Installs with apt-get when running as root; otherwise says how, and the browser
# tests skip (HCL_REQUIRE_BROWSER=1 makes them fail instead, as CI does).
_need=()
command -v chromium >/dev/null 2>&1 || _need+=(chromium)
fc-list 2>/dev/null | grep -qi -e "wenquanyi" -e "noto sans cjk" || _need+=(fonts-wqy-microhei)
if [ ${#_need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${_need[*]} (apt-get) for the browser tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${_need[@]}" >&2 \
      || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${_need[@]}" >&2; }
  else
    echo "note: ${_need[*]} missing; run: sudo apt-get install ${_need[*]} (browser tests skip without Chromium)" >&2
  fi
fi
unset _need
