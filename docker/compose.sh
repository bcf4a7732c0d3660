#!/usr/bin/env bash
# `docker compose` for the Tether quick-start project, from any directory and with either
# Compose v2 or v1: e.g. `docker/compose.sh ps`, `docker/compose.sh logs -f delegate1`,
# `docker/compose.sh exec manager /tether-manager delegate list`.
set -euo pipefail
# shellcheck source=docker/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -f "$TETHER_ENV_FILE" ] || die "$TETHER_ENV_FILE is missing: run docker/up.sh first"
compose "$@"
