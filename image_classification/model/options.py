"""Reading and checking the options the model builders share: a bad value fails before any layer is built."""

from __future__ import annotations

from typing import Iterable

from filter_basis.errors import OptionError


def check_divides(option: str, value: int, widths: Iterable[int], where: str) -> None:
    """Raise OptionError unless ``value`` is a positive divisor of every width in ``widths``."""
    widths = sorted(set(widths))
    if not isinstance(value, int) or value < 1 or any(w % value for w in widths):
        raise OptionError(f"{option} {value} must divide the {where} width(s) {widths}")


def check_depth(model: str, depth: int, offset: int, step: int) -> int:
    """Blocks per stage for a depth of the form ``step * n + offset`` (n >= 1), else OptionError."""
    n, rest = divmod(depth - offset, step)
    if n < 1 or rest:
        examples = ", ".join(str(step * i + offset) for i in (1, 2, 3, 9))
        raise OptionError(f"--depth {depth} does not fit {model}: use {step}n+{offset}, e.g. {examples}")
    return n


def check_positive(option: str, value: int) -> None:
    """Raise OptionError unless ``value`` is an integer >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OptionError(f"{option} {value!r} must be a positive integer")


def cifar_num_classes(args) -> int:
    """The classifier size for ``--data_train`` (CIFAR10 -> 10, CIFAR100 -> 100); these models are built
    for 32x32 inputs, so ImageNet is refused."""
    from image_classification.data import num_classes

    if args.data_train == "ImageNet":
        raise OptionError(f"--model {args.model} is a CIFAR model (32x32 inputs); ImageNet models are not "
                          "implemented, use --data_train CIFAR10, CIFAR100, Synthetic or Digits")
    return num_classes(args.data_train)


def check_kernel(option: str, value: int) -> None:
    """Raise OptionError unless ``value`` is a positive odd kernel size (padding k // 2 keeps the size)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value % 2 == 0:
        raise OptionError(f"{option} {value!r} must be a positive odd kernel size (1, 3, 5, ...)")
