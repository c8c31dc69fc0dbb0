"""--help (defaults, registered names), "did you mean" for misspelt names, and the one-line notes on options
that --model does not read or that make it larger than its baseline."""

import pytest

from filter_basis.errors import UserError
from image_classification import option as cls_option
from image_classification.model import MODELS as CLS_MODELS
from super_resolution import option as sr_option
from super_resolution.data import TEST_SETS, TRAIN_SETS
from super_resolution.model import MODELS as SR_MODELS


def test_help_shows_defaults_and_lists_every_registered_model_and_data_set(capsys):
    with pytest.raises(SystemExit) as done:  # what main.py --help runs
        cls_option.parse_args(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "epochs to train (0: unlimited); trained exactly in both trees (default: 300)" in text
    assert "learning rate (default: 0.1)" in text and "(default: DenseNet)" in text
    assert "(default: False)" not in text and "(default: None)" not in text  # off switches say nothing
    assert "models (--model): " + ", ".join(CLS_MODELS.names()) in text
    assert "data sets (--data_train, --data_test): CIFAR10, CIFAR100, ImageNet, Synthetic, Digits" in text

    sr = " ".join(sr_option.build_parser().format_help().split())
    assert "models (--model): " + ", ".join(SR_MODELS.names()) in sr
    assert "training sets (--data_train): " + ", ".join(TRAIN_SETS.names()) in sr
    assert "test sets (--data_test, joined by '+'): " + ", ".join(TEST_SETS.names()) in sr
    assert "HR training patch size (default: 192)" in sr


@pytest.mark.parametrize("module, argv, expected", [
    (cls_option, ["--epoch", "3"], "unrecognized arguments: --epoch 3; did you mean --epochs?"),
    (cls_option, ["--epochs=3", "--n_basis_st=2"], "unrecognized arguments: --n_basis_st=2; did you mean "
                                                   "--n_basis_str?"),
    (cls_option, ["--frobnicate"], "unrecognized arguments: --frobnicate"),  # nothing close: no guess
    (cls_option, ["--optimizer", "adam"], "argument --optimizer: invalid choice: 'adam' (choose from 'SGD', "
                                          "'ADAM', 'RMSprop'); did you mean 'ADAM'?"),
    (cls_option, ["--template", "Resnet"], "; did you mean 'ResNet'?"),
    (cls_option, ["--model", "ResNet_Basiss"],
     "; known: DenseNet, DenseNet_Basis, DenseNet_Factor, DenseNet_Group, ResNet, ResNet_Basis, "
     "ResNet_Factor, ResNet_Group, VGG, VGG_Basis, VGG_Factor, VGG_Group; did you mean 'ResNet_Basis'?"),
    (cls_option, ["--data_train", "cifar10"], "; did you mean 'CIFAR10'?"),
    (sr_option, ["--data_test", "Set5+Set14+Urban10"], "unknown test set --data_test 'Urban10'"),
    (sr_option, ["--model", "EDSR_basis"], "; did you mean 'EDSR_Basis'?"),
])
def test_misspelt_names_get_one_suggestion(module, argv, expected):
    with pytest.raises(UserError) as info:
        module.parse_args(argv)
    message = str(info.value)
    assert message.endswith(expected) or (expected in message and "did you mean 'Urban100'?" in message)
    assert "\n" not in message


def notes(capsys, argv):
    cls_option.parse_args(argv)
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]


@pytest.mark.parametrize("argv, expected", [
    ("--model ResNet --depth 8 --n_basis_str 4*2",
     "note: --n_basis_str is ignored by --model ResNet: only VGG_Basis reads it"),
    ("--model ResNet_Basis --depth 8 --k_size2 1 --n_basis_str 4*2",
     "note: --n_basis_str is ignored by --model ResNet_Basis: it has one basis per stage, set by "
     "--n_basis1..3 (--n_basis_str is VGG_Basis's)"),
    ("--model DenseNet_Basis --depth 40 --n_basis_str 4*2",
     "note: --n_basis_str is ignored by --model DenseNet_Basis: it has one basis for the whole network, set "
     "by --n_basis (--n_basis_str is VGG_Basis's)"),
    ("--model VGG --bottleneck",
     "note: --bottleneck is ignored by --model VGG: VGG has no bottleneck blocks (DenseNet-BC and the deep "
     "ImageNet ResNets do)"),
    ("--model ResNet_Basis --depth 8 --k_size2 1 --n_basis 32",
     "note: --n_basis is ignored by --model ResNet_Basis: it has one basis per stage, set by --n_basis1..3"),
    ("--model ResNet_Basis --depth 18 --data_train ImageNet --n_basis 32",
     "note: --n_basis is ignored by --model ResNet_Basis: it has one basis per stage, set by --n_basis1..4"),
])
def test_options_the_model_does_not_read_get_one_note(capsys, argv, expected):
    assert notes(capsys, argv.split()) == [expected]


def test_a_basis_model_larger_than_its_baseline_is_noted_with_the_way_out(capsys):
    assert notes(capsys, "--model ResNet_Basis --depth 8".split()) == [
        "note: --model ResNet_Basis with --k_size2 3 has 227.8% of the weights of ResNet at --depth 8: "
        "larger than its baseline, not compressed; --k_size2 1 (1x1 projections) gives 104.6%"]
    assert notes(capsys, "--model ResNet_Basis --depth 8 --k_size2 1".split()) == []


@pytest.mark.parametrize("argv", ["--model VGG_Basis --n_basis_str 64*13 --n_basis 32",
                                  "--model DenseNet --depth 40 --bottleneck",
                                  "--model ResNet_Basis --depth 56 --k_size2 1 --n_basis1 8",
                                  "--model ResNet --depth 8"])
def test_options_the_model_reads_get_no_note(capsys, argv):
    assert notes(capsys, argv.split()) == []
