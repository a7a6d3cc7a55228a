#!/usr/bin/env bash
# Builds a base image for the Dockerfile's ARG BASE from Debian's packages alone, with the apt
# sources this machine already uses: for machines that reach Debian's archive but no image
# registry. Python 3 with its venv module and CA certificates, nothing else (minbase: no
# compiler, no apt lists, no documentation but the licences).
#
#   deploy/base-image.sh [TAG]     default TAG: localhost/payment-base:<this Debian's codename>
set -euo pipefail

. /etc/os-release
codename="${VERSION_CODENAME:?this is not a Debian-like system: /etc/os-release names no codename}"
tag="${1:-localhost/payment-base:${codename}}"

# The machine's own sources: a deb822 file when there is one, else the classic list.
sources=""
for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$candidate" ]; then sources="$candidate"; break; fi
done
[ -n "$sources" ] || { echo "base-image: no apt sources found in /etc/apt" >&2; exit 1; }

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

echo "base-image: debootstrapping ${codename} (minbase + python3) from ${sources}"
mmdebstrap --quiet --variant=minbase --mode=auto \
    --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$codename" "$workdir/rootfs.tar" "$sources"

podman import --quiet \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$workdir/rootfs.tar" "$tag" >/dev/null
echo "base-image: ${tag} ($(podman image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec))"
