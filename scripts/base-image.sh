#!/usr/bin/env bash
# Makes a local Python 3.11 base image with debootstrap, for machines that reach no
# image registry: Debian bookworm "minbase" plus python3.11, venv/ensurepip and the CA
# certificates, imported into podman as $BASE_IMAGE (default below). Where a registry
# is reachable, skip this and build on the official image instead:
#   make images BASE=docker.io/library/python:3.11-slim-bookworm
# Usage: scripts/base-image.sh [IMAGE]   (does nothing when IMAGE already exists)
# Environment: DEBIAN_MIRROR (default: the mirror apt uses here, else deb.debian.org).
# Needs root (debootstrap) and about 3 minutes; the image is about 130 MB.
set -euo pipefail

image="${1:-${BASE_IMAGE:-localhost/movierec/python:3.11-bookworm}}"
if podman image exists "$image"; then
  echo "base-image: $image exists"
  exit 0
fi

mirror_from_apt() {
  grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
    /etc/apt/sources.list.d 2>/dev/null | grep -oE 'https?://[^ ]+' | head -n1
}
mirror="${DEBIAN_MIRROR:-$(mirror_from_apt || true)}"
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/movierec-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
echo "base-image: debootstrap bookworm from $mirror (a few minutes)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# What an image does not need: package caches, docs, man pages, locales.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
tar -C "$rootfs" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$image" >/dev/null
echo "base-image: $image ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
