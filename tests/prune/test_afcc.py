"""Specs of prune/afcc.py: the classifier's weights outside each filter's label clusters are zeroed."""


def test_afcc_zeroes_exactly_the_weights_outside_filter_clusters(vgg_measured):
    import copy

    from prune_snr.data import build_dataset
    from prune_snr.prune.afcc import apply_afcc

    model, _ = vgg_measured
    m = copy.deepcopy(model)
    stats = apply_afcc(m, build_dataset("synthetic", "test", augment=False))
    assert stats["weights_before"] == m.classifier.weight.numel()
    assert 0 < stats["weights_after"] < stats["weights_before"]
    assert int((m.classifier.weight != 0).sum()) == stats["weights_after"]
