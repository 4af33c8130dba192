#!/usr/bin/env bash
# Installs JAX for TPU and this project on every worker of the TPU VM.
#
#   tpu/install.sh [--source DIR | --package SPEC] [--name N] [--zone Z] [--project P] [--dry-run]
#
# --source DIR (default: this checkout) packs the git-tracked files, copies them to every worker and installs them
# with `pip install -e`; --package SPEC installs a pip requirement instead (e.g. a wheel URL or git+https://...).
# Environment: TPU_NAME, TPU_ZONE, TPU_PROJECT, TPU_DRY_RUN, XLM_FLAX_SOURCE, XLM_FLAX_PACKAGE, TPU_JAX (the JAX
# requirement, default jax[tpu]).
set -euo pipefail
# shellcheck source=tpu/common.sh
. "$(dirname "$0")/common.sh"

source_dir="${XLM_FLAX_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}"
package="${XLM_FLAX_PACKAGE:-}"
jax_requirement="${TPU_JAX:-jax[tpu]}"
while [[ $# -gt 0 ]]; do
  parse_common "$@"
  if [[ $SHIFT -gt 0 ]]; then
    shift "$SHIFT"
    continue
  fi
  case "$1" in
    --source | --package)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      if [[ "$1" == --source ]]; then source_dir="$2"; else package="$2"; fi
      shift
      ;;
    -h | --help)
      sed -n '2,10p' "$0"
      exit 0
      ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
apply_preset
location_flags

pip_jax="python3 -m pip install -U '$jax_requirement'"
if [[ -n "$package" ]]; then
  ssh_all "$pip_jax && python3 -m pip install '$package'"
else
  archive="${TMPDIR:-/tmp}/xlm-flax-src.tar.gz"
  run git -C "$source_dir" archive --format=tar.gz --prefix=xlm-flax/ -o "$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:xlm-flax-src.tar.gz" "${LOCATION[@]}" --worker=all
  ssh_all "rm -rf ~/xlm-flax && tar -xzf ~/xlm-flax-src.tar.gz -C ~ && $pip_jax && python3 -m pip install -e ~/xlm-flax"
fi
