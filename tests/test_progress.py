"""Specs of progress.py: plain one-line-per-step progress when not on a terminal."""


def test_plain_progress_says_where_a_long_task_is_at_each_interval():
    from prune_snr.progress import PlainProgress, track

    lines = []
    with PlainProgress(lines.append, interval=0.0) as p:
        for _ in track(p, range(3), "epoch 1/8"):
            pass
    assert [line.split(" after ")[0] for line in lines[:-1]] == ["epoch 1/8: 1/3", "epoch 1/8: 2/3", "epoch 1/8: 3/3"]
    assert lines[-1].startswith("epoch 1/8: 3/3 in ")
