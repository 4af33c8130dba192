#!/usr/bin/env bash
# Puts a converted checkpoint (a directory written by `xlm-flax convert`) on the local disk of every worker.
#
#   tpu/copy_checkpoint.sh [--src DIR | --gcs gs://BUCKET/PATH] [--dest REMOTE_DIR] [--name N] [--zone Z]
#                          [--project P] [--dry-run]
#
# --src copies a local directory to every worker (default ./xlm-mlm-en-2048); --gcs has every worker copy it from a
# Cloud Storage bucket (faster for large slices: the workers read in parallel, and the VM's service account needs
# read access). --dest defaults to ~/checkpoints/<basename>.
# Environment: TPU_NAME, TPU_ZONE, TPU_PROJECT, TPU_DRY_RUN, XLM_FLAX_CHECKPOINT, XLM_FLAX_GCS, XLM_FLAX_DEST.
set -euo pipefail
# shellcheck source=tpu/common.sh
. "$(dirname "$0")/common.sh"

src="${XLM_FLAX_CHECKPOINT:-./xlm-mlm-en-2048}"
gcs="${XLM_FLAX_GCS:-}"
dest="${XLM_FLAX_DEST:-}"
while [[ $# -gt 0 ]]; do
  parse_common "$@"
  if [[ $SHIFT -gt 0 ]]; then
    shift "$SHIFT"
    continue
  fi
  case "$1" in
    --src | --gcs | --dest)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      case "$1" in
        --src) src="$2" ;;
        --gcs) gcs="$2" ;;
        --dest) dest="$2" ;;
      esac
      shift
      ;;
    -h | --help)
      sed -n '2,11p' "$0"
      exit 0
      ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
apply_preset
location_flags

if [[ -n "$gcs" ]]; then
  [[ "$gcs" == gs://* ]] || die "--gcs '$gcs' is not a gs:// path"
  dest="${dest:-checkpoints/$(basename "$gcs")}"
  ssh_all "mkdir -p $(quote "$dest") && gcloud storage cp -r $(quote "${gcs%/}/*") $(quote "$dest")/"
else
  src="${src%/}"
  if [[ "$TPU_DRY_RUN" != 1 && ! -f "$src/config.json" ]]; then
    die "$src has no config.json; convert a checkpoint first (xlm-flax convert HUB_ID DIR) or pass --src"
  fi
  dest="${dest:-checkpoints/$(basename "$src")}"
  ssh_all "mkdir -p $(quote "$(dirname "$dest")")"
  run gcloud compute tpus tpu-vm scp --recurse "$src" "$TPU_NAME:$dest" "${LOCATION[@]}" --worker=all
fi
