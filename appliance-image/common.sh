# shellcheck shell=bash disable=SC2034
# (sourced by the stages, which use what it sets)
# Shared by the build stages: where things go, and the Debian archives this build machine already uses (read
# from its apt configuration, so no mirror is written into the repository).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=${OUT:-$HERE/out}
ROOTFS=$OUT/rootfs
CACHE=${CACHE:-$HERE/apt-cache}
mkdir -p "$OUT" "$CACHE"

# The first URI of the host's sources that serves $1 (a suite such as bookworm or bookworm-security).
archive_for() {
    local suite=$1 uri
    uri=$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | awk -v s="$suite" '
        /^URIs:/ { u = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) { print u; exit } }')
    if [ -z "$uri" ]; then
        uri=$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } | awk -v s="$suite" '
            $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(http|https|file):/ && $(i + 1) == s) { print $i; exit } }')
    fi
    [ -n "$uri" ] || { echo "no apt source for $suite on this machine (needed to build the image)" >&2; exit 1; }
    echo "$uri"
}
