"""Classification data sets by name (``--data_train``, ``--data_test``).

Items are ``(image, label)``: a normalised float tensor (3, H, W) and an int.  Folders are checked when
a data set is built; nothing is downloaded unless ``--download`` is given.  ``--n_train`` /
``--n_test`` (0 = all) keep the first N samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from torch.utils.data import Dataset, Subset

from filter_basis.engine.options import test_set_names
from filter_basis.errors import OptionError
from filter_basis.registry import Registry

from . import cifar, digits, synthetic
from .imagenet import imagenet
from .transforms import cifar_transform, imagenet_transform


@dataclass(frozen=True)
class DatasetSpec:
    """How to build one split of a data set, its preprocessing and its class count."""

    build: Callable[..., Dataset]  # build(args, train, transform) -> Dataset
    transform: Callable[..., object]  # transform(train, flip) -> callable
    num_classes: int


DATASETS: Registry[DatasetSpec] = Registry("data set", "--data_train/--data_test")


def _cifar(name: str) -> Callable[..., Dataset]:
    def build(args, train: bool, transform) -> Dataset:
        if args.download:
            cifar.download(name, args.dir_data)
        return cifar.CIFAR(name, args.dir_data, train, transform)
    return build


def _imagenet(args, train: bool, transform) -> Dataset:
    if not train and args.crop != 1:
        raise OptionError(f"--crop {args.crop}: multi-crop ImageNet testing is not implemented; use --crop 1")
    return imagenet(args.dir_data, train, transform)


DATASETS.register("CIFAR10", DatasetSpec(_cifar("CIFAR10"), cifar_transform, 10))
DATASETS.register("CIFAR100", DatasetSpec(_cifar("CIFAR100"), cifar_transform, 100))
DATASETS.register("ImageNet", DatasetSpec(_imagenet, imagenet_transform, 1000))
DATASETS.register("Synthetic", DatasetSpec(lambda args, train, tf: synthetic.Synthetic(train, tf),
                                          cifar_transform, synthetic.NUM_CLASSES))
DATASETS.register("Digits", DatasetSpec(lambda args, train, tf: digits.Digits(train, tf),
                                       digits.digits_transform, digits.NUM_CLASSES))


def num_classes(name: str) -> int:
    """The class count of data set ``name`` (the size of a model's classifier)."""
    return DATASETS.get(name).num_classes


def _first(dataset: Dataset, n: int, option: str, name: str) -> Dataset:
    if n < 0:
        raise OptionError(f"{option} {n} is negative; use 0 for the whole set or a positive count")
    if n == 0:
        return dataset
    if n > len(dataset):
        raise OptionError(f"{option} {n} exceeds the {len(dataset)} samples of {name}; use 0 or at most "
                          f"{len(dataset)}")
    return Subset(dataset, range(n))


def _build(name: str, args, train: bool) -> Dataset:
    spec = DATASETS.get(name)
    transform = spec.transform(train, flip=not args.no_flip)
    dataset = spec.build(args, train, transform)
    return _first(dataset, args.n_train if train else args.n_test, "--n_train" if train else "--n_test", name)


def build_train_set(args) -> Dataset:
    """The training split of ``--data_train``, augmented."""
    return _build(args.data_train, args, train=True)


def build_test_sets(args) -> Dict[str, Dataset]:
    """The test split of every ``+``-separated name in ``--data_test``, keyed by name."""
    return {name: _build(name, args, train=False) for name in test_set_names(args)}
