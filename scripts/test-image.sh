#!/usr/bin/env bash
# Build omega's container image with buildah (no Docker engine needed) and run
# `omega make`, `omega run --steps 8192` and `omega eval` inside it; exits non-zero if any
# step fails. Not part of `make test`: it needs root, buildah and debootstrap
# (apt-get install buildah debootstrap), network access to the Debian archive (the Ubuntu
# archive for `cuda`) and PyPI, a few GB of disk and several minutes.
#
#   scripts/test-image.sh          # Dockerfile (CPU)
#   scripts/test-image.sh cuda     # Dockerfile.cuda, on a plain Ubuntu 24.04 base, run on the CPU
#
# The image is built from the checkout this script is in, uncommitted changes included.
# Base images are not pulled. A stand-in with the same distribution is made from its
# packages with debootstrap and given to `buildah build --from`, which replaces the
# Dockerfile's one external FROM:
#   cpu:  Debian 12 (bookworm) with its Python 3.11 (python3, venv, pip, `python`) for
#         python:3.11-slim; like that image, pip may install into the system Python
#   cuda: Ubuntu 24.04 (noble) minbase for nvidia/cuda:12.6.3-runtime-ubuntu24.04; it has no
#         CUDA userland and no GPU is used, so this checks the image's build and its
#         Python stack (jax[cuda12] installed, falling back to the CPU), not CUDA itself
# Each stand-in gets the apt sources of the image it stands for (release, updates and
# security suites; Ubuntu's with universe, where python3-venv is), and the host's CA bundle
# (also as /etc/ssl/host-ca-bundle.crt, with a pip.conf pointing at it), so apt and pip
# inside trust the registries as the host does.
#
# Environment:
#   OMEGA_IMAGE_WORK      storage, stand-in rootfs and experiment dir (/var/tmp/omega-image)
#   OMEGA_IMAGE_BASE      use this existing image as the base instead of the stand-in
#   OMEGA_IMAGE_STEPS     env steps for `omega run` (8192)
#   OMEGA_IMAGE_EPISODES  episodes for `omega eval` (100)
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, UBUNTU_MIRROR, UBUNTU_SECURITY_MIRROR  archives
set -euo pipefail

kind=${1:-cpu}
case "$kind" in
cpu) dockerfile=Dockerfile ;;
cuda) dockerfile=Dockerfile.cuda ;;
*)
    echo "usage: $0 [cpu|cuda]" >&2
    exit 2
    ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${OMEGA_IMAGE_WORK:-/var/tmp/omega-image}
steps=${OMEGA_IMAGE_STEPS:-8192}
episodes=${OMEGA_IMAGE_EPISODES:-100}
debian_mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
debian_security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
ubuntu_mirror=${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
ubuntu_security_mirror=${UBUNTU_SECURITY_MIRROR:-http://security.ubuntu.com/ubuntu}
image=localhost/omega-test:$kind
# Ubuntu Archive Automatic Signing Key (2018): checks the keyring fetched for debootstrap.
ubuntu_key=F6ECB3762474EDA9D21B7022871920D1991BC93C
host_ca=/etc/ssl/certs/ca-certificates.crt

for tool in buildah debootstrap; do
    command -v "$tool" >/dev/null || {
        echo "$0: needs $tool (apt-get install buildah debootstrap)" >&2
        exit 1
    }
done
[ "$(id -u)" = 0 ] || {
    echo "$0: debootstrap and buildah's chroot isolation need root" >&2
    exit 1
}
mkdir -p "$work"
B=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)

step() { printf '\n== %s\n' "$*"; }
timed() { # run a command, then print its wall time
    local start=$SECONDS
    "$@"
    echo "-- $((SECONDS - start))s wall: $*" | cut -c1-160
}

# make_base IMAGE SUITE MIRROR INCLUDE SOURCES [DEBOOTSTRAP_OPTION...]
make_base() {
    local base=$1 suite=$2 mirror=$3 include=$4 sources=$5
    shift 5
    if "${B[@]}" inspect --type image "$base" >/dev/null 2>&1; then
        echo "base $base exists; reusing it"
        return
    fi
    local rootfs=$work/rootfs-$suite
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include="$include" "$@" "$suite" "$rootfs" "$mirror" \
        "$(script_for "$suite")"
    rm -f "$rootfs/etc/apt/sources.list"
    printf '%s\n' "$sources" >"$rootfs/etc/apt/sources.list.d/$suite.sources"
    # pip reads a copy that an upgrade of the ca-certificates package cannot regenerate
    cp "$host_ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    cp "$host_ca" "$rootfs/etc/ssl/host-ca-bundle.crt"
    printf '[global]\ncert = /etc/ssl/host-ca-bundle.crt\n' >"$rootfs/etc/pip.conf"
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -cf "$work/rootfs-$suite.tar" .
    local ctr
    ctr=$("${B[@]}" from scratch)
    "${B[@]}" add "$ctr" "$work/rootfs-$suite.tar" /
    "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd bash "$ctr"
    "${B[@]}" commit --rm "$ctr" "$base"
    rm -rf "$rootfs" "$work/rootfs-$suite.tar"
}

script_for() { # this debootstrap may predate noble; every Ubuntu release uses the gutsy script
    case "$1" in
    noble) echo /usr/share/debootstrap/scripts/gutsy ;;
    *) echo "/usr/share/debootstrap/scripts/$1" ;;
    esac
}

ubuntu_keyring() { # the archive keyring from the Ubuntu archive, checked against the pinned key
    local dir=$work/ubuntu-keyring
    local keyring=$dir/etc/apt/trusted.gpg.d/ubuntu-keyring-2018-archive.gpg
    if [ ! -f "$keyring" ]; then
        rm -rf "$dir" && mkdir -p "$dir"
        curl -fsSL -o "$dir/keyring.deb" \
            "$ubuntu_mirror/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb"
        dpkg-deb -x "$dir/keyring.deb" "$dir"
    fi
    local fprs
    fprs=$(GNUPGHOME=$(mktemp -d) gpg --show-keys --with-colons "$keyring" 2>/dev/null |
        awk -F: '$1 == "fpr" {print $10}')
    [ "$fprs" = "$ubuntu_key" ] || {
        echo "$0: $keyring is not the Ubuntu archive key $ubuntu_key" >&2
        exit 1
    }
    echo "$keyring"
}

if [ -n "${OMEGA_IMAGE_BASE:-}" ]; then
    base=$OMEGA_IMAGE_BASE
elif [ "$kind" = cpu ]; then
    base=localhost/omega-base:bookworm-python3.11
    step "stand-in for python:3.11-slim: $base"
    timed make_base "$base" bookworm "$debian_mirror" \
        python3,python3-venv,python3-pip,python-is-python3,ca-certificates "\
Types: deb
URIs: $debian_mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $debian_security_mirror
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
else
    base=localhost/omega-base:noble
    step "stand-in for nvidia/cuda:12.6.3-runtime-ubuntu24.04 (no CUDA in it): $base"
    keyring=$(ubuntu_keyring)
    timed make_base "$base" noble "$ubuntu_mirror" ca-certificates,ubuntu-keyring "\
Types: deb
URIs: $ubuntu_mirror
Suites: noble noble-updates noble-backports
Components: main universe restricted multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg

Types: deb
URIs: $ubuntu_security_mirror
Suites: noble-security
Components: main universe restricted multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg" --keyring="$keyring"
fi

step "buildah build -f $dockerfile --from $base -t $image"
timed "${B[@]}" build --isolation chroot --from "$base" -f "$repo/$dockerfile" \
    -t "$image" "$repo"

step "image sizes (uncompressed)"
"${B[@]}" images --format '{{.Name}}:{{.Tag}}  {{.Size}}' | grep -E "^($image|$base) " || true
"${B[@]}" inspect --type image \
    --format 'entrypoint {{.OCIv1.Config.Entrypoint}}, cmd {{.OCIv1.Config.Cmd}}, workdir {{.OCIv1.Config.WorkingDir}}' \
    "$image"

ctr=$("${B[@]}" from --pull=never "$image")
trap '"${B[@]}" rm "$ctr" >/dev/null' EXIT
exp=$work/experiments-$kind
rm -rf "$exp" && mkdir -p "$exp"
inside() { # run a command in the image, experiments/ mounted as `docker run -v` would
    "${B[@]}" run --isolation chroot -v "$exp:/omega/experiments" "$ctr" -- "$@"
}

step "inside the image"
# shellcheck disable=SC2016  # expanded by the shell inside the image
inside sh -c 'echo "python: $(command -v python) $(python --version)"; du -sh /opt/venv;
    command -v git || echo "git: not in the image"'
inside python -c 'import jax; print("jax", jax.__version__, jax.devices())'
if [ "$kind" = cuda ]; then
    inside sh -c 'pip list 2>/dev/null | grep -i -E "^(jax|nvidia-)"'
fi
run=experiments/room5
step "omega make"
timed inside omega make --config configs/ppo/room_5x5.yaml --output-dir "$run"
step "omega run --steps $steps"
timed inside omega run --dir "$run" --steps "$steps"
step "omega eval"
timed inside omega eval --dir "$run" --episodes "$episodes" --seed 1000000 \
    --json "$run/eval.json"
test -s "$exp/room5/eval.json"
step "ok: $image built; omega make, run and eval ran inside it (outputs in $exp/room5)"
