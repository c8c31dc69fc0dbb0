"""The two kinds of SR dataset: random training patches and whole test images."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from filter_basis.errors import DataError

from .decoded_cache import load_decoded
from .folders import Pair
from .images import read_image, set_channel, to_tensor
from .patches import Noise, augment, random_patch


def read_source(source) -> np.ndarray:
    """An image file decoded, or an image already in memory."""
    return source if isinstance(source, np.ndarray) else read_image(source)


class TrainingPatches(Dataset):
    """(lr, hr) patches: ``patch_size`` HR pixels square, flipped/transposed, LR noise added.

    One epoch visits every pair ``repeat`` times, so that an epoch spans about ``--test_every``
    batches whatever the dataset size.  ``decoded``: the images are read from their ``.npy`` files.
    """

    def __init__(self, pairs: Sequence[Pair], *, scale: int, patch_size: int, n_colors: int,
                 rgb_range: float, repeat: int = 1, noise: Optional[Noise] = None, decoded: bool = False):
        if not pairs:
            raise DataError("the training set is empty")
        self.pairs = list(pairs)
        self.scale, self.patch_size, self.n_colors, self.rgb_range = scale, patch_size, n_colors, rgb_range
        self.repeat = max(1, repeat)
        self.noise = noise
        self.read = load_decoded if decoded else read_source

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, index: int):
        _, hr_path, lr_source = self.pairs[index % len(self.pairs)]
        lr, hr = random_patch(self.read(lr_source), self.read(hr_path), self.patch_size, self.scale)
        # the channel fix is per pixel: on the patches, not on the whole images
        lr, hr = augment(set_channel(lr, self.n_colors), set_channel(hr, self.n_colors))
        if self.noise is not None:
            lr = self.noise(lr)
        return to_tensor(lr, self.rgb_range), to_tensor(hr, self.rgb_range)


class WholeImages(Dataset):
    """(lr, hr, name) whole images, HR cropped to its top-left LR size x scale (the pairs come from
    :mod:`.folders`, which refuses an HR image smaller than that).

    ``benchmark`` selects the PSNR convention (luminance on benchmarks, RGB on DIV2K).
    """

    def __init__(self, pairs: Sequence[Pair], *, scale: int, n_colors: int, rgb_range: float,
                 benchmark: bool):
        self.pairs = list(pairs)
        self.scale, self.n_colors, self.rgb_range = scale, n_colors, rgb_range
        self.benchmark = benchmark

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        name, hr_path, lr_source = self.pairs[index]
        lr, hr = (set_channel(read_source(source), self.n_colors) for source in (lr_source, hr_path))
        h, w = lr.shape[0] * self.scale, lr.shape[1] * self.scale  # HR is at least that (check_sizes)
        return to_tensor(lr, self.rgb_range), to_tensor(hr[:h, :w], self.rgb_range), name
