#!/usr/bin/env bash
# The paper's setting at full width on one borrowed GPU, as ONE prepared command: VGG-16 (full width) and
# EfficientNet-B0 on Fashion-MNIST, each trained in bf16, measured at every point (EfficientNet --expanded),
# pruned to half its MACs, fine-tuned, exported to ONNX. Prints every phase's wall time and the measurement's
# in-process time divided by one warm inference pass over the images it read, at its batch size; writes gpu_paper.json (rewritten
# after every phase, so a run cut short still reports what finished), gpu_paper.log and heads_feed.json (the
# heads' three feeds compared on the device: benchmarks/heads_feed_check.py) flat into $OUT.
#
#   bash benchmarks/gpu_paper.sh                      # on the GPU machine, from the repository root
#   DEVICE=cpu SUBSET=600 VGG_EPOCHS=1 EFF_EPOCHS=1 FINETUNE_EPOCHS=1 MEASURE_PER_CLASS=20 HEAD_EPOCHS=3 \
#     OUT=/tmp/rehearsal bash benchmarks/gpu_paper.sh  # the CPU rehearsal: same carried files, 600 + 100 images
#
# The machine it is written for has PyTorch and a GPU but no network and no package index. What prune-snr needs
# beyond its image travels in two ignored folders of the working tree, written where pip works by
#   make offline-bundle HAVE=benchmarks/gpu_image_packages.txt   # (scripts/offline_bundle.py; BUNDLE_PYTHON=3.12)
#   .whl/   the wheels of prune-snr's dependencies the image lacks, for its Python (for the lent machines' image:
#           torch-pruning and optuna's stack, ~7 MiB; for a plain CUDA PyTorch image ~105 MiB): each installed with
#           pip --no-index --no-deps --target (or unzipped) into $SITE, only when not installed already.
#   .data/  Fashion-MNIST's four IDX .gz files (from /usr/share/datasets/fashion-mnist/).
# Before any work the script checks the four data files and every module the commands import, and stops in one
# line naming what is missing.
# prune-snr itself runs from the tree (PYTHONPATH=$SITE:.). Run folder, feature cache and decompressed data stay
# outside the tree (/tmp); each model's feature cache is removed after its measurement.
#
# Sizing (~8 minutes on one H200; one command may run 10): the per-image costs measured on this project's CPU
# (benchmarks/imagenet_shape.py: EfficientNet-B0 expanded caches 193 kB per image at --pool 2 in float32, VGG-16
# 68 kB) make a full measurement of 70,000 images a 13.5 GB write-then-read for EfficientNet alone, so the
# measurement reads at most MEASURE_PER_CLASS=2000 training images per label (--train-per-class; the 6,000
# validation images are the training's held-out ones, unchanged) with a float16 cache: 36,000 rows, 3.5 GB
# (EfficientNet) and 1.2 GB (VGG). Training is the bulk: VGG_EPOCHS=2 and EFF_EPOCHS=3 (not the CPU recipe's 8),
# FINETUNE_EPOCHS=1, at batch 256 with 8 loader workers: at ~10-20 s per Fashion-MNIST epoch (data loading bound;
# an estimate, never measured on a GPU) about 2 minutes, measurements ~1.5 min each, prune+fine-tune ~0.5 min
# each, exports (onnxruntime on the CPU) ~0.5 min each, plus ~10 s of interpreter start per phase. Shrink with the
# variables above if a first run's gpu_paper.json shows a phase far above this.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_paper}
RUN=${RUN:-/tmp/gpu_paper_run}
SITE=${SITE:-/tmp/prune_snr_site}
DEVICE=${DEVICE:-cuda}
VGG_EPOCHS=${VGG_EPOCHS:-2}
EFF_EPOCHS=${EFF_EPOCHS:-3}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-1}
MEASURE_PER_CLASS=${MEASURE_PER_CLASS:-2000}
HEAD_EPOCHS=${HEAD_EPOCHS:-10}
WORKERS=${WORKERS:-8}
SUBSET=${SUBSET:-}  # N: use only the first N training and N/6 test images (a rehearsal)
# FORCE_BUNDLE=1: install every carried wheel, also those the machine has (the rehearsal exercises the bundle)
AMP=$([ "$DEVICE" = cpu ] && echo --no-amp || echo --amp)
export PRUNE_SNR_CACHE=${PRUNE_SNR_CACHE:-/tmp/prune_snr_cache}
mkdir -p "$OUT" "$RUN" "$SITE" "$PRUNE_SNR_CACHE"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/gpu_paper.log") 2>&1
TIMES="$RUN/phases.tsv"
: >"$TIMES"

summarize() {  # gpu_paper.json from the phases so far (also on failure, from the EXIT trap)
  python3 - "$RUN" "$OUT" "$1" <<'PY'
import csv, json, sys
from pathlib import Path
run, out, status = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
summary = {"status": status, "models": {}}
for model, phase, seconds in csv.reader(open(run / "phases.tsv"), delimiter="\t"):
    summary["models"].setdefault(model, {})[phase + "_s"] = float(seconds)
for model, t in summary["models"].items():
    d = run / model
    if (d / "metrics.json").is_file():
        m = json.loads((d / "metrics.json").read_text())
        t.update(test_accuracy=m["test_accuracy"], params=m["params"], macs=m["macs"])
    if (d / "measurement" / "measurement.json").is_file():
        meas = json.loads((d / "measurement" / "measurement.json").read_text())
        t["measurement"] = {k: meas[k] for k in ("timings", "split_sizes", "feature_rows", "feature_cache_bytes") if k in meas}
        t["measurement"]["points"] = len(meas["points"])
        t["measurement"]["fields_npz_bytes"] = (d / "measurement" / "fields.npz").stat().st_size
        if "inference_pass_s" in t:
            t["measure_over_inference_pass"] = meas["timings"]["total_s"] / t["inference_pass_s"]
    if (d / "pruned" / "report.json").is_file():
        r = json.loads((d / "pruned" / "report.json").read_text())
        t["pruned"] = {"before": r.get("before"), "after": r.get("after")}
if (out / "heads_feed.json").is_file():  # the heads' feeds agree on this device (benchmarks/heads_feed_check.py)
    summary["heads_feed_ok"] = json.loads((out / "heads_feed.json").read_text())["ok"]
(out / "gpu_paper.json").write_text(json.dumps(summary, indent=2, default=str))
PY
}
trap 'rc=$?; summarize "$([ $rc = 0 ] && echo complete || echo "failed (exit $rc)")"; exit $rc' EXIT

phase() {  # phase MODEL NAME command...: timed; set -e stops the run on the first failure
  local model=$1 name=$2
  shift 2
  echo "== $model: $name"
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  printf '%s\t%s\t%.1f\n' "$model" "$name" "$(awk "BEGIN{print $t1 - $t0}")" | tee -a "$TIMES"
  summarize running
}

# --- setup: the carried wheels and data (scripts/offline_bundle.py writes both) -------------------------------
t0=$(date +%s.%N)
shopt -s nullglob
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f ".data/$f" ] || { echo "error: .data/$f is missing: run 'make offline-bundle' where pip works and carry .data/ and .whl/" >&2; exit 1; }
done
wheels=()
for wheel in .whl/*.whl; do
  dist=$(basename "$wheel" | cut -d- -f1)
  if [ -z "${FORCE_BUNDLE:-}" ] && python3 -c 'import importlib.metadata as m, sys; m.version(sys.argv[1])' "$dist" 2>/dev/null; then
    echo "$dist: the machine's own"; continue
  fi
  wheels+=("$wheel")
done
if [ ${#wheels[@]} -gt 0 ]; then
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}"
  else
    for wheel in "${wheels[@]}"; do python3 -m zipfile -e "$wheel" "$SITE"; done
  fi
  echo "installed from .whl/: ${wheels[*]##*/}"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY'  # every module prune-snr's commands import, before any work: one line naming what is missing
import importlib.util, sys
need = ("torch", "torchvision", "timm", "torch_pruning", "numpy", "scipy", "rich", "typer", "yaml", "onnx", "onnxruntime",
        "onnxscript", "matplotlib")
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"error: {', '.join(missing)} not importable here: make offline-bundle HAVE=<this machine's pip list> and carry .whl/")
PY
PRUNE_SNR=(python3 -m prune_snr.cli)
DATA_DIR=$PWD/.data
if [ -n "$SUBSET" ]; then  # the first SUBSET training and SUBSET/6 test images, IDX .gz as the carried files
  DATA_DIR=$RUN/data
  python3 - "$PWD/.data" "$DATA_DIR" "$SUBSET" <<'PY'
import gzip, struct, sys
from pathlib import Path
src, dst, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dst.mkdir(parents=True, exist_ok=True)
for prefix, count in (("train", n), ("t10k", max(n // 6, 20))):
    for kind, row in (("images-idx3", 28 * 28), ("labels-idx1", 1)):
        raw = gzip.decompress((src / f"{prefix}-{kind}-ubyte.gz").read_bytes())
        header = 16 if row > 1 else 8
        out = raw[:4] + struct.pack(">I", count) + raw[8:header] + raw[header:header + count * row]
        (dst / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(out))
PY
  rm -rf "$PRUNE_SNR_CACHE/FashionMNIST"  # decompressed from whichever folder came first: not the subset's
fi
python3 -c "import torch, torch_pruning, onnxscript, prune_snr.cli; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '| torch_pruning', torch_pruning.__version__)"
printf 'setup\tinstall\t%.1f\n' "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" | tee -a "$TIMES"

plain_pass() {  # one warm no-grad pass over the images the measurement read, at its batch size (warm-up not timed)
  python3 benchmarks/plain_pass.py "$RUN/$1/model.pt" "$RUN/$1/measurement" --data-dir "$DATA_DIR" --device "$DEVICE" \
    --out "$RUN/$1/plain_pass.json"
  printf '%s\t%s\t%s\n' "$1" inference_pass "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["seconds"])' \
    "$RUN/$1/plain_pass.json")" | tee -a "$TIMES"
}

analyse() {  # analyse NAME TRAIN_FLAGS -- MEASURE_FLAGS
  local name=$1 dir="$RUN/$1"
  shift
  local train_flags=() measure_flags=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do train_flags+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  measure_flags=("$@")
  rm -rf "$dir"
  phase "$name" train "${PRUNE_SNR[@]}" train "${train_flags[@]}" --dataset fashion-mnist --data-dir "$DATA_DIR" \
    --device "$DEVICE" $AMP --workers "$WORKERS" --out "$dir"
  phase "$name" measure "${PRUNE_SNR[@]}" measure "$dir/model.pt" "${measure_flags[@]}" --pool 2 --cache-dtype float16 \
    --train-per-class "$MEASURE_PER_CLASS" --head-epochs "$HEAD_EPOCHS" --data-dir "$DATA_DIR" --device "$DEVICE" $AMP \
    --batch-size 1024 --no-plots --out "$dir/measurement"
  rm -rf "$PRUNE_SNR_CACHE/features"
  plain_pass "$name"
  phase "$name" prune "${PRUNE_SNR[@]}" prune "$dir/model.pt" --measurement "$dir/measurement" --target 0.5 --metric macs \
    --finetune-epochs "$FINETUNE_EPOCHS" --data-dir "$DATA_DIR" --device "$DEVICE" $AMP --out "$dir/pruned"
  phase "$name" export "${PRUNE_SNR[@]}" export "$dir/pruned/pruned.pt" --out "$dir/pruned/model.onnx" --repeats 10
  cp "$dir/measurement/measurement.json" "$OUT/$name-measurement.json"
  cp "$dir/pruned/report.json" "$OUT/$name-report.json"
}

# the heads' host-held feed, which only a GPU short of memory takes, against the device-held one (seconds; not fatal)
phase checks heads_feed python3 benchmarks/heads_feed_check.py --device "$DEVICE" --rows "$([ -n "$SUBSET" ] && echo 3000 || echo 30000)" \
  --out "$OUT/heads_feed.json" || true
analyse vgg16 --model vgg16 --epochs "$VGG_EPOCHS" --batch-size 256 --lr 0.05
analyse efficientnet_b0 --recipe recipes/fashion_mnist_efficientnet_b0.yaml --epochs "$EFF_EPOCHS" --batch-size 256 -- --expanded
