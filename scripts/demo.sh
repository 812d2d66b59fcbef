#!/usr/bin/env bash
# The main job on the embedded default: train a width-1/4 VGG-16 on Fashion-MNIST, measure it,
# prune it to 50% of its parameters, export ONNX, and print the summary. Re-running resumes/reuses what is already there.
#
# Sized by environment variables (CI runs a small configuration of this same script):
#   RUN=runs/demo  EPOCHS=5 (the recipe's)  LABELS=3,5,10 (label sweep)  FINETUNE_EPOCHS=3 (the recipe's)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/demo}
RECIPE=recipes/fashion_mnist_vgg16_w025.yaml
LABELS=${LABELS:-3,5,10}
EPOCHS_FLAG=${EPOCHS:+--epochs $EPOCHS}
FINETUNE_FLAG=${FINETUNE_EPOCHS:+--finetune-epochs $FINETUNE_EPOCHS}
start=$SECONDS

if [ -f "$RUN/model.pt" ]; then
  echo "== $RUN/model.pt exists: skipping training"
else
  echo "== train ($RECIPE) -> $RUN"
  prune-snr train --recipe "$RECIPE" --out "$RUN" $EPOCHS_FLAG $([ -f "$RUN/checkpoint.pt" ] && echo --resume)
fi

echo "== measure -> $RUN/measurement"
prune-snr measure "$RUN/model.pt" --recipe "$RECIPE" --labels "$LABELS" --out "$RUN/measurement"

echo "== prune to 50% of the parameters -> $RUN/pruned"
prune-snr prune "$RUN/model.pt" --recipe "$RECIPE" --measurement "$RUN/measurement" --out "$RUN/pruned" $FINETUNE_FLAG \
  $([ -f "$RUN/pruned/finetune.pt" ] && echo --resume)

echo "== export ONNX -> $RUN/pruned/model.onnx"
prune-snr export "$RUN/pruned/pruned.pt" --out "$RUN/pruned/model.onnx"

python3 - "$RUN" "$((SECONDS - start))" <<'PY'
import json, sys
run, seconds = sys.argv[1], int(sys.argv[2])
metrics = json.load(open(f"{run}/metrics.json"))
m = json.load(open(f"{run}/measurement/measurement.json"))
p = json.load(open(f"{run}/pruned/report.json"))
x = json.load(open(f"{run}/pruned/model.onnx.json"))
first, last = m["points"][0], m["points"][-1]
print(f"\nsummary: {metrics['model']} on {metrics['dataset']}: test accuracy {metrics['test_accuracy']:.4f}, "
      f"{metrics['params']:,} params, {metrics['macs']:,} MACs")
print(f"head accuracy (val/test) {first['val_accuracy']:.3f}/{first['test_accuracy']:.3f} ({first['name']}) -> "
      f"{last['val_accuracy']:.3f}/{last['test_accuracy']:.3f} ({last['name']}); "
      f"layer SNR {first['snr']:.2f} -> {last['snr']:.2f}; noise/filter {first['noise_per_filter']:.1f} -> {last['noise_per_filter']:.1f}")
print(f"pruned ({p['criterion']}, {p['allocation']}): test accuracy {p['before']['accuracy']:.4f} -> {p['after']['accuracy']:.4f}, "
      f"params {p['before']['params']:,} -> {p['after']['params']:,}, MACs {p['before']['macs']:,} -> {p['after']['macs']:,}")
print(f"ONNX: {x['onnx']} ({x['bytes'] / 1e6:.2f} MB), onnxruntime max abs diff {x['batch_8_max_abs_diff']:.1e}, "
      f"speedup at batch 32: {x.get('speedup', {}).get('batch_32', float('nan')):.2f}x")
print(f"artifacts: {run}/model.pt, {run}/measurement/, {run}/pruned/{{pruned.pt,report.json,model.onnx}}; {seconds} s")
PY
