"""--basis_init / --target_compression: a basis model started from its trained dense baseline."""

import json

import pytest
import torch
from randomize import randomize

from filter_basis import decompose
from filter_basis import init_from_dense as fit
from filter_basis.complexity import weight_params
from filter_basis.engine import cli_main, run
from filter_basis.engine.options import basis_counts, counts_string
from filter_basis.errors import OptionError
from filter_basis.layers import BasisConv2d
from image_classification import model as cls_model
from image_classification import option as cls_option
from image_classification.tree import TREE as CLS_TREE
from super_resolution import model as sr_model
from super_resolution import option as sr_option
from super_resolution.tree import TREE as SR_TREE

pytestmark = pytest.mark.usefixtures("one_thread")

# ResNet-8 with 8-channel splits everywhere: every basis has 72 = 8 * 3 * 3 filters at full rank.
RESNET = ["--depth", "8", "--k_size2", "1", "--data_train", "Synthetic", "--data_test", "Synthetic",
          "--basis_size1", "8", "--basis_size2", "8", "--basis_size3", "8"]
EDSR = ["--n_resblocks", "2", "--n_feats", "8", "--basis_size", "4", "--scale", "2"]
EDSR_WIDE = ["--n_resblocks", "8", "--n_feats", "32", "--basis_size", "8", "--scale", "2"]  # blocks dominate
CLS_RUN = ["--n_train", "32", "--n_test", "16", "--batch_size", "16", "--cpu", "--n_threads", "0"]
WEIGHTS_FIT = ["--basis_fit", "weights", "--rank_select", "energy"]  # the closed form, number for number


def _resnet_pair(n_basis, seed=0):
    dense = randomize(cls_model.build_model(cls_option.parse_args(RESNET + ["--model", "ResNet"])), seed)
    args = cls_option.parse_args(RESNET + ["--model", "ResNet_Basis"] +
                                 [f"--n_basis{i}={n}" for i, n in enumerate(n_basis, 1)])
    return dense, cls_model.build_model(args).eval()


def _edsr_pair(n_basis, share=False, seed=0):
    extra = ["--share_basis"] if share else []
    dense = randomize(sr_model.build_model(sr_option.parse_args(EDSR + ["--model", "EDSR"])), seed)
    basis = sr_model.build_model(sr_option.parse_args(EDSR + extra + ["--model", "EDSR_Basis",
                                                                      "--n_basis", str(n_basis)]))
    return dense, basis.eval()


def _relative(a, b):
    return float((a - b).norm() / b.norm())


def test_full_rank_resnet_reproduces_the_dense_outputs():
    dense, basis = _resnet_pair((72, 72, 72))
    report = fit.init_from_dense(basis, dense)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _relative(basis(x), dense(x)) < 1e-4
    assert report.exact and report.total_relative_error < 1e-6
    # stage bases shared by several layers: 3 bases for the 6 block convolutions, fitted jointly
    assert [b["name"] for b in report.bases] == ["basis1", "basis2", "basis3"]
    assert [len(b["layers"]) for b in report.bases] == [3, 2, 1]
    # every other tensor copied: BN statistics and the classifier are the dense model's
    assert torch.equal(basis.classifier.weight, dense.classifier.weight)
    assert torch.equal(basis.features[1][0].body[1].running_var, dense.features[1][0].body[1].running_var)


def test_error_rises_monotonically_as_the_basis_shrinks():
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    output_errors, weight_errors = [], []
    for n in (72, 48, 24, 12, 4):
        dense, basis = _resnet_pair((n, n, n))
        report = fit.init_from_dense(basis, dense)
        with torch.no_grad():
            output_errors.append(_relative(basis(x), dense(x)))
        weight_errors.append(report.total_relative_error)
        # basis3 serves one layer: the energy its kept singular values hold is what that layer keeps
        assert report.bases[2]["energy_kept"] == pytest.approx(report.layers[-1].energy_kept, abs=1e-6)
    assert output_errors[0] < 1e-4
    assert all(a < b for a, b in zip(output_errors, output_errors[1:])), output_errors
    assert all(a < b for a, b in zip(weight_errors, weight_errors[1:])), weight_errors


@pytest.mark.parametrize("share", [False, True])
def test_edsr_basis_full_rank_and_joint_fit_of_a_shared_basis(share):
    dense, basis = _edsr_pair(36, share)
    report = fit.init_from_dense(basis, dense)
    x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(3)) * 255
    with torch.no_grad():
        assert _relative(basis(x), dense(x)) < 1e-5
    assert len(report.bases) == (2 if share else 4)
    # a rank cut: the shared basis is the joint fit to both convolutions of the block
    dense, basis = _edsr_pair(5, share)
    fit.init_from_dense(basis, dense)
    convs = [dense.body[0].body[0].weight, dense.body[0].body[2].weight]
    first = basis.body[0].body[0].basis.weight
    expected = decompose.fit_basis(convs if share else convs[:1], 4, 5)
    assert torch.allclose(first.abs(), expected.abs(), atol=1e-5)  # singular vectors up to their sign
    # biases: the dense bias on the projection, zero basis bias
    layer = basis.body[0].body[0]
    assert torch.equal(layer.projection.bias, dense.body[0].body[0].bias) and not layer.basis_bias.any()


def test_layers_that_are_not_one_dense_convolution_are_refused():
    for argv in (["--model", "VGG_Basis", "--basis_size", "64", "--n_basis", "8"],
                 ["--model", "ResNet_Basis", "--depth", "8", "--k_size2", "3"]):
        with torch.device("meta"):
            model = cls_model.build_model(cls_option.parse_args(argv))
        assert "not one dense convolution" in fit.refusal(model)
    for extra in ([], ["--bn_every"]):
        with torch.device("meta"):
            model = sr_model.build_model(sr_option.parse_args(EDSR + ["--model", "SRResNet_Basis"] + extra))
        assert "norm/activation" in fit.refusal(model)


def test_greedy_choice_beats_the_uniform_one_at_the_same_budget():
    dense, basis = _resnet_pair((72, 72, 72))
    groups = fit.plan(basis, dense)
    costs = fit.filter_costs(basis, groups)
    budget = sum(g.full_rank * c for g, c in zip(groups, costs)) // 3
    greedy = fit.choose_counts(groups, costs, budget)
    uniform = fit.uniform_counts(groups, costs, budget)
    assert sum(n * c for n, c in zip(greedy, costs)) <= budget
    assert sum(n * c for n, c in zip(uniform, costs)) <= budget
    assert fit.squared_error(groups, greedy) < fit.squared_error(groups, uniform)
    with pytest.raises(ValueError, match="one filter per basis"):
        fit.choose_counts(groups, costs, sum(costs) - 1)


def test_reestimate_batchnorm_averages_over_the_batches():
    dense, _ = _resnet_pair((4, 4, 4))
    batches = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    assert fit.reestimate_batchnorm(dense, batches) == 3
    stem_bn = dense.features[0][1]
    with torch.no_grad():
        stem = torch.cat([dense.features[0][0](b) for b in batches])
    assert torch.allclose(stem_bn.running_mean, stem.mean((0, 2, 3)), atol=1e-5)
    assert not dense.training and stem_bn.momentum == 0.1


def test_n_basis_str_syntax():
    args = sr_option.parse_args(EDSR + ["--model", "EDSR_Basis", "--n_basis_str", "3*3+7"])
    assert basis_counts(args, 4, "x") == [3, 3, 3, 7]
    model = sr_model.build_model(args)
    assert [m.n_basis for m in model.modules() if isinstance(m, BasisConv2d)] == [3, 3, 3, 7]
    assert counts_string([3, 3, 3, 7]) == "3*3+7*1"
    with pytest.raises(OptionError, match="gives 3 numbers; --model EDSR_Basis with --n_resblocks 2 has 4"):
        sr_model.build_model(sr_option.parse_args(EDSR + ["--model", "EDSR_Basis", "--n_basis_str", "3*3"]))
    with pytest.raises(OptionError, match="'x\\*2' is not accepted"):
        basis_counts(sr_option.parse_args(["--n_basis_str", "3+x*2"]), 3, "x")
    vgg = cls_model.build_model(cls_option.parse_args(["--model", "VGG_Basis", "--n_basis_str",
                                                       "8*2+16*8", "--basis_size", "64"]))
    assert [m.n_basis for m in vgg.modules() if isinstance(m, BasisConv2d)] == [8] * 2 + [16] * 8


# ---------------------------------------------------------------------------- command line
def _dense_file(path, argv, option=cls_option, model=cls_model, seed=0):
    torch.manual_seed(seed)
    dense = randomize(model.build_model(option.parse_args(argv)), seed)
    torch.save(dense.state_dict(), path)
    return dense


def test_cli_basis_init_writes_its_report_and_reestimates_batchnorm(tmp_path, capsys):
    dense = _dense_file(tmp_path / "dense.pt", RESNET + ["--model", "ResNet"])
    argv = RESNET + CLS_RUN + WEIGHTS_FIT + ["--model", "ResNet_Basis", "--basis_init",
                                             str(tmp_path / "dense.pt"), "--dir_save", str(tmp_path),
                                             "--epochs", "1", "--lr", "0.01"]
    trainer = run(CLS_TREE, cls_option.parse_args(argv + ["--save", "cut", "--n_basis1", "4", "--n_basis2",
                                                          "8", "--n_basis3", "8", "--bn_batches", "2"]))
    folder = tmp_path / "cut"
    record = json.loads((folder / "basis_init.json").read_text())
    assert record["bn_batches"] == 2 and [b["n_basis"] for b in record["bases"]] == [4, 8, 8]
    assert len(record["layers"]) == 6 and 0 < record["total_relative_error"] < 1
    assert (folder / "basis_init_energy.png").stat().st_size > 0
    assert "basis_init: 6 basis layers fitted" in (folder / "log.txt").read_text()
    assert trainer is not None and trainer.epoch == 1  # the run trained the fitted model
    # a test run re-estimates on the training data too
    run(CLS_TREE, cls_option.parse_args(argv + ["--save", "cut_test", "--n_basis1", "4", "--test_only"]))
    assert json.loads((tmp_path / "cut_test" / "basis_init.json").read_text())["bn_batches"] == 2
    # at full rank the fit is exact: BatchNorm statistics are the dense model's, and so is the test error
    run(CLS_TREE, cls_option.parse_args(argv + ["--save", "full", "--n_basis1", "72", "--n_basis2", "72",
                                                "--n_basis3", "72", "--test_only"]))
    record = json.loads((tmp_path / "full" / "basis_init.json").read_text())
    assert record["bn_batches"] == 0 and record["total_relative_error"] < 1e-6
    run(CLS_TREE, cls_option.parse_args(RESNET + CLS_RUN + ["--model", "ResNet", "--pretrained",
                                                            str(tmp_path / "dense.pt"), "--test_only",
                                                            "--dir_save", str(tmp_path), "--save", "dense"]))
    full = json.loads((tmp_path / "full" / "results.json").read_text())[0]["metrics"]
    same = json.loads((tmp_path / "dense" / "results.json").read_text())[0]["metrics"]
    assert full["top1_error"] == same["top1_error"]
    assert full["loss"] == pytest.approx(same["loss"], rel=1e-4)
    del dense


@pytest.mark.parametrize("tree,option,model,dense_argv,argv", [
    (CLS_TREE, cls_option, cls_model, RESNET + ["--model", "ResNet"],
     RESNET + CLS_RUN + ["--model", "ResNet_Basis", "--depth", "8"]),
    (SR_TREE, sr_option, sr_model, EDSR_WIDE + ["--model", "EDSR"],
     EDSR_WIDE + ["--model", "EDSR_Basis", "--cpu", "--data_train", "DIV2K", "--data_test", "Set5"]),
])
def test_target_compression_fits_the_budget_and_beats_uniform(tmp_path, capsys, tree, option, model,
                                                              dense_argv, argv):
    _dense_file(tmp_path / "dense.pt", dense_argv, option, model)
    args = option.parse_args(argv + WEIGHTS_FIT + ["--basis_init", str(tmp_path / "dense.pt"),
                                                   "--target_compression", "0.3", "--summary"])
    from filter_basis.engine import basis_init
    init = basis_init.prepare(tree, args)
    choice = init.choice
    assert choice["weight_params"] <= 0.3 * choice["baseline_weight_params"]
    assert choice["squared_error"] < choice["uniform_squared_error"]
    # the options written into args rebuild a model of exactly that size
    built = model.build_model(args)
    assert weight_params(built) == choice["weight_params"]
    assert weight_params(built) <= 0.3 * weight_params(init.baseline)
    for name, value in choice["options"].items():
        assert getattr(args, name) == value


def test_cli_target_compression_prints_and_records_the_options(tmp_path, capsys):
    _dense_file(tmp_path / "dense.pt", RESNET + ["--model", "ResNet"])
    argv = RESNET + CLS_RUN + WEIGHTS_FIT + ["--model", "ResNet_Basis", "--basis_init",
                                             str(tmp_path / "dense.pt"), "--target_compression", "0.3",
                                             "--test_only", "--dir_save", str(tmp_path), "--save", "tc"]
    assert cli_main(CLS_TREE, argv) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("--basis_init chose:"))
    saved = json.loads((tmp_path / "tc" / "args.json").read_text())
    for i in (1, 2, 3):
        assert f"--n_basis{i} {saved[f'n_basis{i}']}" in line
    summary = json.loads((tmp_path / "tc" / "summary.json").read_text())
    assert summary["compression_pct"] <= 30


@pytest.mark.parametrize("argv,message", [
    (["--model", "ResNet_Basis", "--k_size2", "3", "--basis_fit", "weights"], "a 3x3 projection"),
    (["--model", "ResNet_Basis", "--depth", "14"], "lacks 'features.1.1.body.0.weight'"),
    (["--model", "ResNet_Basis", "--target_compression", "0.0001"], "is too small"),
])
def test_cli_refusals_are_one_line(tmp_path, capsys, argv, message):
    _dense_file(tmp_path / "dense.pt", RESNET + ["--model", "ResNet"])
    full = RESNET + CLS_RUN + ["--basis_init", str(tmp_path / "dense.pt"), "--test_only",
                               "--dir_save", str(tmp_path), "--save", "x"] + argv
    assert cli_main(CLS_TREE, full) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("error: --")
    assert not (tmp_path / "x").exists()


def test_cli_option_combinations_are_checked(tmp_path, capsys):
    dense = tmp_path / "dense.pt"
    _dense_file(dense, RESNET + ["--model", "ResNet"])
    for argv, message in ((["--target_compression", "0.3"], "needs --basis_init"),
                          (["--basis_init", str(dense), "--pretrained", str(dense)], "both give"),
                          (["--basis_init", str(tmp_path / "nope.pt")], "no such file"),
                          (["--basis_init", str(dense), "--target_compression", "1.5"], "a fraction")):
        assert cli_main(CLS_TREE, RESNET + CLS_RUN + ["--model", "ResNet_Basis"] + argv) == 2
        assert message in capsys.readouterr().err


def test_basis_init_with_loss_norm_starts_where_the_regulariser_points(tmp_path):
    _dense_file(tmp_path / "dense.pt", RESNET + ["--model", "ResNet"])
    argv = RESNET + CLS_RUN + ["--model", "ResNet_Basis", "--n_basis1", "72", "--n_basis2", "72",
                               "--n_basis3", "72", "--basis_init", str(tmp_path / "dense.pt"), "--loss_norm",
                               "--pre_train_optim", str(tmp_path / "dense.pt"), "--dir_save", str(tmp_path),
                               "--save", "ln", "--epochs", "1", "--lr", "1e-6", "--print_every", "1"]
    trainer = run(CLS_TREE, cls_option.parse_args(argv))
    term = trainer.loss.last["loss_norm"]
    # at full rank the composed filters are the dense ones: only the small basis-norm part is left
    bases = sum(float(m.basis.weight.detach().square().mean()) for m in trainer.model.modules()
                if isinstance(m, BasisConv2d))
    assert float(term) == pytest.approx(0.05 * bases, rel=0.05)


def test_every_basis_run_saves_an_image_of_each_basis_with_its_checkpoints(tmp_path):
    import numpy as np

    from filter_basis.engine.plots import basis_grid

    filters = torch.zeros(5, 2, 3, 3)
    filters[1, 0, 0, 0] = -1.0
    filters[1, 0, 2, 2] = 1.0
    filters[1, 1] = 9.0  # other input channels are not drawn
    grid = basis_grid(filters, gap=1)
    assert grid.shape == (2 * 4 - 1, 3 * 4 - 1)  # 5 tiles in 2 rows of 3, 3 weights + 1 gap each
    tile = grid[0:3, 4:7]  # the second filter, unscaled
    assert tile[0, 0] == -1 and tile[-1, -1] == 1 and tile[1, 1] == 0
    assert np.isnan(grid[3]).all() and np.isnan(grid[4:, 8:]).all()  # gaps and the missing sixth tile
    argv = RESNET + CLS_RUN + ["--model", "ResNet_Basis", "--n_basis1", "5", "--dir_save", str(tmp_path),
                               "--save", "img", "--epochs", "1", "--lr", "0.01"]
    run(CLS_TREE, cls_option.parse_args(argv))
    import imageio.v3 as iio
    bases = tmp_path / "img" / "model" / "bases"
    assert sorted(p.name for p in bases.iterdir()) == ["basis1.png", "basis2.png", "basis3.png"]
    height, width, _ = iio.imread(bases / "basis1.png").shape
    assert height >= 300 and width >= 400  # large enough to see (the colour picture: tests/test_plots.py)


def test_basis_init_from_torchvision_resnet18_weights_is_exact_at_full_rank(tmp_path):
    """An ImageNet ResNet_Basis-18 started from a torchvision-layout ResNet-18 file, through the run's own
    --basis_init path: at full rank (16-channel splits, 144 = 16 * 3 * 3 filters per stage basis) it
    computes torchvision's function."""
    import torchvision

    from filter_basis.engine import basis_init

    reference = randomize(torchvision.models.resnet18(weights=None), 3).eval()
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(reference.state_dict(), path)
    argv = ["--model", "ResNet_Basis", "--depth", "18", "--data_train", "ImageNet", "--data_test", "ImageNet",
            "--basis_init", str(path), "--bn_batches", "0", "--basis_fit", "weights"]
    argv += [f"--basis_size{i}=16" for i in range(1, 5)] + [f"--n_basis{i}=144" for i in range(1, 5)]
    args = cls_option.parse_args(argv)
    dense_init = basis_init.prepare(CLS_TREE, args)
    model = cls_model.build_model(args).eval()
    report = dense_init.apply(model)
    assert report.exact and [b["name"] for b in report.bases] == ["basis1", "basis2", "basis3", "basis4"]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert _relative(model(x), reference(x)) < 1e-4
