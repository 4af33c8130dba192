#!/usr/bin/env bash
# Runs one command on every worker at once (what a multi-host JAX program needs: every host runs the same program).
#
#   tpu/run.sh [--name N] [--zone Z] [--project P] [--dry-run] -- COMMAND [ARGS...]
#
# The command runs in ~/xlm-flax (where install.sh puts the project). Default command: print every worker's devices.
# Environment: TPU_NAME, TPU_ZONE, TPU_PROJECT, TPU_DRY_RUN.
set -euo pipefail
# shellcheck source=tpu/common.sh
. "$(dirname "$0")/common.sh"

while [[ $# -gt 0 ]]; do
  parse_common "$@"
  if [[ $SHIFT -gt 0 ]]; then
    shift "$SHIFT"
    continue
  fi
  case "$1" in
    --)
      shift
      break
      ;;
    -h | --help)
      sed -n '2,7p' "$0"
      exit 0
      ;;
    *) break ;;
  esac
done
apply_preset

if [[ $# -eq 0 ]]; then
  set -- python3 -c "import jax; jax.distributed.initialize(); print(jax.process_index(), jax.local_devices())"
fi
command=""
for word in "$@"; do
  command+="${command:+ }$(quote "$word")"
done
ssh_all "cd ~/xlm-flax && $command"
