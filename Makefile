PYTHON ?= python3
RUN ?= runs/demo

.PHONY: install data demo test test-slow lint same-outputs offline-bundle

install:
	PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -e ".[dev]" -c constraints.txt

# Debian ships Fashion-MNIST: install it where we can (root with apt-get); elsewhere prune-snr downloads
# it on first use into ~/.cache/prune-snr (torchvision's downloader, checksums verified).
data:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } || \
	  { [ "$$CI" = true ] && { echo "error: Debian's dataset-fashion-mnist could not be installed; CI's tests need it" >&2; exit 1; }; } || \
	  echo "Debian's dataset-fashion-mnist is not installable here: prune-snr downloads Fashion-MNIST on first use"

demo: install data
	RUN=$(RUN) bash scripts/demo.sh

test:
	$(PYTHON) -m pytest -q

test-slow:
	$(PYTHON) -m pytest -q -m slow

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

# Fingerprints of fixed seeded scenarios: BEFORE=FILE (from another commit's `make same-outputs OUT=FILE`) compares.
same-outputs:
	$(PYTHON) scripts/same_outputs.py $(if $(OUT),--out $(OUT)) $(if $(BEFORE),--compare $(BEFORE))

# The wheels an air-gapped GPU node lacks, for its Python, and Fashion-MNIST: .whl/ and .data/, read by
# benchmarks/gpu_paper.sh. HAVE=FILE: the node's `pip list --format=freeze` (default: a plain CUDA PyTorch image).
BUNDLE_PYTHON ?= 3.12
offline-bundle:
	$(PYTHON) scripts/offline_bundle.py --python $(BUNDLE_PYTHON) $(if $(HAVE),--have $(HAVE))
