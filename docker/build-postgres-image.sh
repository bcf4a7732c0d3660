#!/usr/bin/env bash
# Build the image tether-postgres:<major> (and :latest) from Debian's own `postgresql` package,
# for the HA compose example (docker-compose.ha.yml) on machines that reach Debian's package
# mirror but no image registry. Nothing is pulled from any registry:
#
#   1. `debootstrap --variant=minbase` a Debian root (DEBIAN_SUITE, from DEBIAN_MIRROR) with
#      the `postgresql` package (--foreign, then the second stage in a chroot, so that no
#      cluster is created and no server is started inside the root); apt's caches, the
#      documentation and the man pages are removed;
#   2. `tar | docker import` it as tether-debian-pg-base:<suite>-<recipe>;
#   3. `docker build` docker/postgres/Dockerfile on top (the entrypoint with the official
#      image's POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB interface, and a healthcheck).
#
# Cached: each image carries a hash of its recipe (this script, the Dockerfile, the
# entrypoint, the suite) as a label; when tether-postgres:<major> already has this recipe's
# hash the script does nothing, and the base image is reused while its part of the recipe is
# unchanged. Needs root for debootstrap (sudo is used when run as another user).
#
# Usage: docker/build-postgres-image.sh [--force]
# Env:   DEBIAN_SUITE (default: bookworm, PostgreSQL 15), DEBIAN_MIRROR (default: the
#        host's apt mirror for Debian, else http://deb.debian.org/debian),
#        TETHER_POSTGRES_REPO (default: tether-postgres)
set -euo pipefail

DOCKER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PG_DIR="$DOCKER_DIR/postgres"
SUITE="${DEBIAN_SUITE:-bookworm}"
REPO="${TETHER_POSTGRES_REPO:-tether-postgres}"
BASE_REPO=tether-debian-pg-base
# The packages of the root, beyond minbase. PostgreSQL's major version follows the suite.
PACKAGES=postgresql

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-postgres-image.sh: error: %s\n' "$*" >&2; exit 1; }

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $*"; fi
}

command -v docker >/dev/null 2>&1 || die "docker not found"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"

# The mirror: the host's own apt source for Debian (deb822 or one-line format), else Debian's CDN.
host_mirror() {
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n -e 's|^URIs:[[:space:]]*\(http[^[:space:]]*/debian\)/*$|\1|p' \
                 -e 's|^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\(http[^[:space:]]*/debian\)/*[[:space:]].*|\2|p' \
        | head -n1 || true
}
MIRROR="${DEBIAN_MIRROR:-$(host_mirror)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

# --- recipe hashes ---------------------------------------------------------------------
# The base image depends on the suite, the package list and this script; the final image
# on the base and the files of docker/postgres/. The mirror is not part of either: any
# mirror of the suite gives the same packages.
sha() { sha256sum | cut -c1-16; }
base_recipe="$( { echo "suite=$SUITE packages=$PACKAGES"; cat "${BASH_SOURCE[0]}"; } | sha)"
recipe="$( { echo "base=$base_recipe"; cat "$PG_DIR/Dockerfile" "$PG_DIR/entrypoint.sh"; } | sha)"
BASE_IMAGE="$BASE_REPO:$SUITE-$base_recipe"

label_of() {
    docker image inspect -f '{{ index .Config.Labels "org.tether.postgres.recipe" }}' "$1" 2>/dev/null || true
}

# The final image's tag names the major version, which is known once the root exists; the
# recipe label on :latest says whether anything is to do.
if [ "$force" = 0 ] && [ "$(label_of "$REPO:latest")" = "$recipe" ]; then
    major="$(docker image inspect -f '{{ index .Config.Labels "org.tether.postgres.major" }}' "$REPO:latest")"
    if docker image inspect "$REPO:$major" >/dev/null 2>&1; then
        log "$REPO:$major is up to date (recipe $recipe)"
        exit 0
    fi
fi

# --- base image: a minimal Debian root with PostgreSQL ---------------------------------
if [ "$force" = 1 ] || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing Debian's debootstrap"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
    fi
    work="$(mktemp -d "${TMPDIR:-/var/tmp}/tether-pg-root.XXXXXX")"
    root="$work/root"
    cleanup() {
        # The second stage mounts /proc (and may mount /sys) in the root; never delete through a mount.
        for m in "$root/proc" "$root/sys" "$root/dev/pts"; do
            if mountpoint -q "$m" 2>/dev/null; then as_root umount -l "$m" || true; fi
        done
        as_root rm -rf --one-file-system "$work"
    }
    trap cleanup EXIT
    log "debootstrap --variant=minbase $SUITE with $PACKAGES (mirror $MIRROR)"
    as_root debootstrap --variant=minbase --foreign --include="$PACKAGES" \
        "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap (first stage) failed"; }
    # Before the packages are configured: create no cluster, start no service.
    as_root mkdir -p "$root/etc/postgresql-common/createcluster.d" "$root/usr/sbin"
    echo "create_main_cluster = false" \
        | as_root tee "$root/etc/postgresql-common/createcluster.d/tether.conf" >/dev/null
    printf '#!/bin/sh\n# No service starts inside an image build.\nexit 101\n' \
        | as_root tee "$root/usr/sbin/policy-rc.d" >/dev/null
    as_root chmod 0755 "$root/usr/sbin/policy-rc.d"
    as_root chroot "$root" /debootstrap/debootstrap --second-stage >"$work/second-stage.log" 2>&1 \
        || { tail -n 30 "$work/second-stage.log" >&2; die "debootstrap (second stage) failed"; }
    for m in "$root/proc" "$root/sys"; do
        if mountpoint -q "$m" 2>/dev/null; then as_root umount -l "$m"; fi
    done
    major="$(find "$root/usr/lib/postgresql" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n1)"
    [ -x "$root/usr/lib/postgresql/$major/bin/postgres" ] || die "no PostgreSQL server in the root"
    log "slimming the root (apt caches and lists, documentation, man pages, locales, LLVM)"
    # Also the JIT compiler: LLVM and Z3 are half the root, and a server without its
    # llvmjit library simply runs without JIT (PostgreSQL checks that the file exists).
    as_root sh -c "cd '$root' && rm -rf var/cache/apt/* var/lib/apt/lists/* var/log/* \
        usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/lintian \
        usr/share/i18n tmp/* var/tmp/* root/.cache debootstrap \
        etc/postgresql-common/createcluster.d/tether.conf \
        usr/lib/postgresql/$major/lib/llvmjit* usr/lib/postgresql/$major/lib/bitcode \
        usr/lib/x86_64-linux-gnu/libLLVM-* usr/lib/x86_64-linux-gnu/libz3.so*"
    # Deterministic enough for a cache key: the recipe hash is the tag, the content is Debian's.
    log "importing the root as $BASE_IMAGE ($(as_root du -sh "$root" | cut -f1))"
    as_root tar --numeric-owner -C "$root" -c . \
        | docker import \
            --change "LABEL org.tether.postgres.base-recipe=$base_recipe org.tether.postgres.major=$major" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' \
            - "$BASE_IMAGE" >/dev/null
    cleanup
    trap - EXIT
fi
major="$(docker image inspect -f '{{ index .Config.Labels "org.tether.postgres.major" }}' "$BASE_IMAGE")"
[ -n "$major" ] || die "$BASE_IMAGE has no org.tether.postgres.major label (remove it and run again)"

# --- the image -------------------------------------------------------------------------
if docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-1}"
else
    export DOCKER_BUILDKIT=0
fi
previous="$(docker image inspect -f '{{.Id}}' "$REPO:latest" 2>/dev/null || true)"
log "building $REPO:$major ($REPO:latest) on $BASE_IMAGE"
docker build --quiet \
    --build-arg BASE="$BASE_IMAGE" \
    --build-arg PG_MAJOR="$major" \
    --build-arg RECIPE="$recipe" \
    --label org.tether.postgres.major="$major" \
    -t "$REPO:$major" -t "$REPO:latest" \
    "$PG_DIR" >/dev/null

# The image this one replaces (now untagged) and older base images (an earlier recipe) only
# take space; a base that something else still uses stays.
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$REPO:latest")" ] \
        && [ -z "$(docker image inspect -f '{{join .RepoTags ","}}' "$previous" 2>/dev/null)" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
for old in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$BASE_REPO"); do
    [ "$old" = "$BASE_IMAGE" ] || docker image rm "$old" >/dev/null 2>&1 || true
done

size="$(docker image inspect -f '{{.Size}}' "$REPO:$major")"
printf '%s:%s  %s  %s MB\n' "$REPO" "$major" \
    "$(docker image inspect -f '{{.Id}}' "$REPO:$major" | cut -c8-19)" \
    "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1000000 }')"
