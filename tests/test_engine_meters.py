"""Metric sums: per-sample means over all batches, nested keys for results.json."""

import torch

from filter_basis.engine.distributed import DistEnv, ShardSampler
from filter_basis.engine.meters import MetricSums, flatten, nest


def test_means_are_sums_over_counts_not_means_of_batch_means():
    meter = MetricSums()
    meter.add("top1_error", torch.tensor(100.0 * 3), 4)  # 3 of 4 wrong
    meter.add("top1_error", 0.0, 1)  # 1 of 1 right
    assert meter.means(DistEnv(), torch.device("cpu")) == {"top1_error": 60.0}


def test_nest_and_flatten_are_inverse():
    flat = {"Set5_x4/psnr": 30.0, "Set5_x4/ssim": 0.9, "loss": 1.0}
    assert nest(flat) == {"Set5_x4": {"psnr": 30.0, "ssim": 0.9}, "loss": 1.0}
    assert flatten(nest(flat)) == flat


def test_shards_cover_every_sample_once_without_padding():
    shards = [list(ShardSampler(7, DistEnv(3, rank))) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))
    assert [len(s) for s in shards] == [3, 2, 2]
