"""Classification models: official parameter counts and state_dict layouts, the architecture details
that outputs depend on (option-A shortcut, basis sharing), checkpoint loading, option errors."""

import csv
import math
import re
import shlex

import pytest
import torch
import torch.nn.functional as F
from reference_paths import REFERENCE
from torch import nn

from filter_basis.errors import CheckpointError, OptionError, UserError
from filter_basis.layers import BasisConv2d
from image_classification.model import (
    MODELS,
    OFFICIAL_KEYS,
    baseline_name,
    build_model,
    load_pretrained,
    summary_input_size,
)
from image_classification.model.checkpoint import key_renamer, rename_keys
from image_classification.model.init import init_kaiming, init_vgg
from image_classification.model.resnet import OptionAShortcut
from image_classification.option import parse_args

OFFICIAL = [row for row in csv.DictReader((REFERENCE / "official_models.tsv").read_text().splitlines(),
                                           delimiter="\t")
            if re.match(r"(VGG|ResNet|DenseNet)", row["config"])]

# One small configuration per registered model (fast to build and run on the CPU).
SMALL = {
    "ResNet": "--model ResNet --depth 8",
    "ResNet_Basis": "--model ResNet_Basis --depth 8 --k_size2 1",
    "ResNet_Factor": "--model ResNet_Factor --depth 8",
    "ResNet_Group": "--model ResNet_Group --depth 8 --group_size 8",
    "DenseNet": "--model DenseNet --depth 10 --k 6",
    "DenseNet_Basis": "--model DenseNet_Basis --depth 10 --k 6 --n_basis 8 --transition_group 3",
    "DenseNet_Factor": "--model DenseNet_Factor --depth 10 --k 6",
    "DenseNet_Group": "--model DenseNet_Group --depth 10 --k 6 --group_size 6",
    "VGG": "--model VGG --vgg_type 11",
    "VGG_Basis": "--model VGG_Basis --vgg_type 11 --basis_size 64 --n_basis 16",
    "VGG_Factor": "--model VGG_Factor --vgg_type 11",
    "VGG_Group": "--model VGG_Group --vgg_type 11 --group_size 64",
}


def args_of(command_line: str):
    return parse_args(shlex.split(command_line))


def build(command_line: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(args_of(command_line)).eval()


def parameter_counts(model: nn.Module):
    """(all parameters, parameters with more than one dimension); a shared tensor counted once."""
    params = list(model.parameters())  # deduplicated by identity
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.dim() > 1)


def test_every_model_has_a_small_configuration():
    assert sorted(SMALL) == sorted(MODELS.names())


# ---------------------------------------------------------------------------- official facts
@pytest.mark.parametrize("row", OFFICIAL, ids=[row["config"] for row in OFFICIAL])
def test_parameter_counts_match_the_official_models(row):
    with torch.device("meta"):
        model = build_model(args_of(row["command_line"]))
    assert parameter_counts(model) == (int(row["total_params"]), int(row["weight_params(dim>1)"]))


@pytest.mark.parametrize("row", OFFICIAL, ids=[row["config"] for row in OFFICIAL])
def test_official_state_dict_layout_maps_onto_ours(row):
    """Every key of the official listing, renamed, is a key of our model with the same shape, and every
    key of ours is covered (shared tensors included under all their keys)."""
    args = args_of(row["command_line"])
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in build_model(args).state_dict().items()}
    lines = (REFERENCE / "official_state_dicts" / f"{row['config']}.tsv").read_text().splitlines()[1:]
    shapes = dict(line.split("\t") for line in lines)  # official key -> shape
    rename = key_renamer(OFFICIAL_KEYS.get(args.model, ()))
    by_new_name = {rename(key): key for key in shapes}
    assert len(by_new_name) == len(shapes), "two official keys renamed to one of ours"
    assert sorted(by_new_name) == sorted(ours)
    for key, shape in ours.items():
        assert shapes[by_new_name[key]] == str(shape), key


# ---------------------------------------------------------------------------- architecture details
def test_option_a_shortcut_pools_and_pads_zeros_on_both_sides():
    x = torch.randn(2, 16, 8, 8)
    y = OptionAShortcut(16, 32)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :8], torch.zeros(2, 8, 4, 4)) and torch.equal(y[:, 24:], torch.zeros(2, 8, 4, 4))
    assert torch.allclose(y[:, 8:24], F.avg_pool2d(x, 2))


def test_resnet_basis_shares_one_basis_per_stage_by_input_width():
    model = build("--model ResNet_Basis --depth 20 --k_size2 1")
    convs = {name: m for name, m in model.named_modules() if isinstance(m, BasisConv2d)}
    users = {i: [n for n, m in convs.items() if m.basis is getattr(model, f"basis{i}")] for i in (1, 2, 3)}
    assert [len(users[i]) for i in (1, 2, 3)] == [7, 6, 5]
    assert "features.2.0.body.0" in users[1] and "features.3.0.body.0" in users[2]
    # every one of the 18 users holds the stage basis itself (one tensor), not a copy of it
    repeated = len(list(model.named_parameters(remove_duplicate=False))) - len(list(model.parameters()))
    assert repeated == 7 + 6 + 5
    assert parameter_counts(model)[1] < sum(p.numel() for n, p in model.state_dict().items() if p.dim() > 1)


@pytest.mark.parametrize("inverse", [False, True])
def test_densenet_basis_slices_one_network_basis(inverse):
    flag = " --inverse_index" if inverse else ""
    model = build("--model DenseNet_Basis --depth 22 --n_basis 24" + flag)
    layers = [m for m in model.modules() if isinstance(m, BasisConv2d)]
    assert len(layers) == 18 and all(m.basis is model.basis for m in layers)
    assert model.basis.weight.shape == (24, 12 * 19, 3, 3)
    for layer in (layers[0], layers[-1]):
        c = layer.in_channels
        expected = model.basis.weight[:, -c:] if inverse else model.basis.weight[:, :c]
        assert torch.equal(layer.basis_weight(), expected)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_batch_of_one_gives_two_dimensional_logits(name):
    model = build(SMALL[name])
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_class_count_follows_the_training_set():
    model = build("--model ResNet --depth 8 --data_train CIFAR100 --data_test CIFAR100")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_baseline_name_and_summary_input_size():
    for name, command_line in SMALL.items():
        args = args_of(command_line)
        assert baseline_name(args) == name.split("_")[0] and summary_input_size(args) == (3, 32, 32)


# ---------------------------------------------------------------------------- initialisation
def test_kaiming_and_vgg_initialisations():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 256, 3), nn.BatchNorm2d(256), nn.Linear(400, 10))
    with torch.no_grad():
        net[1].weight.fill_(3)
    bias = net[0].bias.clone()
    init_kaiming(net)
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.05)
    assert torch.equal(net[0].bias, bias) and torch.equal(net[1].weight, torch.ones(256))
    assert net[2].weight.std().item() == pytest.approx(math.sqrt(1 / 400), rel=0.05)
    init_vgg(net)
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.05)
    assert torch.equal(net[0].bias, torch.zeros(256))
    assert net[2].weight.std().item() == pytest.approx(0.01, rel=0.05)


# ---------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", sorted(SMALL))
def test_our_keys_pass_the_official_renaming_unchanged(name):
    """So that load_pretrained reads our own checkpoints as they are."""
    with torch.device("meta"):
        state = build_model(args_of(SMALL[name])).state_dict()
    assert list(rename_keys(state, OFFICIAL_KEYS.get(name, ()))) == list(state)


@pytest.mark.parametrize("name", ["ResNet_Basis", "DenseNet_Basis"])
def test_our_state_dict_loads_back(name, tmp_path):
    trained = build(SMALL[name], seed=1)
    with torch.no_grad():  # make BN statistics differ from a fresh model's
        for m in trained.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    fresh = build(SMALL[name], seed=2)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(fresh(x), trained(x))
    load_pretrained(fresh, str(tmp_path / "model.pt"), args_of(SMALL[name]))
    assert torch.equal(fresh(x), trained(x))


def _golden_state(name):
    return torch.load(REFERENCE / "golden" / f"{name}.pt", weights_only=True)["state_dict"]


def _load(command_line, state, tmp_path):
    torch.save(state, tmp_path / "ckpt.pt")
    load_pretrained(build(command_line), str(tmp_path / "ckpt.pt"), args_of(command_line))


def test_wrong_options_name_the_mis_shaped_key(tmp_path):
    with pytest.raises(CheckpointError, match=r"features\.1\.0\.body\.0\.projection\.weight.*shape"):
        _load("--model ResNet_Basis --depth 20 --k_size2 3", _golden_state("ResNet20_Basis"), tmp_path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = _golden_state("ResNet20")
    with pytest.raises(CheckpointError, match="lacks 'classifier.bias'"):
        without_bias = {k: v for k, v in state.items() if k != "classifier.bias"}
        _load("--model ResNet --depth 20", without_bias, tmp_path)
    with pytest.raises(CheckpointError, match="unexpected key 'extra'"):
        _load("--model ResNet --depth 20", {**state, "extra": torch.zeros(1)}, tmp_path)
    with pytest.raises(CheckpointError, match="lacks"):
        _load("--model ResNet --depth 32", state, tmp_path)


def test_inconsistent_copies_of_a_shared_basis_are_refused(tmp_path):
    state = dict(_golden_state("ResNet20_Basis"))
    state["features.2.0.body.0.conv.0.basis_weight"] = state["basis1"] + 1
    with pytest.raises(CheckpointError, match="shares one tensor"):
        _load("--model ResNet_Basis --depth 20 --k_size2 1", state, tmp_path)


def test_unreadable_checkpoints(tmp_path):
    model, args = build(SMALL["ResNet"]), args_of(SMALL["ResNet"])
    with pytest.raises(CheckpointError, match="no such file"):
        load_pretrained(model, str(tmp_path / "none.pt"), args)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_pretrained(model, str(tmp_path / "junk.pt"), args)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_pretrained(model, str(tmp_path / "list.pt"), args)
    torch.save({"model": nn.Linear(1, 1)}, tmp_path / "code.pt")  # needs pickled classes: refused
    with pytest.raises(CheckpointError, match="is refused"):
        load_pretrained(model, str(tmp_path / "code.pt"), args)


# ---------------------------------------------------------------------------- option errors
@pytest.mark.parametrize("command_line, named", [
    ("--model ResNet --depth 21", "--depth 21"),
    ("--model ResNet --depth 50 --bottleneck", "bottleneck"),
    ("--model ResNet --depth 20 --kernel_size 2", "--kernel_size 2"),
    ("--model ResNet --depth 20 --data_train ImageNet", "ImageNet"),
    ("--model ResNet_Basis --depth 20 --basis_size1 5", "--basis_size1 5"),
    ("--model ResNet_Basis --depth 20 --k_size2 4", "--k_size2 4"),
    ("--model ResNet_Group --depth 20 --group_size 5", "--group_size 5"),
    ("--model DenseNet --depth 41", "--depth 41"),
    ("--model DenseNet --depth 25 --bottleneck", "--depth 25"),
    ("--model DenseNet_Basis --depth 40 --bottleneck", "--bottleneck"),
    ("--model DenseNet --depth 40 --data_train ImageNet", "ImageNet"),
    ("--model ResNet_Group --depth 18 --data_train ImageNet --group_size 48", "--group_size 48"),
    ("--model ResNet_Basis --depth 18 --data_train ImageNet --basis_size4 100", "--basis_size4 100"),
    ("--model DenseNet_Basis --depth 22 --reduction 0.5", "--reduction 0.5"),
    ("--model DenseNet_Basis --depth 22 --n_group 5", "--n_group 5"),
    ("--model DenseNet_Group --depth 40 --group_size 5", "--group_size 5"),
    ("--model VGG --vgg_type 17", "--vgg_type '17'"),
    ("--model VGG_Basis --basis_size 100", "--basis_size 100"),
    ("--model VGG_Group --group_size 48", "--group_size 48"),
])
def test_invalid_options_are_option_errors_naming_the_option(command_line, named):
    with pytest.raises(OptionError, match=re.escape(named)):
        with torch.device("meta"):
            build_model(args_of(command_line))


def test_unknown_model_lists_the_known_ones():
    args = args_of(SMALL["ResNet"])
    args.model = "AlexNet"
    with pytest.raises(UserError, match="ResNet_Basis"):
        build_model(args)
