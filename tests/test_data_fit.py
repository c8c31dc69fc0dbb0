"""--basis_fit data, --target_flops, --rank_select sensitivity, epoch 0 of --basis_init, and compress()."""

import copy
import json

import pytest
import torch
from randomize import randomize
from torch import nn

from filter_basis import compress, convert, data_fit, rank_select, summarize
from filter_basis.engine import basis_init, cli_main, run
from filter_basis.engine.summary import describe
from image_classification import model as cls_model
from image_classification import option as cls_option
from image_classification.tree import TREE as CLS_TREE
from super_resolution import model as sr_model
from super_resolution import option as sr_option
from super_resolution.tree import TREE as SR_TREE

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET = ["--depth", "8", "--data_train", "Synthetic", "--data_test", "Synthetic",
          "--basis_size1", "8", "--basis_size2", "8", "--basis_size3", "8"]
FULL = ["--n_basis1", "72", "--n_basis2", "72", "--n_basis3", "72"]
SR = ["--n_resblocks", "2", "--n_feats", "8", "--basis_size", "4", "--scale", "2"]
CLS_RUN = ["--n_train", "8", "--n_test", "4", "--batch_size", "4", "--cpu", "--n_threads", "0",
           "--fit_batches", "2", "--bn_batches", "1"]
SR_RUN = ["--cpu", "--n_threads", "0", "--data_train", "Photos", "--data_test", "Set5", "--n_train", "2",
          "--batch_size", "2", "--patch_size", "16", "--fit_batches", "1", "--bn_batches", "1"]


@pytest.fixture
def few_steps(monkeypatch):
    monkeypatch.setattr(data_fit, "STEPS", 15)


def _sane(model):
    """Random weights, BatchNorm at unit statistics and positive scales: activations stay in range."""
    randomize(model, 0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(1.0)
                m.running_mean.zero_()
                m.weight.abs_().add_(0.5)
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(2.0 / (m.weight[0].numel() ** 0.5))
    return model.eval()


def _pair(option, model, common, dense, basis, extra=()):
    torch.manual_seed(0)
    baseline = _sane(model.build_model(option.parse_args(common + ["--model", dense])))
    compressed = model.build_model(option.parse_args(common + ["--model", basis, *extra])).eval()
    return baseline, compressed


def _batches(shape, n=2, seed=1, batch=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=g) for _ in range(n)]


def _relative(a, b):
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------- exactness and error
@pytest.mark.parametrize("name,option,model,common,dense,basis,extra,shape", [
    ("ResNet k1", cls_option, cls_model, RESNET + ["--k_size2", "1"], "ResNet", "ResNet_Basis", FULL,
     (3, 32, 32)),
    ("ResNet k3", cls_option, cls_model, RESNET + ["--k_size2", "3"], "ResNet", "ResNet_Basis", FULL,
     (3, 32, 32)),
    ("EDSR", sr_option, sr_model, SR, "EDSR", "EDSR_Basis", ["--n_basis", "36"], (3, 12, 12)),
    ("EDSR shared", sr_option, sr_model, SR, "EDSR", "EDSR_Basis", ["--n_basis", "36", "--share_basis"],
     (3, 12, 12)),
    ("SRResNet PReLU", sr_option, sr_model, SR, "SRResNet", "SRResNet_Basis", ["--n_basis", "36"],
     (3, 12, 12)),
])
def test_full_rank_data_fit_reproduces_the_dense_outputs(name, option, model, common, dense, basis, extra,
                                                         shape, few_steps):
    baseline, compressed = _pair(option, model, common, dense, basis, extra)
    batches = _batches(shape)
    report = data_fit.fit_by_data(compressed, baseline, batches)
    x = _batches(shape, 1, seed=9)[0]
    with torch.no_grad():
        assert _relative(compressed(x), baseline(x)) < 1e-4, name
    assert report.exact


def test_relu_batchnorm_layers_end_below_their_svd_start(few_steps):
    """DenseNet_Basis: BN -> ReLU inside every basis layer, a 3x3 projection, a sliced shared basis and
    residual transitions the dense model does not have; the data fit lowers every unit's output error."""
    common = ["--depth", "10", "--k", "4", "--data_train", "Synthetic"]
    baseline, compressed = _pair(cls_option, cls_model, common, "DenseNet", "DenseNet_Basis",
                                 ["--n_basis", "16", "--transition_group", "2"])
    report = data_fit.fit_by_data(compressed, baseline, _batches((3, 32, 32)))
    kinds = {u.kind for u in report.units}
    assert {"layer", "block"} <= kinds
    fitted = [u for u in report.units if u.kind in ("layer", "block")]
    assert all(u.error_fit <= u.error_start for u in fitted)
    assert all(u.error_fit < 0.9 * u.error_start for u in fitted if u.kind == "layer")
    assert all(u.error_fit < u.error_start for u in fitted if u.kind == "block")  # the Adam steps' work
    assert all(u.steps == 15 for u in fitted)


def test_data_fit_beats_the_weights_fit_on_non_isotropic_inputs():
    """One input channel carries the signal, seven hardly any: the weights fit spends its 9 filters on all
    eight channels' filters alike; the data fit on the one that matters."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1)).eval()  # filter rank 32 > 9 filters
    scales = torch.tensor([5.0] + [0.02] * 7).view(1, 8, 1, 1)
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 8, 10, 10, generator=g) * scales for _ in range(3)]
    held_out = torch.randn(4, 8, 10, 10, generator=g) * scales
    by_weights = copy.deepcopy(dense)
    convert.basisify(by_weights, 8, 9)
    by_data = copy.deepcopy(by_weights)
    report = data_fit.fit_by_data(by_data, dense, batches)
    with torch.no_grad():
        reference = dense(held_out)
        weights_error = _relative(by_weights(held_out), reference)
        data_error = _relative(by_data(held_out), reference)
    assert data_error < 0.3 * weights_error, (data_error, weights_error)
    assert report.units[0].error_fit < 0.3 * report.units[0].error_start


def test_the_basis_of_the_data_fit_comes_from_the_whitened_filters(monkeypatch):
    """Same least-squares projection on the data, but the basis from the plain filter spectrum (no input
    statistics): a clearly larger output error."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1)).eval()
    scales = torch.tensor([5.0] + [0.02] * 7).view(1, 8, 1, 1)
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 8, 10, 10, generator=g) * scales for _ in range(3)]
    errors = []
    for whiten in (True, False):
        if not whiten:
            monkeypatch.setattr(data_fit, "split_covariances", lambda *args, **kwargs: {})
        model = copy.deepcopy(dense)
        convert.basisify(model, 8, 9)
        errors.append(data_fit.fit_by_data(model, dense, batches).units[0].error_fit)
    assert errors[0] < 0.5 * errors[1], errors


# ---------------------------------------------------------------------------- budgets and selection
def test_flop_budget_holds_exactly_by_the_summary_count(tmp_path, capsys):
    torch.manual_seed(0)
    dense_argv = SR + ["--model", "EDSR"]
    torch.save(_sane(sr_model.build_model(sr_option.parse_args(dense_argv))).state_dict(), tmp_path / "d.pt")
    argv = SR + SR_RUN + ["--model", "EDSR_Basis", "--basis_init", str(tmp_path / "d.pt"), "--rank_select",
                          "energy"]
    args = sr_option.parse_args(argv + ["--target_flops", "0.85"])  # head, tail, upsampler: about 2/3
    init = basis_init.prepare(SR_TREE, args)
    _, info = describe(SR_TREE, args)
    _, dense = describe(SR_TREE, sr_option.parse_args(dense_argv))
    assert info["flops"] == init.choice["flops"] <= 0.85 * dense["flops"]
    assert info["flops"] > 0.83 * dense["flops"]  # the budget is spent, not wasted
    # an unreachable budget is refused in one line naming the smallest reachable value
    assert cli_main(SR_TREE, argv + ["--target_flops", "0.5", "--test_only", "--dir_save", str(tmp_path),
                                     "--save", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--target_flops 0.5 is too small" in err
    smallest = float(err.rsplit("smallest reachable value is ", 1)[1])
    assert 0.5 < smallest < 0.85 and not (tmp_path / "x").exists()
    args = sr_option.parse_args(argv + ["--target_flops", str(smallest)])
    assert basis_init.prepare(SR_TREE, args).choice["flops"] <= smallest * dense["flops"]


def test_sensitivity_spends_on_the_layer_that_matters():
    """conv1 x 0.01 and conv2 x 100 around a ReLU: the same function, but conv1's filters look weak to the
    energy rule although every error in them is amplified a hundredfold."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    with torch.no_grad():
        dense[0].weight.mul_(0.01)
        dense[0].bias.mul_(0.01)
        dense[2].weight.mul_(100)
    batches = _batches((8, 10, 10), 2)
    counts = {}
    for select in ("energy", "sensitivity"):
        _, report = compress(dense, batches, basis_size=4, target_compression=0.4, rank_select_by=select,
                             input_size=(8, 10, 10), steps=0)
        counts[select] = report.counts
    assert counts["sensitivity"]["0.basis"] > counts["energy"]["0.basis"]
    assert counts["energy"]["0.basis"] <= 2


def test_sensitivity_greedy_moves_and_fills():
    curves = [{1: 1.0, 2: 0.5, 4: 0.0}, {1: 0.01, 2: 0.005, 4: 0.0}]
    budget = rank_select.Budget(["weights"], [0], [[10], [10]], [50])
    counts = rank_select.sensitivity_counts(curves, budget)
    assert counts == [4, 1]  # the insensitive basis gives up its filters first
    assert budget.holds(counts)


# ---------------------------------------------------------------------------- epoch 0
def _dense_resnet(path, k_size2="1"):
    torch.manual_seed(0)
    model = _sane(cls_model.build_model(cls_option.parse_args(RESNET + ["--model", "ResNet"])))
    torch.save(model.state_dict(), path)


def test_fitted_model_is_epoch_0_and_continues_without_refitting(tmp_path):
    _dense_resnet(tmp_path / "dense.pt")
    argv = RESNET + CLS_RUN + ["--model", "ResNet_Basis", "--k_size2", "1", "--n_basis1", "8", "--basis_init",
                               str(tmp_path / "dense.pt"), "--dir_save", str(tmp_path), "--save", "fit"]
    trainer = run(CLS_TREE, cls_option.parse_args(argv + ["--test_only"]))
    folder = tmp_path / "fit"
    results = json.loads((folder / "results.json").read_text())
    assert [r["epoch"] for r in results] == [0] and results[0]["fitted"] is True
    assert trainer.best["epoch"] == 0
    for name in ("model_latest.pt", "model_best.pt"):
        assert (folder / "model" / name).is_file()
    saved = torch.load(folder / "model" / "model_latest.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in trainer.model.state_dict().items())
    record = json.loads((folder / "basis_init.json").read_text())
    assert record["basis_fit"] == "data" and record["calibration_batches"] == 2
    log = (folder / "log.txt").read_text()
    assert "--fit_batches 2" in log and "[Epoch 0] test:" in log
    # the state saved at epoch 0 is continued: epoch 1 trains the fitted model, nothing is fitted again
    before = len(log)
    trainer = run(CLS_TREE, cls_option.parse_args(
        RESNET + CLS_RUN + ["--model", "ResNet_Basis", "--k_size2", "1", "--n_basis1", "8", "--basis_init",
                            str(tmp_path / "dense.pt"), "--dir_save", str(tmp_path), "--load", "fit",
                            "--epochs", "1", "--basis_fit", "weights"]))
    assert trainer.epoch == 1
    results = json.loads((folder / "results.json").read_text())
    assert [r["epoch"] for r in results] == [0, 1]
    assert "basis_init:" not in (folder / "log.txt").read_text()[before:]


def test_epoch_0_is_a_candidate_for_best(tmp_path):
    """A fine-tuning epoch that does not improve the fitted model leaves the best model at epoch 0."""
    _dense_resnet(tmp_path / "dense.pt")
    argv = RESNET + CLS_RUN + FULL + ["--model", "ResNet_Basis", "--k_size2", "1", "--basis_init",
                                      str(tmp_path / "dense.pt"), "--dir_save", str(tmp_path), "--save", "b",
                                      "--epochs", "1", "--lr", "1e-12", "--basis_fit", "weights"]
    trainer = run(CLS_TREE, cls_option.parse_args(argv))
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["epoch"] for r in results] == [0, 1] and "train_loss" in results[1]
    assert results[0]["metrics"]["top1_error"] == results[1]["metrics"]["top1_error"]
    assert trainer.best["epoch"] == 0
    assert "(best" in (tmp_path / "b" / "log.txt").read_text().splitlines()[-1]
    assert "@ epoch 0)" in (tmp_path / "b" / "log.txt").read_text().splitlines()[-1]


# ---------------------------------------------------------------------------- every family, end to end
@pytest.mark.parametrize("tree,option,model,common,dense,extra", [
    (CLS_TREE, cls_option, cls_model, ["--vgg_type", "11", "--data_train", "Synthetic", "--data_test",
                                       "Synthetic"], "VGG",
     ["--model", "VGG_Basis", "--n_basis", "16", "--basis_size", "32"]),
    (CLS_TREE, cls_option, cls_model, ["--depth", "10", "--k", "4", "--data_train", "Synthetic",
                                       "--data_test", "Synthetic"], "DenseNet",
     ["--model", "DenseNet_Basis", "--n_basis", "8", "--transition_group", "2"]),
    (CLS_TREE, cls_option, cls_model, RESNET + ["--k_size2", "3"], "ResNet",
     ["--model", "ResNet_Basis", "--target_compression", "0.9"]),
    (SR_TREE, sr_option, sr_model, SR, "SRResNet", ["--model", "SRResNet_Basis", "--n_basis", "12"]),
    (SR_TREE, sr_option, sr_model, SR, "SRResNet",
     ["--model", "SRResNet_Basis", "--n_basis", "12", "--bn_every", "--target_flops", "0.8"]),
], ids=["VGG", "DenseNet", "ResNet-k3", "SRResNet", "SRResNet-bn_every"])
def test_every_family_starts_from_its_dense_baseline(tmp_path, few_steps, tree, option, model, common, dense,
                                                     extra):
    torch.manual_seed(0)
    torch.save(_sane(model.build_model(option.parse_args(common + ["--model", dense]))).state_dict(),
               tmp_path / "dense.pt")
    run_argv = CLS_RUN if tree is CLS_TREE else SR_RUN
    argv = common + run_argv + extra + ["--basis_init", str(tmp_path / "dense.pt"), "--test_only",
                                        "--dir_save", str(tmp_path), "--save", "run"]
    assert cli_main(tree, argv) == 0
    folder = tmp_path / "run"
    record = json.loads((folder / "basis_init.json").read_text())
    assert record["units"] and all(u["error_fit"] <= u["error_start"] + 1e-9 for u in record["units"])
    results = json.loads((folder / "results.json").read_text())
    assert results[0]["epoch"] == 0 and (folder / "model" / "model_latest.pt").is_file()
    if "--target_compression" in extra or "--target_flops" in extra:
        assert record["target"]["rank_select"] == "sensitivity" and record["target"]["curves"]
        assert (folder / "basis_init_sensitivity.png").stat().st_size > 0


def test_weights_fit_refuses_a_non_linear_family_in_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(_sane(sr_model.build_model(sr_option.parse_args(SR + ["--model", "SRResNet"]))).state_dict(),
               tmp_path / "dense.pt")
    argv = SR + SR_RUN + ["--model", "SRResNet_Basis", "--basis_init", str(tmp_path / "dense.pt"),
                          "--basis_fit", "weights", "--test_only", "--dir_save", str(tmp_path), "--save", "x"]
    assert cli_main(SR_TREE, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--basis_fit data fits it" in err


# ---------------------------------------------------------------------------- the library call
def test_compress_a_torchvision_resnet18_to_a_flop_budget():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    data = [(x, None) for x in _batches((3, 32, 32), 2)]
    small, report = compress(net, data, basis_size=32, target_flops=0.8, input_size=(3, 32, 32),
                             rank_select_by="energy", include=["layer1.*", "layer2.*"], steps=1)
    counted = summarize(small, (3, 32, 32)).flops
    whole = summarize(net, (3, 32, 32)).flops
    assert counted == report.spent["flops"] <= 0.8 * whole
    assert report.baseline["flops"] == whole and report.fit is not None and report.bn_batches == 2
    # the eight 3x3 convolutions of layer1 and layer2 (the 1x1 downsampling one stays as it is)
    assert sum(isinstance(m, convert.BasisConv2d) for m in small.modules()) == 8
    assert not any(isinstance(m, convert.BasisConv2d) for m in net.modules())  # the given model is untouched
    with torch.no_grad():
        assert torch.isfinite(small(data[0][0])).all()


def test_dense_targets_are_captured_ahead_in_few_passes(monkeypatch, few_steps):
    """The baseline's outputs for many units come from one partial pass over the batches (not one pass per
    unit), a sliced basis gathers no input statistics, and a small cache gives the same fit."""
    common = ["--depth", "16", "--k", "4", "--data_train", "Synthetic"]
    extra = ["--n_basis", "16", "--transition_group", "2"]
    batches = _batches((3, 32, 32), n=3)
    results, default = {}, data_fit.CACHE_BYTES
    for cache in (default, 1):
        monkeypatch.setattr(data_fit, "CACHE_BYTES", cache)
        baseline, compressed = _pair(cls_option, cls_model, common, "DenseNet", "DenseNet_Basis", extra)
        calls = []
        baseline.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        report = data_fit.fit_by_data(compressed, baseline, batches)
        results[cache] = (len(calls), [u.error_fit for u in report.units], compressed.state_dict())
    fitted_units = len(results[1][1])
    assert fitted_units >= 10
    assert results[default][0] == len(batches)  # every target in one pass; no statistics pass
    assert results[1][0] >= fitted_units * len(batches)  # one unit a pass
    assert results[1][1] == pytest.approx(results[default][1], rel=1e-5)
    for key, value in results[1][2].items():
        assert torch.allclose(value.float(), results[default][2][key].float(), atol=1e-5), key


def test_alternating_refinement_lowers_the_error_of_a_shared_basis(few_steps):
    """A basis shared by all layers of a stage (ResNet_Basis --k_size2 1) at a low rank: rounds of basis
    steps and projection refits lower the linear layers' output error and the model's; at full rank the
    refined model stays exact."""
    common = RESNET + ["--k_size2", "1"]
    low = ["--n_basis1", "6", "--n_basis2", "6", "--n_basis3", "6"]
    x = _batches((3, 32, 32), 1, seed=9)[0]
    errors = {}
    for rounds in (0, 2):
        baseline, compressed = _pair(cls_option, cls_model, common, "ResNet", "ResNet_Basis", low)
        report = data_fit.fit_by_data(compressed, baseline, _batches((3, 32, 32)), rounds=rounds)
        with torch.no_grad():
            errors[rounds] = _relative(compressed(x), baseline(x))
        assert len(report.rounds) == rounds
    first, last = report.rounds[0], report.rounds[-1]
    assert last["after"] < 0.97 * first["before"] and first["steps"] > 0
    linear = [u.error_fit for u in report.units if u.kind == "linear"]
    assert sum(linear) / len(linear) == pytest.approx(last["after"])
    assert "refinement round 2" in "\n".join(report.lines())
    assert errors[2] < errors[0]
    baseline, compressed = _pair(cls_option, cls_model, common, "ResNet", "ResNet_Basis", FULL)
    report = data_fit.fit_by_data(compressed, baseline, _batches((3, 32, 32)), rounds=1)
    with torch.no_grad():
        assert _relative(compressed(x), baseline(x)) < 1e-4 and report.exact


def test_fit_rounds_from_the_command_line(tmp_path, few_steps):
    """--fit_rounds 2: two refinement rounds in the log and basis_init.json; a starting-point option, so
    --load with another value continues the run."""
    _dense_resnet(tmp_path / "dense.pt")
    argv = RESNET + CLS_RUN + ["--model", "ResNet_Basis", "--k_size2", "1", "--n_basis1", "4", "--basis_init",
                               str(tmp_path / "dense.pt"), "--dir_save", str(tmp_path)]
    run(CLS_TREE, cls_option.parse_args(argv + ["--save", "rounds", "--fit_rounds", "2", "--test_only"]))
    folder = tmp_path / "rounds"
    record = json.loads((folder / "basis_init.json").read_text())
    assert [r["round"] for r in record["rounds"]] == [1, 2]
    assert all(r["after"] <= r["before"] + 1e-9 for r in record["rounds"])
    assert "refinement round 2: mean linear output error" in (folder / "log.txt").read_text()
    trainer = run(CLS_TREE, cls_option.parse_args(argv + ["--load", "rounds", "--epochs", "1"]))
    assert trainer.epoch == 1


def test_densenet_transitions_start_from_reduced_rank_least_squares(monkeypatch, few_steps):
    """DenseNet_Basis' residual transitions (BN -> ReLU -> 1x1 -> 1x1, plus the input) start from the
    dense transition by reduced-rank least squares (ResidualTransition.fit_start), far below the start
    without it."""
    from image_classification.model.densenet import ResidualTransition

    common = ["--depth", "16", "--k", "4", "--data_train", "Synthetic"]
    extra = ["--n_basis", "16", "--transition_group", "2"]
    starts = {}
    for closed_form in (True, False):
        if not closed_form:
            monkeypatch.delattr(ResidualTransition, "fit_start")
        baseline, compressed = _pair(cls_option, cls_model, common, "DenseNet", "DenseNet_Basis", extra)
        report = data_fit.fit_by_data(compressed, baseline, _batches((3, 32, 32), n=2, batch=4))
        starts[closed_form] = [u.error_start for u in report.units if u.kind == "block"]
    assert len(starts[True]) == 2
    assert all(a < 0.5 * b for a, b in zip(starts[True], starts[False])), starts


def test_a_transition_sets_nothing_for_a_dense_module_of_another_shape():
    """fit_start says whether it set the block: a teacher it cannot reproduce leaves every weight alone."""
    from image_classification.model.densenet import ResidualTransition, plain_transition

    torch.manual_seed(0)
    block = ResidualTransition(8, 2).eval()
    before = copy.deepcopy(block.state_dict())
    inputs = _batches((8, 6, 6))
    assert block.fit_start(plain_transition(8, 4).eval(), inputs) is False
    assert all(torch.equal(v, block.state_dict()[k]) for k, v in before.items())
    assert block.fit_start(plain_transition(8, 8).eval(), inputs) is True
    assert not torch.equal(before["body.2.weight"], block.state_dict()["body.2.weight"])
