#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim, for machines whose Docker engine cannot reach Docker Hub
# or download.pytorch.org (but can reach a Debian mirror and PyPI, perhaps through a TLS-intercepting
# proxy). Every machine-specific bit lives here, not in the Dockerfile, whose defaults stay those of a
# normal machine.
#
#   sudo scripts/docker-base.sh            # builds the image mtst-base (needs root: debootstrap, docker)
#   docker build --build-arg BASE=mtst-base --build-arg TORCH_SOURCE="--find-links /opt/wheels" \
#       -t mtst-demo .
#
# The image: a debootstrapped Debian bookworm (its python3 is 3.11), a venv at /opt/venv first on PATH
# (so `python` and `pip` work as in python:3.11-slim), this machine's CA bundle (so pip trusts the
# proxy) and the CPU torch wheel that this machine's pip finds (under /opt/wheels).
#
# Environment: IMAGE (default mtst-base), MIRROR (default: the first Debian mirror in /etc/apt),
# PYTHON (the interpreter whose pip finds the torch wheel; default python3), TORCH (default 2.13.0),
# CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt).
set -euo pipefail

IMAGE=${IMAGE:-mtst-base}
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-2.13.0}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -z ${MIRROR:-} ]]; then
    # One-line (deb URL suite) or deb822 (URIs: URL) sources; the first plain Debian archive wins.
    MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -oE '(^deb +|^URIs: *)https?://[^ ]*/debian/?( |$)' | grep -oE 'https?://[^ ]*' | head -n1 || true)
fi
[[ -n $MIRROR ]] || { echo "no Debian mirror found in /etc/apt; set MIRROR" >&2; exit 1; }
for tool in debootstrap docker "$PYTHON"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y debootstrap docker.io)" >&2; exit 1; }
done

ROOTFS=$(mktemp -d /var/tmp/mtst-base.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR into $ROOTFS" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" "$MIRROR" >&2

chroot "$ROOTFS" python3 -m venv /opt/venv
cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/host-ca-bundle.crt"  # kept apart: update-ca-certificates rewrites the default
mkdir -p "$ROOTFS/opt/wheels"
# pip prints where it found the wheel; on these machines it is a local file (see pip's find-links).
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    "torch==$TORCH" -d "$ROOTFS/opt/wheels" >&2
ls "$ROOTFS"/opt/wheels/torch-"$TORCH"*.whl >/dev/null
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log

CERT=/etc/ssl/certs/host-ca-bundle.crt
tar -C "$ROOTFS" -c . | docker import \
    --change "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "ENV PIP_CERT=$CERT" --change "ENV REQUESTS_CA_BUNDLE=$CERT" --change "ENV SSL_CERT_FILE=$CERT" \
    --change 'CMD ["python3"]' \
    --message "mtst local base: debootstrapped bookworm, venv /opt/venv, host CA bundle, torch $TORCH wheel" \
    - "$IMAGE" >&2
docker run --rm "$IMAGE" python -c 'import sys, ssl; assert sys.version_info[:2] == (3, 11); print(sys.version)'
echo "built $IMAGE" >&2
