#!/usr/bin/env bash
# The main job on day one, without COCO: set up, generate a small synthetic COCO-format data set,
# train a PosMLP-T detector from scratch, test it, and draw what it found.
#
#   bash tools/run_demo.sh              # RetinaNet-PosMLP-T (training time: docs/demo.md)
#   bash tools/run_demo.sh mask_rcnn    # Mask R-CNN-PosMLP-T: boxes and instance masks
#   bash tools/run_demo.sh all          # both, one after the other
#   bash tools/run_demo.sh configs/demo/retinanet_hire_mlp_tiny_demo.py   # any demo config
#                                       # (also retinanet_posmlp_t_shift_demo.py: shifted windows)
#
# What it leaves (DET = retinanet | mask_rcnn):
#   data/demo_shapes/                          the data (tools/make_demo_data.py; kept, reused)
#   work_dirs/demo_DET/                        training log, checkpoint, training_curves.png
#                                              (a config file: work_dirs/demo_<its name>/)
#   work_dirs/demo_DET/test/<time>/            test log with the COCO table
#   work_dirs/demo_DET/test/<time>/vis/        predictions drawn on the val images
#
# Environment knobs: PYTHON (default python3); SKIP_SETUP=1 skips tools/setup_env.sh;
# DEMO_OPTIONS="key=value ..." extra --cfg-options for training (e.g. train_cfg.max_epochs=2).
set -euo pipefail
# a relative interpreter path (PYTHON=.venv/bin/python) must survive the cd's that follow;
# the venv's own path, not its link target, which would leave the venv
case ${PYTHON:=python3} in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
export PYTHON
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WHICH=${1:-retinanet}
case "$WHICH" in
  retinanet) CONFIGS=(configs/demo/retinanet_posmlp_t_demo.py) ;;
  mask_rcnn) CONFIGS=(configs/demo/mask_rcnn_posmlp_t_demo.py) ;;
  all) CONFIGS=(configs/demo/retinanet_posmlp_t_demo.py configs/demo/mask_rcnn_posmlp_t_demo.py) ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  *.py) [ -f "$WHICH" ] || { echo "no such config: $WHICH" >&2; exit 2; }; CONFIGS=("$WHICH") ;;
  *) echo "usage: bash tools/run_demo.sh [retinanet|mask_rcnn|all|CONFIG.py]" >&2; exit 2 ;;
esac
say() { echo "[demo] $(date +%H:%M:%S) $*"; }

if [ "${SKIP_SETUP:-0}" != 1 ]; then
  say "setting up the environment (seconds when it is already done)"
  bash tools/setup_env.sh
fi

say "demo data: data/demo_shapes (synthetic shapes in COCO format, no download)"
"$PYTHON" tools/make_demo_data.py --out data/demo_shapes

for config in "${CONFIGS[@]}"; do
  name=$(basename "$config" .py)
  det=${name%_demo}
  det=${det%_posmlp_t}  # the default demos keep their work_dirs/demo_retinanet, demo_mask_rcnn
  work=work_dirs/demo_${det}
  say "training $config from scratch -> $work"
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$PYTHON" tools/train.py "$config" --work-dir "$work" \
    ${DEMO_OPTIONS:+--cfg-options $DEMO_OPTIONS}
  say "training took $(( $(date +%s) - start )) s"

  checkpoint=$(cat "$work/last_checkpoint")
  say "testing $checkpoint on the val split (COCO metric), drawing predictions"
  "$PYTHON" tools/test.py "$config" "$checkpoint" --work-dir "$work/test" --show-dir vis

  vis=$(ls -td "$work"/test/*/vis 2>/dev/null | head -n 1 || true)
  curves=
  "$PYTHON" tools/analysis/plot_logs.py "$work" --out "$work/training_curves.png" \
    --title "$name, demo shapes" && curves="$work/training_curves.png"
  say "done: $det"
  echo "    checkpoint:            $checkpoint"
  if [ -n "$vis" ]; then echo "    predictions drawn in:  $vis/ ($(ls "$vis" | wc -l) images)"; fi
  if [ -n "$curves" ]; then echo "    loss and mAP curves:   $curves"; fi
done
