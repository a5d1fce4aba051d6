#!/usr/bin/env bash
# `apt-install.sh COMMAND PACKAGE`: installs Debian's PACKAGE unless COMMAND (a name on PATH or a
# path) is already there. Used where the checks need a tool PyPI does not ship: docker-compose
# (make validate-deploy) and Chromium (make browser).
set -euo pipefail
command=$1
package=$2

fail() {
    echo "apt-install: $*" >&2
    exit 1
}

command -v "$command" >/dev/null && exit 0
command -v apt-get >/dev/null || fail "$command is missing and this is no Debian system: install $package"
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
echo "apt-install: installing Debian's $package" >&2
install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package")
# Package lists that are stale or absent (a fresh container) first fail the install.
"${as_root[@]}" "${install[@]}" ||
    { "${as_root[@]}" apt-get update -q && "${as_root[@]}" "${install[@]}"; } ||
    fail "could not install $package"
