# Shared by docker/up.sh, docker/down.sh and docker/compose.sh (sourced, not run).
# Picks the Compose command and the project settings:
#   TETHER_HA=1      the HA example (docker-compose.ha.yml): the scripts set it for --ha
#   TETHER_PROJECT   compose project name            (default: tether; HA: tether-ha)
#   TETHER_ENV_FILE  the project's env file          (default: docker/.env; HA: docker/.env.ha)
# shellcheck shell=bash

DOCKER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DOCKER_DIR/.." && pwd)"
if [ "${TETHER_HA:-0}" = 1 ]; then
    COMPOSE_FILE="$DOCKER_DIR/docker-compose.ha.yml"
    TETHER_PROJECT="${TETHER_PROJECT:-tether-ha}"
    TETHER_ENV_FILE="${TETHER_ENV_FILE:-$DOCKER_DIR/.env.ha}"
else
    COMPOSE_FILE="$DOCKER_DIR/docker-compose.yml"
    TETHER_PROJECT="${TETHER_PROJECT:-tether}"
    TETHER_ENV_FILE="${TETHER_ENV_FILE:-$DOCKER_DIR/.env}"
fi

die() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }

# Compose v2 (`docker compose`) when the plugin is there, else v1.29 (`docker-compose`).
if docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE_CMD=(docker-compose)
else
    die "neither 'docker compose' nor 'docker-compose' is installed"
fi

# compose [--env-file FILE] ARGS...: Compose for this project (the env file defaults to
# $TETHER_ENV_FILE, which must exist).
compose() {
    local env_file="$TETHER_ENV_FILE"
    if [ "${1:-}" = --env-file ]; then env_file="$2"; shift 2; fi
    "${COMPOSE_CMD[@]}" --project-name "$TETHER_PROJECT" --file "$COMPOSE_FILE" \
        --env-file "$env_file" "$@"
}
