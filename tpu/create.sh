#!/usr/bin/env bash
# Creates a Cloud TPU VM (a single host such as v4-8 / v5e-8, or a multi-host slice such as v4-32).
#
#   tpu/create.sh [--preset v4-8|v4-32|v5e-8|v5e-16] [--name N] [--zone Z] [--project P]
#                 [--accelerator TYPE] [--version RUNTIME] [--spot | --preemptible] [--dry-run]
#
# Environment: TPU_NAME, TPU_PRESET, TPU_ACCELERATOR, TPU_VERSION, TPU_ZONE, TPU_PROJECT, TPU_DRY_RUN,
# TPU_CAPACITY (on-demand, spot or preemptible).
set -euo pipefail
# shellcheck source=tpu/common.sh
. "$(dirname "$0")/common.sh"

capacity="${TPU_CAPACITY:-on-demand}"
while [[ $# -gt 0 ]]; do
  parse_common "$@"
  if [[ $SHIFT -gt 0 ]]; then
    shift "$SHIFT"
    continue
  fi
  case "$1" in
    --spot) capacity=spot ;;
    --preemptible) capacity=preemptible ;;
    --on-demand) capacity=on-demand ;;
    -h | --help)
      sed -n '2,9p' "$0"
      exit 0
      ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
apply_preset
location_flags

args=(gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOCATION[@]}"
  "--accelerator-type=$TPU_ACCELERATOR" "--version=$TPU_VERSION")
case "$capacity" in
  spot) args+=(--spot) ;;
  preemptible) args+=(--preemptible) ;;
  on-demand) ;;
  *) die "TPU_CAPACITY='$capacity': use on-demand, spot or preemptible" ;;
esac
run "${args[@]}"
