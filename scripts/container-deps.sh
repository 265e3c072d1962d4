#!/usr/bin/env bash
# Installs what `make images` and `make kube-smoke` need, when it is missing: podman (the
# container engine; no Docker daemon needed), runc (the OCI runtime that
# deploy/podman/containers.conf selects, since crun fails on cgroup v1/hybrid hosts),
# catatonit (the init of the pods' infra containers, for `podman kube play`) and
# debootstrap (scripts/base-image.sh makes the base image with it when no registry is
# reachable). Debian/Ubuntu only; needs root (or sudo). Anything already present is
# left alone, so running it again is cheap.
set -euo pipefail

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v catatonit >/dev/null 2>&1 || need+=(catatonit)
[ ${#need[@]} -eq 0 ] && { echo "container-deps: podman, runc, catatonit, debootstrap present"; exit 0; }

if ! command -v apt-get >/dev/null 2>&1; then
  echo "container-deps: missing ${need[*]} and no apt-get here; install them" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "container-deps: need root to install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "container-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "container-deps: installed ${need[*]}"
