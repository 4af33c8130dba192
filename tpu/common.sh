#!/usr/bin/env bash
# Shared by the tpu/*.sh scripts: defaults, option parsing, and running (or, with --dry-run, printing) gcloud.
#
# Every setting has a default, which an environment variable overrides, which a flag overrides:
#   --name           TPU_NAME         xlm-flax
#   --preset         TPU_PRESET       v4-8   (v4-8, v5e-8, v4-32: sets the three below)
#   --accelerator    TPU_ACCELERATOR  from the preset (v4-8, v5litepod-8, v4-32, ...)
#   --version        TPU_VERSION      from the preset (the TPU VM runtime / software version)
#   --zone           TPU_ZONE         from the preset (us-central2-b for v4, us-west4-a for v5e)
#   --project        TPU_PROJECT      gcloud's configured project (no --project flag is passed)
#   --dry-run        TPU_DRY_RUN=1    print the gcloud commands instead of running them

TPU_NAME="${TPU_NAME:-xlm-flax}"
TPU_PRESET="${TPU_PRESET:-v4-8}"
TPU_ACCELERATOR="${TPU_ACCELERATOR:-}"
TPU_VERSION="${TPU_VERSION:-}"
TPU_ZONE="${TPU_ZONE:-}"
TPU_PROJECT="${TPU_PROJECT:-}"
TPU_DRY_RUN="${TPU_DRY_RUN:-0}"

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# Sets accelerator, runtime version and zone from the preset where they are not given.
apply_preset() {
  local accelerator version zone
  case "$TPU_PRESET" in
    v4-8) accelerator=v4-8 version=tpu-ubuntu2204-base zone=us-central2-b ;;
    v4-32) accelerator=v4-32 version=tpu-ubuntu2204-base zone=us-central2-b ;;
    v5e-8) accelerator=v5litepod-8 version=v2-alpha-tpuv5-lite zone=us-west4-a ;;
    v5e-16) accelerator=v5litepod-16 version=v2-alpha-tpuv5-lite zone=us-west4-a ;;
    *) die "unknown --preset '$TPU_PRESET': use v4-8, v4-32, v5e-8 or v5e-16, or give --accelerator, --version and --zone" ;;
  esac
  TPU_ACCELERATOR="${TPU_ACCELERATOR:-$accelerator}"
  TPU_VERSION="${TPU_VERSION:-$version}"
  TPU_ZONE="${TPU_ZONE:-$zone}"
}

# Parses one common option. Sets SHIFT, read by the calling script, to the number of words consumed (0: not a common
# option).
# shellcheck disable=SC2034
parse_common() {
  SHIFT=0
  case "$1" in
    --name | --preset | --accelerator | --version | --zone | --project)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      case "$1" in
        --name) TPU_NAME="$2" ;;
        --preset) TPU_PRESET="$2" ;;
        --accelerator) TPU_ACCELERATOR="$2" ;;
        --version) TPU_VERSION="$2" ;;
        --zone) TPU_ZONE="$2" ;;
        --project) TPU_PROJECT="$2" ;;
      esac
      SHIFT=2
      ;;
    --dry-run) TPU_DRY_RUN=1 SHIFT=1 ;;
  esac
}

# The flags every `gcloud compute tpus tpu-vm` command takes.
location_flags() {
  LOCATION=("--zone=$TPU_ZONE")
  if [[ -n "$TPU_PROJECT" ]]; then
    LOCATION+=("--project=$TPU_PROJECT")
  fi
}

# Quotes one word for a POSIX shell, only when needed, so that printed commands can be pasted back.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  elif [[ "$1" != *"'"* ]]; then
    printf "'%s'" "$1"
  elif [[ "$1" != *[\"\$\`\\!]* ]]; then
    printf '"%s"' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Runs a command, or prints it (one line, shell-quoted) with --dry-run.
run() {
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    local word sep=""
    for word in "$@"; do
      printf '%s%s' "$sep" "$(quote "$word")"
      sep=" "
    done
    printf '\n'
  else
    "$@"
  fi
}

# `gcloud compute tpus tpu-vm ssh` on every worker of the slice.
ssh_all() {
  location_flags
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker=all --command "$1"
}
