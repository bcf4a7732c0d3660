# The --ha part of docker/up.sh (sourced by it, after the images exist; not run by itself):
# initialise the HA example once, start it, wait until both delegates are connected.
#
# Initialising: write a .env with a random PostgreSQL password, create the project
# (`compose up --no-start`: network and volumes with Compose's labels), start PostgreSQL and
# wait until it is healthy, then run `tether-manager init` once in a one-off container on the
# project's network, with the volumes manager-data (written: master key, CA, server
# certificate for `manager`, `manager1`…`manager3`) and manager-ca (the CA certificate alone,
# for the delegates). The replicas mount manager-data read-only. `init --env` prints
# ACCOUNT_ID, ACCOUNT_SECRET and TETHER_ADMIN_TOKEN once, straight into .env.
# shellcheck shell=bash

data_volume="${TETHER_PROJECT}_manager-data"
volume_exists() { docker volume inspect "$data_volume" >/dev/null 2>&1; }
replicas=(manager1 manager2 manager3)

# wait_postgres ENV_FILE: waits (bounded) until the postgres service's healthcheck passes.
wait_postgres() {
    local env_file="$1" id status deadline
    deadline=$((SECONDS + ${TETHER_UP_TIMEOUT_SECS:-120}))
    id="$(compose --env-file "$env_file" ps -q postgres)"
    [ -n "$id" ] || die "no postgres container"
    while :; do
        status="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo gone)"
        case "$status" in
            healthy) return 0 ;;
            exited|dead|gone)
                compose --env-file "$env_file" logs --tail 20 postgres >&2 || true
                die "PostgreSQL stopped while starting ($status)" ;;
        esac
        if [ "$SECONDS" -ge "$deadline" ]; then
            compose --env-file "$env_file" logs --tail 20 postgres >&2 || true
            die "PostgreSQL is not healthy after ${TETHER_UP_TIMEOUT_SECS:-120}s ($status)"
        fi
        sleep 1
    done
}

if volume_exists && [ -s "$TETHER_ENV_FILE" ]; then
    say "already initialised (volume $data_volume, $TETHER_ENV_FILE)"
elif volume_exists; then
    die "volume $data_volume exists but $TETHER_ENV_FILE is missing: the tokens init printed once are gone.
Start over with: bash docker/down.sh --ha --volumes && bash docker/up.sh --ha"
else
    say "initialising the HA example (PostgreSQL, then tether-manager init) in project $TETHER_PROJECT"
    docker_gid="$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)"
    (umask 077; mkdir -p "$(dirname "$TETHER_ENV_FILE")")
    tmp_env="$(umask 077; mktemp "$TETHER_ENV_FILE.XXXXXX")"
    init_id=""
    cleanup_init() {
        rm -f "$tmp_env"
        if [ -n "$init_id" ]; then docker rm -f "$init_id" >/dev/null 2>&1 || true; fi
    }
    trap cleanup_init EXIT
    # Hex: nothing to escape in the database URL.
    pg_password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    [ "${#pg_password}" -eq 48 ] || die "could not read 24 random bytes"
    {
        echo "# Written by docker/up.sh --ha: the tokens below were shown once by tether-manager init."
        echo "# Keep this file private (mode 0600, not in git)."
        echo "COMPOSE_PROJECT_NAME=$TETHER_PROJECT"
        echo "DOCKER_GID=$docker_gid"
        echo "POSTGRES_PASSWORD=$pg_password"
    } >"$tmp_env"

    compose --env-file "$tmp_env" up --no-start >/dev/null
    compose --env-file "$tmp_env" up -d postgres
    wait_postgres "$tmp_env"
    say "PostgreSQL is ready"

    # A one-off container of the manager image on the project's database network (labelled with the
    # project, so down.sh removes it should this script die), the URL in its environment only.
    init_id="$(TETHER_DATABASE_URL="postgres://tether:$pg_password@postgres:5432/tether?sslmode=disable" \
        docker create \
        --label "com.docker.compose.project=$TETHER_PROJECT" \
        --network "${TETHER_PROJECT}_db" \
        --env TETHER_DATABASE_URL \
        --volume "$data_volume:/data" \
        --volume "${TETHER_PROJECT}_manager-ca:/ca" \
        --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges:true \
        "tether-manager:${TETHER_IMAGE_TAG:-latest}" \
        init --data-dir /data --tls-san manager \
        --tls-san manager1 --tls-san manager2 --tls-san manager3 --env)"
    if ! docker start --attach "$init_id" >>"$tmp_env"; then
        die "tether-manager init failed (see above)"
    fi
    for key in ACCOUNT_ID ACCOUNT_SECRET TETHER_ADMIN_TOKEN; do
        grep -q "^$key=." "$tmp_env" || die "tether-manager init --env printed no $key"
    done
    # The delegates get the CA certificate alone (volume manager-ca, read-only for them).
    ca_tmp="$(mktemp -d)"
    docker cp "$init_id:/data/ca.pem" "$ca_tmp/ca.pem" >/dev/null \
        || die "could not read /data/ca.pem from volume $data_volume"
    chmod 0644 "$ca_tmp/ca.pem"
    docker cp "$ca_tmp/ca.pem" "$init_id:/ca/ca.pem" >/dev/null \
        || die "could not publish the CA certificate to volume ${TETHER_PROJECT}_manager-ca"
    rm -rf "$ca_tmp"
    docker rm "$init_id" >/dev/null
    init_id=""

    chmod 0600 "$tmp_env"
    mv -f "$tmp_env" "$TETHER_ENV_FILE"
    trap - EXIT
    say "wrote $TETHER_ENV_FILE (mode 0600)"
fi

# --- start and wait --------------------------------------------------------------------
say "starting $TETHER_PROJECT (postgres, manager1, manager2, manager3, delegate1, delegate2)"
# shellcheck disable=SC2034 # read by wait_delegates (up.sh)
started_at="$(date +%s)"
compose up -d

wait_delegates "Tether HA is up: three replicas behind 'manager' and two connected delegates (project $TETHER_PROJECT)."

# The replica set as any replica sees it: hosts (container ids), state and sessions of each.
compose exec -T manager1 /tether-manager replica list 2>/dev/null || true
say "Next: docker/compose.sh --ha exec manager1 /tether-manager token list   (see docker/README.md)"
