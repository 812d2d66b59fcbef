#!/usr/bin/env bash
# The main job on the embedded default: train a width-1/4 VGG-16 on Fashion-MNIST, measure it,
# and print the summary. Re-running resumes/reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/demo}
RECIPE=recipes/fashion_mnist_vgg16_w025.yaml

if [ -f "$RUN/model.pt" ]; then
  echo "== $RUN/model.pt exists: skipping training"
else
  echo "== train ($RECIPE) -> $RUN"
  prune-snr train --recipe "$RECIPE" --out "$RUN" $([ -f "$RUN/checkpoint.pt" ] && echo --resume)
fi

echo "== measure -> $RUN/measurement"
prune-snr measure "$RUN/model.pt" --recipe "$RECIPE" --labels 3,5,10 --out "$RUN/measurement"

python3 - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
metrics = json.load(open(f"{run}/metrics.json"))
m = json.load(open(f"{run}/measurement/measurement.json"))
first, last = m["points"][0], m["points"][-1]
print(f"\nsummary: {metrics['model']} on {metrics['dataset']}: test accuracy {metrics['test_accuracy']:.4f}, "
      f"{metrics['params']:,} params, {metrics['macs']:,} MACs")
print(f"head accuracy {first['accuracy']:.3f} ({first['name']}) -> {last['accuracy']:.3f} ({last['name']}); "
      f"layer SNR {first['snr']:.2f} -> {last['snr']:.2f}; noise/filter {first['noise_per_filter']:.1f} -> {last['noise_per_filter']:.1f}")
print(f"artifacts: {run}/model.pt, {run}/measurement/{{measurement.json,fields.npz,*.png}}")
PY
