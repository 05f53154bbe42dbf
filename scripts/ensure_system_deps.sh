#!/bin/sh
# METEOR (pycocoevalcap) runs a Java program; the web-viewer test drives Debian's Chromium.
# Usage: ensure_system_deps.sh [java] [chromium]. Installs what is missing with apt-get when root;
# otherwise says exactly what to install.
set -eu
missing=""
for need in "$@"; do
    case "$need" in
        java) command -v java >/dev/null 2>&1 || missing="$missing default-jre-headless" ;;
        chromium) command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing="$missing chromium" ;;
    esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
else
    echo "crrg needs these system packages:$missing" >&2
    echo "install them with: sudo apt-get install$missing" >&2
    case "$missing" in *default-jre-headless*) exit 1;; esac
    echo "(chromium is only needed for the web-viewer test, which is skipped without it)" >&2
fi
