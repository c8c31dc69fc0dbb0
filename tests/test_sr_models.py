"""SR models against the official code: exact parameter counts, state_dict keys, golden outputs."""

import csv
import shlex

import pytest
import torch
from reference_paths import GOLDEN_CPU_TOLERANCE, GOLDEN_CUDA_TOLERANCE
from torch import nn

from filter_basis.errors import CheckpointError, OptionError
from filter_basis.layers import BasisConv2d
from super_resolution.model import (
    baseline_name,
    build_model,
    first_block_path,
    load_pretrained,
    load_state,
    official_key_map,
    summary_input_size,
)
from super_resolution.option import parse_args


def _rows(path, **where):
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if all(r[k] == v for k, v in where.items())]


def _sr_rows(reference_dir):
    rows = _rows(reference_dir / "official_models.tsv")
    return [r for r in rows if r["config"].startswith(("EDSR", "SRResNet"))]


def _args(command_line):
    return parse_args(shlex.split(command_line))


def _count(module, weights_only=False):
    return sum(p.numel() for p in module.parameters() if not weights_only or p.dim() > 1)


def test_every_sr_configuration_of_the_paper_is_listed(reference_dir):
    assert len(_sr_rows(reference_dir)) == 22


def test_parameter_counts_and_state_dict_keys_match_the_official_models(reference_dir):
    """All 22 SR rows of official_models.tsv (built on the meta device): total, weight and first-block
    weight counts exactly; and the official state_dict listing (keys and shapes, shared tensors under
    every key) reproduced by our keys mapped to the official names."""
    for row in _sr_rows(reference_dir):
        args = _args(row["command_line"])
        with torch.device("meta"):
            model = build_model(args)
        block = model.get_submodule(first_block_path(args))
        counts = (_count(model), _count(model, True), _count(block, True))
        expected = (int(row["total_params"]), int(row["weight_params(dim>1)"]),
                    int(row["weights_per_residual_block"]))
        assert counts == expected, row["config"]
        listing = reference_dir / "official_state_dicts" / f"{row['config']}.tsv"
        official = {(r["key"], r["shape"]) for r in _rows(listing)}
        names = official_key_map(model)
        ours = {(names[k], str(tuple(v.shape))) for k, v in model.state_dict().items()}
        assert ours == official, row["config"]


def _golden(reference_dir):
    return _rows(reference_dir / "golden" / "README.tsv", tree="super_resolution")


def _check_golden(reference_dir, device, tolerance):
    rows = _golden(reference_dir)
    assert len(rows) == 10
    for row in rows:
        golden = torch.load(reference_dir / "golden" / f"{row['name']}.pt", weights_only=True)
        model = build_model(_args(row["command_line"] + " --init official")).eval()  # the official scheme
        load_state(model, golden["state_dict"], source=row["name"])
        with torch.no_grad():
            output = model.to(device)(golden["input"].to(device)).cpu()
        error = (output - golden["output"]).norm() / golden["output"].norm()
        assert error < tolerance, f"{row['name']} on {device}: relative error {error:.2e}"


def test_golden_vectors_of_every_sr_family_are_reproduced(reference_dir):
    _check_golden(reference_dir, "cpu", GOLDEN_CPU_TOLERANCE)


@pytest.mark.cuda
def test_golden_vectors_are_reproduced_on_cuda(reference_dir):
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # full float32 convolutions
        _check_golden(reference_dir, "cuda", GOLDEN_CUDA_TOLERANCE)


def test_shared_tensors_are_one_parameter():
    model = build_model(_args("--model SRResNet_Factor --scale 4 --sic_layer 2 --n_resblocks 2 --n_feats 8"))
    prelu = model.head[1]
    assert model.body[1].body[2] is prelu and model.body[0].body[0].layers[1].act is prelu
    assert model.tail[0][2] is not prelu and model.tail[0][5] is not model.tail[0][2]
    edsr = build_model(_args("--model EDSR_Basis --share_basis --scale 2 --basis_size 8 --n_basis 4 "
                             "--n_resblocks 2 --n_feats 8"))
    first, second = edsr.body[0].body[0], edsr.body[0].body[2]
    assert first.basis is second.basis and first.basis_bias is not second.basis_bias
    assert edsr.body[0].body[0].basis is not edsr.body[1].body[0].basis  # never across blocks
    nobn = build_model(_args("--model SRResNet_Basis --scale 4 --basis_size 4 --n_basis 2 "
                             "--n_resblocks 2 --n_feats 8"))
    hidden = nobn.body[0].body[0].mid[1]
    assert hidden is not nobn.head[1] and nobn.body[1].body[3].post[1] is hidden
    with_bn = build_model(_args("--model SRResNet_Basis --bn_every --scale 4 --basis_size 4 --n_basis 2 "
                                "--n_resblocks 2 --n_feats 8"))
    assert with_bn.body[1].body[1].post[1] is with_bn.head[1] and len(with_bn.body[0].body) == 2


def test_mean_shift_is_trainable_and_starts_at_the_div2k_mean():
    model = build_model(_args("--model EDSR --scale 2 --n_resblocks 1 --n_feats 8"))
    assert model.sub_mean.weight.requires_grad and model.add_mean.bias.requires_grad
    assert torch.allclose(model.add_mean.bias, torch.tensor([114.444, 111.4605, 103.02]))
    assert torch.equal(model.sub_mean.weight.view(3, 3), torch.eye(3))


@pytest.mark.parametrize("command, output", [
    ("--model EDSR --scale 3 --n_resblocks 1 --n_feats 8 --n_colors 1", (1, 1, 21, 27)),
    ("--model SRResNet --scale 2 --n_resblocks 1 --n_feats 8", (1, 3, 14, 18)),
    ("--model EDSR_Factor --scale 8 --n_resblocks 1 --n_feats 8 --sic_layer 1", (1, 3, 56, 72)),
])
def test_output_size_is_scale_times_input(command, output):
    args = _args(command)
    with torch.no_grad():
        assert build_model(args)(torch.rand(1, args.n_colors, 7, 9)).shape == output


def test_basis_layers_use_the_official_initialisation():
    model = build_model(_args("--model EDSR_Basis --scale 2 --basis_size 8 --n_basis 4 --n_resblocks 1 "
                              "--n_feats 16"))
    layer = model.body[0].body[0]
    assert isinstance(layer, BasisConv2d) and layer.n_splits == 2
    assert torch.count_nonzero(layer.basis_bias) == 0 and torch.count_nonzero(layer.projection.bias) == 0


def test_bad_option_combinations_are_option_errors():
    with pytest.raises(OptionError, match="--basis_size 24 .*--n_feats 64"):
        build_model(_args("--model EDSR_Basis --basis_size 24 --n_feats 64"))
    with pytest.raises(OptionError, match="--scale 5"):
        build_model(_args("--model EDSR --scale 5 --n_resblocks 1 --n_feats 8"))
    with pytest.raises(OptionError, match="--scale 2\\+3"):
        build_model(_args("--model EDSR --scale 2+3 --n_resblocks 1 --n_feats 8"))


def test_baselines_and_summary_input():
    assert baseline_name(_args("--model SRResNet_Basis --bn_every")) == "SRResNet"
    assert baseline_name(_args("--model EDSR_Factor")) == "EDSR"
    assert baseline_name(_args("--model EDSR")) == "EDSR"
    assert summary_input_size(_args("--model EDSR --scale 3")) == (3, 240, 426)
    assert summary_input_size(_args("--model EDSR --scale 4 --n_colors 1")) == (1, 180, 320)


def test_our_checkpoints_and_official_ones_load_strictly(tmp_path, reference_dir):
    row = _rows(reference_dir / "golden" / "README.tsv", name="EDSR_Basis_shared_small_X2")[0]
    golden = torch.load(reference_dir / "golden" / f"{row['name']}.pt", weights_only=True)
    args = _args(row["command_line"])
    official_file = tmp_path / "official.pt"
    torch.save(golden["state_dict"], official_file)
    model = build_model(args).eval()
    load_pretrained(model, official_file, args)
    ours = tmp_path / "ours.pt"
    torch.save(model.state_dict(), ours)
    again = build_model(args).eval()
    load_pretrained(again, ours, args)
    x = golden["input"]
    with torch.no_grad():
        assert torch.equal(again(x), model(x))

    non_shared = build_model(_args(row["command_line"].replace("--share_basis ", "")))
    different = tmp_path / "non_shared.pt"
    torch.save({official_key_map(non_shared)[k]: v for k, v in non_shared.state_dict().items()}, different)
    with pytest.raises(CheckpointError, match="differ, but the model shares one tensor"):
        load_pretrained(build_model(args), different, args)  # the keys are identical; the values tell


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.pop("tail.1.bias"), "lacks 'tail.1.bias'"),
    (lambda sd: sd.update({"extra.weight": torch.zeros(1)}), "unexpected key 'extra.weight'"),
    (lambda sd: sd.update({"head.0.weight": torch.zeros(8, 3, 5, 5)}), r"'head.0.weight' has shape"),
])
def test_checkpoints_that_do_not_fit_are_refused_with_the_first_bad_key(tmp_path, change, message):
    args = _args("--model EDSR --scale 2 --n_resblocks 1 --n_feats 8")
    state = build_model(args).state_dict()
    change(state)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(build_model(args), path, args)


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path, code_payload):
    path = tmp_path / "evil.pt"
    payload, marker = code_payload
    torch.save({"weight": payload}, path)
    args = _args("--model EDSR --scale 2 --n_resblocks 1 --n_feats 8")
    with pytest.raises(CheckpointError, match="is refused.*nothing in it was run"):
        load_pretrained(build_model(args), path, args)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="no such file"):
        load_pretrained(build_model(args), tmp_path / "nothing.pt", args)


def test_srresnet_ignores_res_scale():
    torch.manual_seed(0)
    a = build_model(_args("--model SRResNet --scale 2 --n_resblocks 1 --n_feats 8 --res_scale 0.1")).eval()
    torch.manual_seed(0)
    b = build_model(_args("--model SRResNet --scale 2 --n_resblocks 1 --n_feats 8")).eval()
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert isinstance(a.head[1], nn.PReLU)
