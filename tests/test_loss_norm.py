"""--loss_norm in both trees: the approximation regulariser as a logged loss term
(docs/official-code.md#loss_norm)."""

import json
import re
from types import SimpleNamespace

import imageio.v3 as iio
import pytest
import torch
from torch import nn

from filter_basis.approx import approximation_loss
from filter_basis.engine import cli_main, run
from filter_basis.engine.checkpoint import seed_everything
from filter_basis.engine.regularizers import dense_reference
from filter_basis.errors import OptionError
from filter_basis.layers.basis_conv import BasisConv2d
from image_classification import model as cls_model
from image_classification import option as cls_option
from image_classification.tree import TREE as CLS_TREE
from super_resolution import model as sr_model
from super_resolution import option as sr_option
from super_resolution.tree import TREE as SR_TREE

# One batch per epoch, so epoch 1's logged term is the term of the initial model.
CLS = ["--data_train", "Synthetic", "--data_test", "Synthetic", "--n_train", "16", "--n_test", "16",
       "--batch_size", "16", "--cpu", "--n_threads", "0", "--depth", "8", "--k_size2", "1", "--lr", "0.05"]
SR = ["--n_resblocks", "1", "--n_feats", "8", "--basis_size", "8", "--n_basis", "4", "--scale", "2", "--cpu",
      "--n_threads", "0", "--data_train", "DIV2K", "--data_test", "Set5", "--n_train", "2",
      "--batch_size", "2", "--patch_size", "16", "--test_every", "1"]
DENSE_RESNET = ["--model", "ResNet", "--depth", "8"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _baseline_file(option, model, argv, path):
    """A state_dict of the dense baseline (``argv`` builds it), as --pre_train_optim reads it."""
    torch.manual_seed(7)
    baseline = model.build_model(option.parse_args(argv))
    torch.save(baseline.state_dict(), path)
    return baseline.state_dict()


def _logged_terms(folder) -> list:
    """Per epoch, the term means of the ``train loss`` log line: [{name: value}, ...]."""
    lines = [line for line in (folder / "log.txt").read_text().splitlines() if "train loss" in line]
    return [{name: float(value) for name, value in re.findall(r"(\w+) (-?[\d.]+)",
                                                                  line.split("(", 1)[1].split(")")[0])}
            for line in lines]


def _initial_term(tree, args, reference, basis_weight):
    """approximation_loss by hand on the model ``run`` starts from (same seed, same build)."""
    seed_everything(args.seed)
    model = tree.build_model(args)
    with torch.no_grad():
        return approximation_loss(model, reference, weight=1.0, basis_weight=basis_weight).item()


def test_classification_loss_norm_is_a_logged_term_equal_to_approximation_loss(tmp_path):
    state = _baseline_file(cls_option, cls_model, DENSE_RESNET, tmp_path / "dense.pt")
    args = cls_option.parse_args(CLS + ["--model", "ResNet_Basis", "--loss_norm", "--pre_train_optim",
                                        str(tmp_path / "dense.pt"), "--dir_save", str(tmp_path), "--save",
                                        "norm", "--epochs", "2", "--init", "official"])
    trainer = run(CLS_TREE, args)

    assert trainer.loss.terms == [(1.0, "CE"), (1.0, "loss_norm")]
    # ResNet and ResNet_Basis keep their module paths: the dense weight of layer p is state[p.weight].
    expected = _initial_term(CLS_TREE, args, state, basis_weight=0.05)
    terms = _logged_terms(tmp_path / "norm")
    assert len(terms) == 2 and expected > 0
    assert terms[0]["loss_norm"] == pytest.approx(expected, abs=1e-4)
    results = json.loads((tmp_path / "norm" / "results.json").read_text())
    assert results[0]["train_loss"] == pytest.approx(terms[0]["CE"] + terms[0]["loss_norm"], abs=2e-4)
    assert terms[1]["loss_norm"] < terms[0]["loss_norm"]  # the step pulled the layers towards the dense ones


def test_classification_loss_norm_changes_the_training(tmp_path):
    _baseline_file(cls_option, cls_model, DENSE_RESNET, tmp_path / "dense.pt")
    common = CLS + ["--model", "ResNet_Basis", "--dir_save", str(tmp_path), "--epochs", "1"]
    plain = run(CLS_TREE, cls_option.parse_args(common + ["--save", "plain"]))
    norm = run(CLS_TREE, cls_option.parse_args(common + ["--save", "norm", "--loss_norm", "--pre_train_optim",
                                                         str(tmp_path / "dense.pt")]))
    assert plain.loss.terms == [(1.0, "CE")]
    plain_terms, norm_terms = _logged_terms(tmp_path / "plain"), _logged_terms(tmp_path / "norm")
    assert list(plain_terms[0]) == ["CE"] and list(norm_terms[0]) == ["CE", "loss_norm"]
    assert plain_terms[0]["CE"] == norm_terms[0]["CE"]  # same start, same batch: only the term is added
    assert [k for k, _ in plain.model.named_parameters()] == [k for k, _ in norm.model.named_parameters()]
    basis = "features.1.0.body.0.basis.weight"
    assert not torch.equal(plain.model.state_dict()[basis], norm.model.state_dict()[basis])


@pytest.fixture
def dir_data(tmp_path, repo_root):
    """Two 32x32 DIV2K training images and Set5, cut from the shipped Set5."""
    root = tmp_path / "data"
    (root / "benchmark" / "Set5").mkdir(parents=True)
    (root / "benchmark" / "Set5" / "HR").symlink_to(repo_root / "datasets" / "benchmark" / "Set5" / "HR")
    train = root / "DIV2K" / "DIV2K_train_HR"
    train.mkdir(parents=True)
    for i, source in enumerate(sorted((root / "benchmark" / "Set5" / "HR").glob("*.png"))[:2], 1):
        iio.imwrite(train / f"{i:04d}.png", iio.imread(source)[:32, :32])
    return root


def test_sr_loss_norm_is_a_logged_term_equal_to_approximation_loss(tmp_path, dir_data):
    dense = ["--model", "EDSR", "--n_resblocks", "1", "--n_feats", "8", "--scale", "2"]
    state = _baseline_file(sr_option, sr_model, dense, tmp_path / "edsr.pt")
    args = sr_option.parse_args(SR + ["--model", "EDSR_Basis", "--loss_norm", "--pre_train_optim",
                                      str(tmp_path / "edsr.pt"), "--dir_data", str(dir_data), "--dir_save",
                                      str(tmp_path), "--save", "norm", "--epochs", "2"])
    trainer = run(SR_TREE, args)

    assert trainer.loss.terms == [(1.0, "L1"), (1.0, "loss_norm")]
    expected = _initial_term(SR_TREE, args, state, basis_weight=1.0)
    terms = _logged_terms(tmp_path / "norm")
    assert len(terms) == 2 and expected > 0
    assert terms[0]["loss_norm"] == pytest.approx(expected, abs=1e-4)
    results = json.loads((tmp_path / "norm" / "results.json").read_text())
    assert [r["epoch"] for r in results] == [1, 2] and results[1]["metrics"]["Set5_x2"]["psnr"] > 0


@pytest.mark.parametrize("option, argv, shown", [
    (cls_option, ["--model", "ResNet_Basis", "--loss_norm"], "/home/yawli/"),  # the official default
    (sr_option, ["--model", "EDSR_Basis", "--loss_norm"], "'.'"),
    (sr_option, ["--model", "EDSR_Basis", "--loss_norm", "--pre_train_optim", "missing.pt"], "'missing.pt'"),
])
def test_loss_norm_without_a_usable_pre_train_optim_is_an_option_error(option, argv, shown):
    with pytest.raises(OptionError, match=r"^--loss_norm needs --pre_train_optim FILE: a state_dict of the "
                                          r"dense baseline model; .*is not a file$") as error:
        option.parse_args(argv)
    assert shown in str(error.value)


def test_cli_reports_a_missing_pre_train_optim_in_one_line(capsys):
    assert cli_main(SR_TREE, ["--model", "EDSR_Basis", "--loss_norm"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --loss_norm needs --pre_train_optim FILE: a state_dict of the dense baseline model; "
        "'.' is not a file"]


def test_pre_train_optim_is_read_only_with_loss_norm():
    args = cls_option.parse_args(["--pre_train_optim", "missing.pt"])
    assert (args.loss_norm, args.pre_train_optim) == (False, "missing.pt")


def test_a_model_without_basis_layers_is_refused(tmp_path):
    _baseline_file(cls_option, cls_model, DENSE_RESNET, tmp_path / "dense.pt")
    args = cls_option.parse_args(CLS + ["--model", "ResNet", "--loss_norm", "--pre_train_optim",
                                        str(tmp_path / "dense.pt"), "--dir_save", str(tmp_path)])
    with pytest.raises(OptionError, match="--model ResNet has no basis layer"):
        run(CLS_TREE, args)


def test_a_projection_that_does_not_compose_names_the_layer(tmp_path):
    _baseline_file(cls_option, cls_model, DENSE_RESNET, tmp_path / "dense.pt")
    args = cls_option.parse_args(CLS + ["--model", "ResNet_Basis", "--k_size2", "3", "--loss_norm",
                                        "--pre_train_optim", str(tmp_path / "dense.pt")])
    with pytest.raises(OptionError, match=r"basis layer 'features\.1\.0\.body\.0' of --model ResNet_Basis "
                                          r"cannot be compared with dense filters \(.*3x3 projection"):
        dense_reference(CLS_TREE, args, CLS_TREE.build_model(args))


class _Dense(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, 8, 3), nn.ReLU())


class _Compressed(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = BasisConv2d(8, 8, 3, basis_size=4, n_basis=2)


def _fake_tree(baseline_in_channels, built=None):
    """A tree whose baseline is a _Dense; each baseline it builds is appended to ``built``."""
    def build_model(args):
        baseline = _Dense(baseline_in_channels)
        if built is not None:
            built.append(baseline)
        return baseline

    return SimpleNamespace(baseline_name=lambda args: "Dense", build_model=build_model,
                           load_pretrained=lambda model, path, args: None)


def test_a_block_of_the_baseline_pairs_through_its_single_conv():
    args = SimpleNamespace(model="Compressed", pre_train_optim="x.pt")
    built = []
    reference = dense_reference(_fake_tree(8, built), args, _Compressed())
    assert list(reference) == ["block"] and reference["block"].shape == (8, 8, 3, 3)
    assert len(built) == 1 and torch.equal(reference["block"], built[0].block[0].weight)


def test_a_basis_layer_without_a_dense_counterpart_of_its_shape_is_named():
    args = SimpleNamespace(model="Compressed", pre_train_optim="x.pt")
    expected = (r"basis layer 'block' of --model Compressed has no dense counterpart in --model Dense: "
                r"it composes filters of shape \(8, 8, 3, 3\), the baseline has \(8, 16, 3, 3\) at 'block'")
    with pytest.raises(OptionError, match=expected):
        dense_reference(_fake_tree(16), args, _Compressed())
