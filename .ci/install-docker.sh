#!/usr/bin/env bash
# A Docker engine for the image test (tests/test_review_docker.py): Debian's docker.io, dockerd started
# by hand (no systemd here), and the local base image of scripts/docker-base.sh when Docker Hub cannot
# be reached. Idempotent. Exits non-zero, saying why, when no engine can be had; the image test then
# skips with that reason, and CI prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq && apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    (dockerd > "${TMPDIR:-/tmp}/dockerd.log" 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start: $(tail -3 "${TMPDIR:-/tmp}/dockerd.log")"; exit 1; }
fi
if ! docker image inspect mtst-base >/dev/null 2>&1 && ! docker pull -q python:3.11-slim >/dev/null 2>&1; then
    bash scripts/docker-base.sh
fi
echo "docker engine: $(docker version --format '{{.Server.Version}}')"
