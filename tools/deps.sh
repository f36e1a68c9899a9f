#!/bin/sh
# tools/deps.sh — install the Debian packages EM3 builds, tests and benchmarks with.
# Idempotent: when everything is present it only runs dpkg-query and exits (well under a second).
set -eu
PKGS="cmake make gcc pkg-config llvm-19-dev llvm-19-tools clang-19 libclang-rt-19-dev libopenblas-dev flex bison \
libcmocka-dev libyaml-dev python3-torch python3-numpy libopenmpi-dev openmpi-bin gnuplot-nox"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "em3: installing Debian packages:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
