"""Options of the image classification tree: the shared engine options plus this tree's own.

Every option of the official classification ``option.py`` is accepted with its official default
(paths become folders of this repository); those that served other experiments are accepted and ignored.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from filter_basis.engine import options as engine_options
from filter_basis.engine.optim import Schedule
from filter_basis.engine.options import nonnegative_int, positive_float, positive_int

from . import template
from .notes import option_notes

# The option naming the weights to load (the official trees named it differently).
PRETRAINED_OPTION = "pretrained"
SCHEDULE = Schedule.from_decay  # --decay step-150-225 (warm: the --linear warm-up), --gamma

# Official classification defaults of the shared options whose defaults differ between the trees.
TREE_DEFAULTS = {
    "template": "", "optimizer": "SGD", "resume": -1, "test_every": 1000, "loss": "1*CE", "batch_size": 128,
    "lr": 0.1, "weight_decay": 1e-4, "load": "",
    # a file on the authors' machine: --loss_norm asks for a usable --pre_train_optim
    "pre_train_optim": "/home/yawli/projects/clustering-kernels/models/vgg16-89711a85.pt",
}

# ResNet_Basis (basis_size, n_basis) per stage when --basis_size<i> / --n_basis<i> are not given: the
# official CIFAR defaults (three stages; the fourth pair, recorded in args.json, is unused there), and ours
# for the four ImageNet stages (one basis as wide as the stage, 5/8 as many filters: about 30% of
# ResNet-18's weights; README "Image classification").
STAGE_BASES = {"CIFAR": ((16, 24), (32, 48), (64, 84), (512, 320)),
               "ImageNet": ((64, 40), (128, 80), (256, 160), (512, 320))}

# Official options that only served other experiments (clustering kernels, model comparison, ...).
# --n_colors, --act, --in_channels: the CIFAR models here, like the official ones, hard-wire RGB input,
# ReLU and their stage widths; --unique_basis, --basis_size_str: unused variants.
IGNORED = [
    ("--n_colors", int, 3), ("--act", str, "relu"), ("--in_channels", int, 64),
    ("--unique_basis", bool, False), ("--basis_size_str", str, ""),
    ("--base", str, ""), ("--base_p", str, ""), ("--extend", str, ""), ("--compare", str, ""),
    ("--multi", str, "full-256"), ("--n_init", int, 1), ("--max_iter", int, 4500), ("--symmetry", str, "i"),
    ("--init_seeds", str, "random"), ("--scale_type", str, "kernel_norm_train"), ("--n_bits", int, 16),
]

# Options of this tree that may differ when a run is continued with --load (besides the engine's list in
# filter_basis/engine/resume.py): fetching CIFAR, and the ignored ones.
RESUME_MAY_CHANGE = ("download", "n_test", "crop") + engine_options.ignored_names(IGNORED)

# A test of a saved run (docs/testing.md) compares only the options that change the model's state_dict or
# its forward pass with the run's (--data_train decides the classifier: 10, 100 or 1000 classes, CIFAR or
# ImageNet form); every other option not given is taken from the run, except --download.
MODEL_OPTIONS = ("data_train", "depth", "k", "reduction", "bottleneck", "kernel_size", "no_bias",
                 "group_size", "n_group", "k_size1", "k_size2", "inverse_index", "transition_group",
                 "vgg_type", "vgg_decom_type", "basis_size", "n_basis", "n_basis_str") + \
    tuple(f"{name}{stage}" for stage in range(1, 5) for name in ("basis_size", "n_basis"))
TEST_INVOCATION_OPTIONS = ("download",)


def build_parser() -> engine_options.OptionParser:
    parser = engine_options.OptionParser(
        description="Train or test an image classification network (CIFAR-10/100, ImageNet, Synthetic).")
    engine_options.add_common_options(parser, TREE_DEFAULTS)

    data = parser.add_argument_group("data")
    data.add_argument("--data_train", default="CIFAR10",
                      help="training set (listed at the end)")
    data.add_argument("--data_test", default="CIFAR10", help="test set (same names)")
    data.add_argument("--n_train", type=nonnegative_int, default=0, help="first N training samples (0: all)")
    data.add_argument("--n_test", type=nonnegative_int, default=0, help="first N test samples (0: all)")
    data.add_argument("--no_flip", action="store_true", help="no random horizontal flip in training")
    data.add_argument("--crop", type=int, default=1, choices=(1, 5, 10),
                      help="ImageNet test crops, logits averaged")
    data.add_argument("--download", action="store_true", help="download CIFAR into --dir_data if missing")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="DenseNet", help="network name (listed at the end)")
    model.add_argument("--pretrained", default="",
                       help="weights to load (ours, the official or torchvision's layout); 'download': "
                            "torchvision's ImageNet weights")
    model.add_argument("--vgg_type", default="16", help="VGG configuration")
    model.add_argument("--depth", type=positive_int, default=100, help="network depth")
    model.add_argument("--k", type=positive_int, default=12, help="DenseNet growth rate")
    model.add_argument("--reduction", type=positive_float, default=1, help="DenseNet transition compression")
    model.add_argument("--bottleneck", action="store_true",
                       help="DenseNet-BC (ImageNet ResNets: the depth decides)")
    model.add_argument("--kernel_size", type=positive_int, default=3, help="convolution kernel size")
    model.add_argument("--no_bias", action="store_true", help="convolutions without bias")
    model.add_argument("--top", type=int, default=1, choices=(1, -1),
                       help="best model by top-1 (1) or top-5 (-1) error")

    method = parser.add_argument_group("compression (basis, factor, group)")
    method.add_argument("--group_size", type=positive_int, default=16, help="Group models: group width")
    method.add_argument("--n_group", type=positive_int, default=1, help="DenseNet_Basis: basis groups")
    method.add_argument("--k_size1", type=positive_int, default=3, help="ResNet_Basis: first conv kernel")
    method.add_argument("--k_size2", type=positive_int, default=3,
                        help="ResNet_Basis (CIFAR): projection kernel")
    method.add_argument("--inverse_index", action="store_true", help="use the last basis channels")
    method.add_argument("--transition_group", type=positive_int, default=6, help="DenseNet_Basis transitions")
    for stage in range(1, 5):
        cifar = STAGE_BASES["CIFAR"][stage - 1] if stage < 4 else ("-", "-")
        imagenet = STAGE_BASES["ImageNet"][stage - 1]
        method.add_argument(f"--basis_size{stage}", type=positive_int, default=None,
                            help=f"ResNet_Basis stage {stage} basis size (default: CIFAR {cifar[0]}, "
                                 f"ImageNet {imagenet[0]})")
        method.add_argument(f"--n_basis{stage}", type=positive_int, default=None,
                            help=f"ResNet_Basis stage {stage} basis filters (default: CIFAR {cifar[1]}, "
                                 f"ImageNet {imagenet[1]})")
    method.add_argument("--vgg_decom_type", default="all", choices=("all", "select"),
                        help="VGG_Basis: decompose all layers or a selection")
    method.add_argument("--basis_size", type=positive_int, default=128, help="basis size")
    method.add_argument("--n_basis", type=positive_int, default=128, help="basis filters")
    method.add_argument("--n_basis_str", default="",
                        help="VGG_Basis: filters of each decomposed layer, VALUE*COUNT joined by '+' "
                             "(e.g. 64*4+128*6); overrides --n_basis")

    parser.add_argument("--linear", type=positive_int, default=1,
                        help="scale batch and lr by L with a 5-epoch warm-up (linear scaling rule)")
    parser.add_argument("--decay", default="step-150-225", help="schedule step-M1-M2... (warmstep-: warm-up)")
    engine_options.add_ignored_options(parser, IGNORED)
    parser.registered = _registered
    return parser


def _registered() -> list:
    """The names --help lists (imported only when help is asked for)."""
    from .data import DATASETS
    from .loss import LOSS_TYPES
    from .model import MODELS

    return [("models (--model)", MODELS), ("data sets (--data_train, --data_test)", DATASETS),
            ("templates (--template)", template.TEMPLATES.names()), ("loss types (--loss)", LOSS_TYPES)]


def _stage_basis_defaults(args: argparse.Namespace) -> None:
    """Fill the --basis_size<i> / --n_basis<i> not given with the defaults of the training set's models."""
    table = STAGE_BASES["ImageNet" if args.data_train == "ImageNet" else "CIFAR"]
    for stage, (size, n) in enumerate(table, start=1):
        for option, value in ((f"basis_size{stage}", size), (f"n_basis{stage}", n)):
            if getattr(args, option) is None:
                setattr(args, option, value)


def _validate(args: argparse.Namespace) -> None:
    from .data import DATASETS
    from .loss import LOSS_TYPES
    from .model import MODELS, torchvision_weights

    engine_options.check_tree_names(args, models=MODELS, train_sets=DATASETS, test_sets=DATASETS,
                                    loss_types=LOSS_TYPES, pretrained_option=PRETRAINED_OPTION,
                                    pretrained_keywords=(torchvision_weights.DOWNLOAD,))
    SCHEDULE(args)
    if args.pretrained == torchvision_weights.DOWNLOAD and not args.summary:
        torchvision_weights.weights(args)  # a model without torchvision weights fails here, not later


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse, apply --template and --linear, validate: a bad value is an OptionError (exit 2)."""
    return engine_options.parse(build_parser(), argv, templates=template.apply,
                               postprocess=_stage_basis_defaults, validate=_validate, notes=option_notes)
