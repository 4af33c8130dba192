#!/usr/bin/env bash
# Deletes the TPU VM (billing stops).
#
#   tpu/delete.sh [--name N] [--zone Z] [--project P] [--dry-run]
#
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
    -h | --help)
      sed -n '2,6p' "$0"
      exit 0
      ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
apply_preset
location_flags
run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOCATION[@]}" --quiet
