"""SR datasets by name: ``--data_train`` (DIV2K, DIV2KSUB) and ``--data_test`` (Set5+Set14+..., DIV2K).

Training items are (lr, hr) patches in [0, rgb_range]; test items are (lr, hr, name) whole images.
Folders are checked on construction (DataError naming the path and the expected layout); benchmark LR
images missing on disk are made by MATLAB-compatible bicubic downscaling.
"""

from __future__ import annotations

from typing import Dict

from torch.utils.data import Dataset

from filter_basis.engine.options import test_set_names
from filter_basis.errors import OptionError
from filter_basis.registry import Registry

from . import photos
from .datasets import TrainingPatches, WholeImages
from .decoded_cache import build_cache
from .folders import benchmark_pairs, div2k_pairs, div2k_sub_pairs
from .patches import parse_noise

# --ext: 'img' decodes the training PNGs for every patch; 'sep' (default) decodes them once into .npy
# files beside them ('sep_reset' rewrites those); 'bin' (one packed file in the official code) is read
# as 'sep'.  Test images are always decoded from PNG.
EXT_CHOICES = ("sep", "sep_reset", "img", "bin")

TRAIN_SETS: Registry = Registry("training set", "--data_train")
TEST_SETS: Registry = Registry("test set", "--data_test")

TRAIN_SETS.register("DIV2K", lambda args: div2k_pairs(args.dir_data, "train", 1, args.n_train, args.scale[0]))
TRAIN_SETS.register("DIV2KSUB", lambda args: div2k_sub_pairs(args.dir_data, args.n_train, args.scale[0]))
for _name in ("Set5", "Set14", "B100", "Urban100"):
    TEST_SETS.register(_name, lambda args, name=_name: benchmark_pairs(args.dir_data, name, args.scale[0]))
TEST_SETS.register("DIV2K", lambda args: div2k_pairs(args.dir_data, "valid", args.offset_val + 1,
                                                      args.offset_val + args.n_val, args.scale[0]))
TRAIN_SETS.register("Photos", photos.train_pairs)
TEST_SETS.register("Photos", photos.test_pairs)


def _check_ext(args) -> None:
    if args.ext not in EXT_CHOICES:
        raise OptionError(f"--ext {args.ext!r} is not accepted; use one of {', '.join(EXT_CHOICES)}")


def epoch_repeat(n_train: int, batch_size: int, test_every: int) -> int:
    """How often an epoch visits each training image: about ``test_every`` batches per epoch."""
    return max(1, round(test_every / (n_train / batch_size)))


def build_train_set(args) -> Dataset:
    _check_ext(args)
    noise = parse_noise(args.noise)
    pairs = TRAIN_SETS.get(args.data_train)(args)
    decoded = args.ext != "img" and build_cache([s for _, hr, lr in pairs for s in (hr, lr)],
                                                reset=args.ext == "sep_reset")
    return TrainingPatches(pairs, scale=args.scale[0], patch_size=args.patch_size, n_colors=args.n_colors,
                           rgb_range=args.rgb_range, noise=noise, decoded=decoded,
                           repeat=epoch_repeat(len(pairs), args.batch_size, args.test_every))


def build_test_sets(args) -> Dict[str, Dataset]:
    _check_ext(args)
    return {name: WholeImages(TEST_SETS.get(name)(args), scale=args.scale[0], n_colors=args.n_colors,
                             rgb_range=args.rgb_range, benchmark=name != "DIV2K")
            for name in test_set_names(args)}


__all__ = ["TRAIN_SETS", "TEST_SETS", "build_train_set", "build_test_sets", "epoch_repeat"]
