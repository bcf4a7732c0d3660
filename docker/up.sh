#!/usr/bin/env bash
# Build (if needed), initialise (once) and start the Tether quick start: a manager and two
# delegates under Docker Compose, then wait until both delegates hold authenticated sessions.
#
#   bash docker/up.sh            build images only if missing
#   bash docker/up.sh --build    rebuild the images first (docker/build-images.sh)
#   bash docker/up.sh --ha       the HA example instead (docker-compose.ha.yml): PostgreSQL,
#                                three manager replicas behind the name `manager`, two delegates
#
# First run: `tether-manager init` runs once in the manager's volume and its output (the
# account id, its first delegate token and the first admin token) goes straight into the
# project's .env (mode 0600, gitignored), from where Compose hands it to the containers.
# Later runs keep the volume and .env as they are. Env: TETHER_PROJECT, TETHER_ENV_FILE
# (see lib.sh), TETHER_UP_TIMEOUT_SECS (default 120), TETHER_HEARTBEAT_SECS,
# TETHER_PUBLISH_PORT (host port of the admin API on 127.0.0.1; empty: any free port).
# With --ha: PostgreSQL starts first (image tether-postgres, built from Debian's packages by
# docker/build-postgres-image.sh unless TETHER_POSTGRES_IMAGE names another), `init` runs once
# against it, and its password is generated into .env (docker/.env.ha, project tether-ha).
set -euo pipefail
export TETHER_HA=0
for arg in "$@"; do
    if [ "$arg" = --ha ]; then TETHER_HA=1; fi
done
# shellcheck source=docker/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=0
ha=0
for arg in "$@"; do
    case "$arg" in
        --build) build=1 ;;
        --ha) ha=1 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"

# --- images ----------------------------------------------------------------------------
if [ "$build" = 1 ] || ! docker image inspect tether-manager:latest tether-delegate:latest >/dev/null 2>&1; then
    say "building images (docker/build-images.sh)"
    bash "$DOCKER_DIR/build-images.sh"
fi
if [ "$ha" = 1 ] && [ -z "${TETHER_POSTGRES_IMAGE:-}" ]; then
    # Cached: seconds when the image already has this recipe.
    bash "$DOCKER_DIR/build-postgres-image.sh"
fi

# The commands, as the messages below spell them.
admin_cli="docker/compose.sh exec manager /tether-manager"
up_cmd="docker/up.sh"
if [ "$ha" = 1 ]; then
    admin_cli="docker/compose.sh --ha exec manager1 /tether-manager"
    up_cmd="docker/up.sh --ha"
fi

# wait_delegates SUMMARY: waits until delegate1 and delegate2 hold authenticated sessions.
wait_delegates() {
    local summary="$1"
    timeout_secs="${TETHER_UP_TIMEOUT_SECS:-120}"
    deadline=$((SECONDS + timeout_secs))
    pending=(delegate1 delegate2)
    while [ "${#pending[@]}" -gt 0 ]; do
        still=()
        for service in "${pending[@]}"; do
            # `tether-delegate health` exits 0 only while that delegate holds an authenticated session.
            if compose exec -T "$service" /tether-delegate health >/dev/null 2>&1; then
                say "$service: connected"
            else
                still+=("$service")
            fi
        done
        pending=("${still[@]+"${still[@]}"}")
        [ "${#pending[@]}" -eq 0 ] && break
        # Exit 78: the token was refused for good (revoked or expired): waiting will not help.
        if docker events --since "$started_at" --until "$(date +%s)" --filter event=die \
                --filter "label=com.docker.compose.project=$TETHER_PROJECT" \
                --format '{{.Actor.Attributes.exitCode}}' 2>/dev/null | grep -qx 78; then
            compose logs --tail 5 "${pending[@]}" >&2 || true
            die "a delegate exited 78: its token is revoked or expired. Create a token
($admin_cli token create NAME), put it into
$TETHER_ENV_FILE as ACCOUNT_SECRET=…, and run $up_cmd again."
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            compose ps >&2 || true
            compose logs --tail 20 >&2 || true
            die "not connected after ${timeout_secs}s: ${pending[*]}"
        fi
        sleep 1
    done
    say "$summary"
}

if [ "$ha" = 1 ]; then
    # shellcheck source=docker/up-ha.sh
    . "$DOCKER_DIR/up-ha.sh"
    exit 0
fi

# --- initialise once -------------------------------------------------------------------
data_volume="${TETHER_PROJECT}_manager-data"
volume_exists() { docker volume inspect "$data_volume" >/dev/null 2>&1; }

if volume_exists && [ -s "$TETHER_ENV_FILE" ]; then
    say "already initialised (volume $data_volume, $TETHER_ENV_FILE)"
elif volume_exists; then
    die "volume $data_volume is initialised but $TETHER_ENV_FILE is missing: the tokens it printed once are gone.
Start over with: bash docker/down.sh --volumes && bash docker/up.sh"
else
    say "initialising the manager (tether-manager init) in volume $data_volume"
    docker_gid="$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)"
    (umask 077; mkdir -p "$(dirname "$TETHER_ENV_FILE")")
    tmp_env="$(umask 077; mktemp "$TETHER_ENV_FILE.XXXXXX")"
    trap 'rm -f "$tmp_env"' EXIT
    {
        echo "# Written by docker/up.sh: the tokens below were shown once by tether-manager init."
        echo "# Keep this file private (mode 0600, not in git)."
        echo "COMPOSE_PROJECT_NAME=$TETHER_PROJECT"
        echo "DOCKER_GID=$docker_gid"
    } >"$tmp_env"
    # `run` creates the project's network and volumes (with Compose's labels) and prints
    # the dotenv lines ACCOUNT_ID=…, ACCOUNT_SECRET=…, TETHER_ADMIN_TOKEN=… to stdout only.
    if ! compose --env-file "$tmp_env" run --rm -T --no-deps manager \
            init --data-dir /data --tls-san manager --env >>"$tmp_env"; then
        die "tether-manager init failed (see above)"
    fi
    for key in ACCOUNT_ID ACCOUNT_SECRET TETHER_ADMIN_TOKEN; do
        grep -q "^$key=." "$tmp_env" || die "tether-manager init --env printed no $key"
    done
    chmod 0600 "$tmp_env"
    mv -f "$tmp_env" "$TETHER_ENV_FILE"
    trap - EXIT
    say "wrote $TETHER_ENV_FILE (mode 0600)"
fi

# --- publish the CA certificate for the delegates -----------------------------------------
compose up --no-start >/dev/null
manager_id="$(compose ps -q manager)"
[ -n "$manager_id" ] || die "no manager container after 'compose up --no-start'"
# The manager's data volume holds the master key: the delegates get the CA certificate alone,
# through the manager-ca volume (read-only for them). Through a host temp dir: a `docker cp`
# out of a container piped into a `docker cp` into the same running container deadlocks.
ca_tmp="$(mktemp -d)"
trap 'rm -rf "$ca_tmp"' EXIT
if ! docker cp "$manager_id:/ca/ca.pem" "$ca_tmp/published.pem" >/dev/null 2>&1; then
    docker cp "$manager_id:/data/ca.pem" "$ca_tmp/ca.pem" >/dev/null \
        || die "could not read /data/ca.pem from the manager's volume"
    chmod 0644 "$ca_tmp/ca.pem"
    docker cp "$ca_tmp/ca.pem" "$manager_id:/ca/ca.pem" >/dev/null \
        || die "could not publish the CA certificate to the manager-ca volume"
    say "published the manager's CA certificate to volume ${TETHER_PROJECT}_manager-ca"
fi
rm -rf "$ca_tmp"
trap - EXIT

# --- start and wait --------------------------------------------------------------------
say "starting $TETHER_PROJECT (manager, delegate1, delegate2)"
started_at="$(date +%s)"
compose up -d

wait_delegates "Tether is up: manager and two connected delegates (project $TETHER_PROJECT)."
say "Next: docker/compose.sh exec manager /tether-manager delegate list   (see docker/README.md)"
