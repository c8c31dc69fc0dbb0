"""Options of the super-resolution tree: the shared engine options plus this tree's own.

Every option of the official SR ``option.py`` is accepted with its official default (paths become
folders of this repository); those that served other experiments are accepted and ignored.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from filter_basis.engine import options as engine_options
from filter_basis.engine.optim import Schedule
from filter_basis.engine.options import nonnegative_int, positive_float, positive_int
from filter_basis.errors import OptionError

from . import template

# The option naming the weights to load (the official trees named it differently).
PRETRAINED_OPTION = "pre_train"
SCHEDULE = Schedule.from_decay_type  # --decay_type step --lr_decay 200, or step_A_B; --gamma

class DefaultCount(int):
    """An int option default that remembers it was not given: ``--n_train`` left out means DIV2K's 800
    images, or all the images of a smaller training set (Photos)."""

    is_default = True


# Official SR defaults of the shared options whose defaults differ between the trees.
TREE_DEFAULTS = {
    "template": ".", "optimizer": "ADAM", "resume": 0, "test_every": 2000, "loss": "1*L1", "batch_size": 16,
    "lr": 1e-4, "weight_decay": 0, "load": ".", "pre_train_optim": ".",
}

# Official options that only served other experiments (other networks, clustering, ...).
# --act and --shift_mean: the official EDSR/SRResNet classes hard-wire ReLU/PReLU and the mean shift.
IGNORED = [
    ("--act", str, "relu"), ("--shift_mean", str, True),
    ("--benchmark_noise", bool, False), ("--extend", str, "."),
    ("--res_act", str, "SIGMOID"), ("--reg_anchor", int, 16), ("--reg_out", int, 16),
    ("--submodel", str, "carn"), ("--norm_type", str, "groupnorm"), ("--n_groups", int, 4),
    ("--n_resblocks_ft", int, 2), ("--model_one", str, "one"), ("--subset", str, "."),
    ("--normal_lr", str, "hr"), ("--input_res", str, "lr"),
    ("--n_resunits", int, 6), ("--multi", str, "full-256"), ("--n_init", int, 1), ("--max_iter", int, 4500),
    ("--symmetry", str, "i"), ("--init_seeds", str, "random"), ("--scale_type", str, "kernel_norm_train"),
    ("--n_bits", int, 16), ("--pretrain_cluster", str, ""), ("--split_batch", int, 1), ("--gan_k", int, 1),
    ("--n_resgroups", int, 5), ("--reduction", int, 16), ("--testpath", str, "../test/DIV2K_val_LR_our"),
    ("--testset", str, "Set5"),
]

# Options of this tree that may differ when a run is continued with --load (besides the engine's list in
# filter_basis/engine/resume.py): tiled inference, saved test images, the printed network, ignored ones.
RESUME_MAY_CHANGE = (("chop", "self_ensemble", "save_results", "print_model", "dir_demo")
                     + engine_options.ignored_names(IGNORED))

# A test of a saved run (docs/testing.md) compares only the options that change the model's state_dict or
# its forward pass with the run's; every other option not given is taken from the run, except how this
# test computes and what it writes (flags the run may have set could not be switched off again).
MODEL_OPTIONS = ("scale", "n_colors", "rgb_range", "n_resblocks", "n_feats", "res_scale", "sic_layer",
                 "group_size", "bn_every", "basis_size", "n_basis", "share_basis", "n_basis_str")
TEST_INVOCATION_OPTIONS = ("chop", "self_ensemble", "save_results", "print_model", "dir_demo")


def build_parser() -> engine_options.OptionParser:
    parser = engine_options.OptionParser(
        description="Train or test a super-resolution network (EDSR, SRResNet and compressed variants).")
    engine_options.add_common_options(parser, TREE_DEFAULTS)

    data = parser.add_argument_group("data")
    data.add_argument("--data_train", default="DIV2K", help="training set: DIV2K, DIV2KSUB, Photos")
    data.add_argument("--data_test", default="DIV2K",
                      help="test sets joined by '+': Set5, Set14, B100, ..., Photos, Demo")
    data.add_argument("--dir_demo", default="../test",
                      help="--data_test Demo: folder of images to super-resolve (with --test_only)")
    data.add_argument("--n_train", type=positive_int, default=DefaultCount(800),
                      help="training images (Photos: at most 8, all by default)")
    data.add_argument("--n_val", type=positive_int, default=100, help="DIV2K validation images")
    data.add_argument("--offset_val", type=nonnegative_int, default=800, help="DIV2K validation offset")
    data.add_argument("--ext", default="sep", help="official image storage: sep, sep_reset, img, bin")
    data.add_argument("--scale", default="4", help="upscaling factor(s), several joined by '+'")
    data.add_argument("--patch_size", type=positive_int, default=192, help="HR training patch size")
    data.add_argument("--rgb_range", type=positive_int, default=255, help="pixel value range")
    data.add_argument("--n_colors", type=positive_int, default=3, help="image channels")
    data.add_argument("--noise", default=".", help="training LR noise: '.' none, G<sigma>, S<scale>")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="EDSR", help="network name (listed at the end)")
    model.add_argument("--pre_train", default=".", help="weights to load (ours or the official layout)")
    model.add_argument("--n_resblocks", type=positive_int, default=5, help="residual blocks")
    model.add_argument("--n_feats", type=positive_int, default=64, help="feature channels")
    model.add_argument("--res_scale", type=positive_float, default=1, help="residual scaling")
    model.add_argument("--print_model", action="store_true", help="write the network to the log")

    method = parser.add_argument_group("compression (basis, factor, group)")
    method.add_argument("--sic_layer", type=positive_int, default=2, help="Factor models: SICs per conv")
    method.add_argument("--group_size", type=positive_int, default=16, help="Group models: group width")
    method.add_argument("--bn_every", action="store_true", help="BatchNorm after every basis conv")
    method.add_argument("--basis_size", type=positive_int, default=64, help="basis size")
    method.add_argument("--n_basis", type=positive_int, default=16, help="basis filters")
    method.add_argument("--share_basis", action="store_true", help="one basis for both convs of a block")
    method.add_argument("--n_basis_str", default="",
                        help="filters per basis, in model order, as VALUE*COUNT joined by '+' "
                             "(e.g. 12*6+16*4); overrides --n_basis")

    test = parser.add_argument_group("testing")
    test.add_argument("--chop", action="store_true", help="super-resolve large images in overlapping tiles")
    test.add_argument("--self_ensemble", action="store_true", help="average over 8 flips/transposes")
    test.add_argument("--save_results", action="store_true", help="save the super-resolved test images")

    parser.add_argument("--lr_decay", type=positive_int, default=200, help="decay the lr every N epochs")
    parser.add_argument("--decay_type", default="step", help="step (every --lr_decay) or step_A_B")
    engine_options.add_ignored_options(parser, IGNORED)
    parser.registered = _registered
    return parser


def _registered() -> list:
    """The names --help lists (imported only when help is asked for)."""
    from .data import TEST_SETS, TRAIN_SETS
    from .loss import LOSS_TYPES
    from .model import MODELS

    return [("models (--model)", MODELS), ("training sets (--data_train)", TRAIN_SETS),
            ("test sets (--data_test, joined by '+')", TEST_SETS),
            ("templates (--template)", template.TEMPLATES.names()), ("loss types (--loss)", LOSS_TYPES)]


def _postprocess(args: argparse.Namespace) -> None:
    """Official post-processing: --scale '2+3' -> [2, 3]."""
    text = str(args.scale)
    try:
        args.scale = [int(s) for s in text.split("+")]
    except ValueError:
        args.scale = []
    if not args.scale or any(s < 1 for s in args.scale):
        raise OptionError(f"--scale {text!r} is not accepted; expected integers >= 1 joined by '+', "
                          f"e.g. 4 or 2+3")
    if not isinstance(args.shift_mean, bool):  # ignored, but only the official values are accepted
        raise OptionError(f"--shift_mean {args.shift_mean!r} is not accepted; expected True or False")


def _validate(args: argparse.Namespace) -> None:
    from .data import TEST_SETS, TRAIN_SETS
    from .loss import LOSS_TYPES
    from .model import MODELS

    engine_options.check_tree_names(args, models=MODELS, train_sets=TRAIN_SETS, test_sets=TEST_SETS,
                                    loss_types=LOSS_TYPES, pretrained_option=PRETRAINED_OPTION)
    SCHEDULE(args)
    if args.patch_size < args.scale[0] and not args.test_only:
        raise OptionError(f"--patch_size {args.patch_size} is smaller than --scale {args.scale[0]}: the LR "
                          f"patch would be empty; use a multiple of the scale, e.g. {48 * args.scale[0]}")


def _notes(args: argparse.Namespace, given) -> list:
    """--patch_size not a multiple of the scale: the HR patch is cut to one (as officially), said once."""
    scale = args.scale[0]
    lr_patch = args.patch_size // scale
    if args.test_only or args.patch_size % scale == 0 or lr_patch < 1:
        return []
    return [f"--patch_size {args.patch_size} is not a multiple of --scale {scale}: training uses "
            f"{lr_patch * scale}x{lr_patch * scale} HR patches ({lr_patch}x{lr_patch} LR)"]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse, apply --template, split --scale, validate: a bad value is an OptionError (exit 2)."""
    return engine_options.parse(build_parser(), argv, templates=template.apply, postprocess=_postprocess,
                                validate=_validate, notes=_notes)
