"""`hnm mine --config tests/golden/mine_ce.py:tiny` in tests/test_golden.py: online_band_ce with a ce.margin that
drops some pool candidates of the golden run's barely trained cross-encoder, not all."""

from configs.ablations import online_band_ce


def get_config(arg: str | None = None):
    c = online_band_ce.get_config(arg)
    c.ce.margin = 1e-5  # its logits differ by ~1e-5 (2 steps of training): drops about half
    return c
