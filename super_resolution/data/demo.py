"""``--data_test Demo --dir_demo FOLDER --test_only``: super-resolve your own images (official demo.sh).

Every image of the folder (png, bmp, jpg, jpeg, tif, tiff) is an LR input; there is no ground truth, so
nothing is measured: the trainer only saves each output to ``<experiment>/results/Demo_x<s>/<name>_SR.png``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from torch.utils.data import Dataset

from filter_basis.errors import DataError, OptionError

from .images import IMAGE_SUFFIXES, list_images, read_image, set_channel, to_tensor


class DemoImages(Dataset):
    """Items ``(lr, name)``: each image of the folder as a model input in [0, rgb_range]."""

    ground_truth = False  # the trainer saves the outputs and measures nothing

    def __init__(self, folder, *, n_colors: int, rgb_range: float):
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"--dir_demo {folder}: no such folder; give the folder of the images to "
                            "super-resolve")
        self.paths = list_images(folder)
        if not self.paths:
            raise DataError(f"--dir_demo {folder} holds no images; expected files ending in "
                            f"{', '.join(IMAGE_SUFFIXES)}")
        stems = Counter(p.stem for p in self.paths)  # a.png and a.jpg keep apart as a_png and a_jpg
        self.names = [p.stem if stems[p.stem] == 1 else p.name.replace(".", "_") for p in self.paths]
        self.n_colors, self.rgb_range = n_colors, rgb_range

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = set_channel(read_image(self.paths[index]), self.n_colors)
        return to_tensor(image, self.rgb_range), self.names[index]


def demo_set(args) -> DemoImages:
    """The ``Demo`` test set of ``--dir_demo``; only for ``--test_only`` runs (there is nothing to score)."""
    if not args.test_only:
        raise OptionError("--data_test Demo has no ground truth to evaluate training with; use it with "
                          "--test_only (and --pre_train FILE) to super-resolve the images of --dir_demo")
    return DemoImages(args.dir_demo, n_colors=args.n_colors, rgb_range=args.rgb_range)
