#!/usr/bin/env bash
# `docker compose` for the Tether quick-start project, from any directory and with either
# Compose v2 or v1: e.g. `docker/compose.sh ps`, `docker/compose.sh logs -f delegate1`,
# `docker/compose.sh exec manager /tether-manager delegate list`. A first argument --ha picks
# the HA example: `docker/compose.sh --ha exec manager1 /tether-manager delegate list`.
set -euo pipefail
export TETHER_HA=0
if [ "${1:-}" = --ha ]; then
    TETHER_HA=1
    shift
fi
# shellcheck source=docker/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -f "$TETHER_ENV_FILE" ] || die "$TETHER_ENV_FILE is missing: run docker/up.sh first (--ha for the HA example)"
compose "$@"
