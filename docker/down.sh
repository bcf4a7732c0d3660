#!/usr/bin/env bash
# Stop the Tether quick start.
#
#   bash docker/down.sh             stop and remove the containers and network; keep the data
#   bash docker/down.sh --volumes   also remove the volumes (database, master key, CA, the
#                                   delegates' token files) and the .env: a clean slate
#   bash docker/down.sh --ha [...]  the same for the HA example (docker/up.sh --ha)
set -euo pipefail
export TETHER_HA=0
for arg in "$@"; do
    if [ "$arg" = --ha ]; then TETHER_HA=1; fi
done
# shellcheck source=docker/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

volumes=0
for arg in "$@"; do
    case "$arg" in
        -v|--volumes) volumes=1 ;;
        --ha) ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

env_file="$TETHER_ENV_FILE"
if [ ! -f "$env_file" ]; then
    # Compose needs an env file (v1 refuses /dev/null); the values do not matter for `down`.
    env_file="$(mktemp)"
    trap 'rm -f "$env_file"' EXIT
    no_env=1
fi

args=(down --remove-orphans --timeout 15)
[ "$volumes" = 1 ] && args+=(--volumes)
compose --env-file "$env_file" "${args[@]}"

# Delegates that replaced themselves created their containers outside Compose, but with the
# project's labels: Compose's `down` finds them by those labels. Sweep anything left over.
leftover="$(docker ps -aq --filter "label=com.docker.compose.project=$TETHER_PROJECT")"
if [ -n "$leftover" ]; then
    say "removing leftover containers of $TETHER_PROJECT"
    # shellcheck disable=SC2086
    docker rm -f $leftover >/dev/null
fi

if [ "$volumes" = 1 ]; then
    for volume in $(docker volume ls -q --filter "label=com.docker.compose.project=$TETHER_PROJECT"); do
        docker volume rm "$volume" >/dev/null
    done
    if [ -z "${no_env:-}" ]; then
        rm -f "$env_file"
        say "removed the volumes and $env_file"
    fi
fi
