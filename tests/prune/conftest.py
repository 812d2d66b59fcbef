import pytest

import prune_snr
from prune_snr.measure import measure
from prune_snr.models import build_model


@pytest.fixture(scope="session")
def vgg_measured(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    model = prune_snr.load(out / "model.pt")
    result = measure(model, "synthetic", head_epochs=5, device="cpu", cache_dir=tmp_path_factory.mktemp("vggcache"))
    return model, result


@pytest.fixture(scope="session")
def effnet_measured(tmp_path_factory):
    """An untrained EfficientNet-B0 measured at every prunable group (stem, depthwise, blocks, head)."""
    model = build_model("efficientnet_b0", num_classes=10).eval()
    result = measure(
        model, "synthetic", expanded=True, head_epochs=2, device="cpu", cache_dir=tmp_path_factory.mktemp("effcache")
    )
    return model, result
