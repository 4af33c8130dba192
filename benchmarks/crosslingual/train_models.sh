#!/usr/bin/env bash
# The two cross-lingual trainings of issue 16, same size and budget: MLM only, then MLM alternating with TLM.
# Resumable: run it again after an interruption and each run continues from its orbax checkpoints
# (a finished run only rewrites its model). Usage:
#   benchmarks/crosslingual/train_models.sh CORPUS MODEL_DIR OUT_ROOT [STEPS]
# CORPUS from build_corpus.py, MODEL_DIR from train_vocab.py; models go to OUT_ROOT/{mlm,mlm-tlm}/model.
set -euo pipefail
corpus=${1:?corpus directory}
model=${2:?model directory from train_vocab.py}
root=${3:?output root}
steps=${4:-5000}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
for objective in mlm mlm+tlm; do
  out="$root/${objective/+/-}"
  mkdir -p "$out"
  "$python" "$here/train_models.py" "$model" "$corpus" "$out" --objective "$objective" --steps "$steps" \
    2>&1 | tee -a "$out/train.log"
done
