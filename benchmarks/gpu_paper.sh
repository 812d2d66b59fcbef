#!/usr/bin/env bash
# The paper's setting at full width on one GPU: VGG-16 (full width) and EfficientNet-B0 on
# Fashion-MNIST, each trained in bf16, measured at every point, pruned to half its MACs and
# exported to ONNX. Prints the wall time of every phase and the measurement's time divided by
# one inference pass over the same images (train + test split). Sized for ~10 minutes on one H100.
#
#   DATA_DIR=/path/to/fashion-mnist-gz bash benchmarks/gpu_paper.sh [RUN_DIR]
#
# VGG_EPOCHS (default 2) and EFF_EPOCHS (default 8, the recipe's) set the training length;
# DEVICE=cpu DATASET=synthetic VGG_EPOCHS=1 EFF_EPOCHS=1 is a quick smoke test without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/gpu_paper}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
PRUNE_SNR=${PRUNE_SNR:-prune-snr}
VGG_EPOCHS=${VGG_EPOCHS:-2}
EFF_EPOCHS=${EFF_EPOCHS:-8}
DEVICE=${DEVICE:-cuda}
DATASET=${DATASET:-fashion-mnist}
export PRUNE_SNR_CACHE=${PRUNE_SNR_CACHE:-$RUN/cache}
mkdir -p "$RUN"
TIMES="$RUN/phases.tsv"
: >"$TIMES"

phase() {  # phase MODEL NAME command...
  local model=$1 name=$2
  shift 2
  local t0=$(date +%s.%N)
  "$@"
  local t1=$(date +%s.%N)
  printf '%s\t%s\t%.1f\n' "$model" "$name" "$(awk "BEGIN{print $t1 - $t0}")" | tee -a "$TIMES"
  if [ -n "${KEEP:-}" ]; then cp "$TIMES" "$KEEP/"; fi
}

inference_pass() {  # seconds of one no-grad forward pass over train + test, as the measurement reads them
  python3 - "$1" "$DATASET" "$DATA_DIR" "$DEVICE" <<'PY'
import sys, time, torch
import prune_snr
from prune_snr.data import build_dataset
from prune_snr.runtime import autocast, make_loader
dev = torch.device(sys.argv[4])
model = prune_snr.load(sys.argv[1]).to(dev).eval()
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
total = 0.0
for split in ("train", "test"):
    ds = build_dataset(sys.argv[2], split, sys.argv[3], augment=False, input_size=model.spec.get("input_size"))
    sync(); t0 = time.perf_counter()
    with torch.no_grad():
        for x, _ in make_loader(ds, batch_size=1024, shuffle=False):
            with autocast(dev, True):
                model(x.to(dev, non_blocking=True))
    sync(); total += time.perf_counter() - t0
print(f"{total:.2f}")
PY
}

train_model() {  # train_model NAME FLAGS...: skipped when NAME/model.pt exists
  local name=$1 dir="$RUN/$1"
  shift
  [ -f "$dir/model.pt" ] || phase "$name" train $PRUNE_SNR train "$@" --dataset "$DATASET" --data-dir "$DATA_DIR" \
    --device "$DEVICE" --amp --workers 8 --out "$dir" $([ -f "$dir/checkpoint.pt" ] && echo --resume)
  if [ -n "${KEEP:-}" ]; then cp "$dir/model.pt" "$KEEP/$name-model.pt"; cp "$dir/metrics.json" "$KEEP/$name-metrics.json"; fi
}

analyse_model() {  # analyse_model NAME MEASURE_FLAGS...: measure, one inference pass, prune to 50 % of MACs, export
  local name=$1 dir="$RUN/$1"
  shift
  phase "$name" measure $PRUNE_SNR measure "$dir/model.pt" "$@" --data-dir "$DATA_DIR" --device "$DEVICE" --amp \
    --batch-size 1024 --no-plots --out "$dir/measurement"
  local pass_s
  pass_s=$(inference_pass "$dir/model.pt")
  printf '%s\t%s\t%s\n' "$name" inference_pass "$pass_s" | tee -a "$TIMES"
  rm -rf "$dir/pruned"
  phase "$name" prune $PRUNE_SNR prune "$dir/model.pt" --measurement "$dir/measurement" --target 0.5 --metric macs \
    --finetune-epochs 1 --data-dir "$DATA_DIR" --device "$DEVICE" --amp --out "$dir/pruned"
  phase "$name" export $PRUNE_SNR export "$dir/pruned/pruned.pt" --out "$dir/pruned/model.onnx" --repeats 10
}

# Training first (the checkpoints are what a later CPU session needs most), then the analyses.
# KEEP=DIR copies each trained model.pt and metrics.json there as soon as it exists.
train_model efficientnet_b0 --recipe recipes/fashion_mnist_efficientnet_b0.yaml --epochs "$EFF_EPOCHS"
train_model vgg16 --model vgg16 --epochs "$VGG_EPOCHS" --batch-size 256 --lr 0.05
analyse_model vgg16 --pool 2 || echo "vgg16: an analysis phase failed"
analyse_model efficientnet_b0 --expanded --pool 2 || echo "efficientnet_b0: an analysis phase failed"

python3 - "$RUN" <<'PY'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = list(csv.reader(open(run / "phases.tsv"), delimiter="\t"))
out = {}
for model, phase, seconds in rows:
    out.setdefault(model, {})[phase + "_s"] = float(seconds)
for model, t in out.items():
    d = run / model
    if not (d / "pruned" / "report.json").is_file() or "export_s" not in t:
        print(f"{model}: incomplete, phases {sorted(t)}")
        continue
    metrics = json.loads((d / "metrics.json").read_text())
    report = json.loads((d / "pruned" / "report.json").read_text())
    meas = json.loads((d / "measurement" / "measurement.json").read_text())
    t["measure_over_inference_pass"] = t["measure_s"] / t["inference_pass_s"]
    t["heads_and_fields_s"] = meas["timings"]["heads_and_fields_s"]
    t["test_accuracy"] = metrics["test_accuracy"]
    t["params"], t["macs"] = metrics["params"], metrics["macs"]
    t["pruned"] = {"before": report["before"], "after": report["after"]}
    t["points"] = len(meas["points"])
    print(f"{model}: test acc {t['test_accuracy']:.4f}; train {t.get('train_s', float('nan')):.0f} s, measure {t['measure_s']:.0f} s "
          f"({t['points']} points; {t['measure_over_inference_pass']:.1f}x one inference pass of {t['inference_pass_s']:.1f} s), "
          f"prune+finetune {t['prune_s']:.0f} s ({report['before']['accuracy']:.4f} -> {report['after']['accuracy']:.4f}, "
          f"MACs {report['before']['macs']:,} -> {report['after']['macs']:,}), export {t['export_s']:.0f} s")
(run / "gpu_paper.json").write_text(json.dumps(out, indent=2))
PY
