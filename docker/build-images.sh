#!/usr/bin/env bash
# Build static (musl) release binaries of tether-manager and tether-delegate and the images
# tether-manager:{latest,VERSION} and tether-delegate:{latest,VERSION}, FROM scratch.
#
# Idempotent, and self-sufficient on a fresh Debian machine: installs the Rust musl target
# and Debian's musl-tools when missing. Pulls nothing from any image registry.
#
# Usage: docker/build-images.sh            (from anywhere)
# Env:   TETHER_SKIP_CARGO=1  reuse the binaries already in target/ (no cargo build)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

TARGET=x86_64-unknown-linux-musl
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-images.sh: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $*"; fi
}

# --- toolchain -------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust with rustup first)"
command -v docker >/dev/null 2>&1 || die "docker not found"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is dockerd running, may this user use its socket?)"

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    log "adding Rust target $TARGET"
    rustup target add "$TARGET"
fi

if ! command -v musl-gcc >/dev/null 2>&1; then
    log "installing Debian's musl-tools (musl-gcc: ring and SQLite compile C)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools
fi

# --- binaries --------------------------------------------------------------------------
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$TARGET_DIR" ] || die "could not read cargo's target directory"
BIN_DIR="$TARGET_DIR/$TARGET/release"

if [ "${TETHER_SKIP_CARGO:-0}" != 1 ]; then
    log "building static release binaries ($TARGET)"
    cargo build --release --target "$TARGET" -p tether-manager -p tether-delegate
fi

for bin in tether-manager tether-delegate; do
    path="$BIN_DIR/$bin"
    [ -x "$path" ] || die "$path is missing (run without TETHER_SKIP_CARGO=1)"
    # Static means: no dynamic section entries needing a library, and no program interpreter.
    if readelf -d "$path" 2>/dev/null | grep -q '(NEEDED)'; then
        die "$bin is dynamically linked: $(readelf -d "$path" | grep '(NEEDED)' | tr -s ' ')"
    fi
    if readelf -l "$path" 2>/dev/null | grep -q 'INTERP'; then
        die "$bin asks for a program interpreter: not static"
    fi
    log "$bin: static, $(du -h "$path" | cut -f1)"
done

# --- images ----------------------------------------------------------------------------
VERSION="$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"name":"tether-manager","version":"\([^"]*\)".*/\1/p')"
[ -n "$VERSION" ] || VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
[ -n "$VERSION" ] || die "could not read the workspace version"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$REVISION" != unknown ] && ! git diff --quiet HEAD -- 2>/dev/null; then
    REVISION="$REVISION-dirty"
fi
# The commit time, not the build time: rebuilding the same commit gives the same labels.
CREATED="$(git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)"
SOURCE="$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
SOURCE="${SOURCE:-unknown}"

# No buildx plugin: BuildKit is unavailable, use the classic builder (works offline).
if docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-1}"
else
    export DOCKER_BUILDKIT=0
fi

CONTEXT_ROOT="$TARGET_DIR/docker-context"
build_image() {
    local bin="$1"; shift
    local ctx="$CONTEXT_ROOT/$bin"
    rm -rf "$ctx"
    # rootfs/: root-owned skeleton (/tmp 1777 and the parents of the runtime user's
    # directories); empty/: copied with --chown to each directory the Dockerfile names.
    mkdir -p "$ctx/rootfs/tmp" "$ctx/empty"
    chmod 1777 "$ctx/rootfs/tmp"
    chmod 0750 "$ctx/empty"
    local dir
    for dir in "$@"; do mkdir -p "$ctx/rootfs/$dir"; done
    cp "$BIN_DIR/$bin" "$ctx/$bin"
    log "building image $bin:$VERSION ($bin:latest)"
    docker build --quiet \
        -f "docker/${bin#tether-}.Dockerfile" \
        --build-arg VERSION="$VERSION" \
        --build-arg REVISION="$REVISION" \
        --build-arg SOURCE="$SOURCE" \
        --build-arg CREATED="$CREATED" \
        -t "$bin:$VERSION" -t "$bin:latest" \
        "$ctx" >/dev/null
}

build_image tether-manager
build_image tether-delegate run var/lib

for image in tether-manager tether-delegate; do
    size="$(docker image inspect -f '{{.Size}}' "$image:latest")"
    printf '%s:latest  %s  %s bytes (%s MB)\n' "$image" \
        "$(docker image inspect -f '{{.Id}}' "$image:latest" | cut -c8-19)" \
        "$size" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1000000 }')"
done
