"""--init scaled|official (docs/initialisation.md).

scaled: every configuration of the paper's Tables 2, 3 and 5, built at its real size, starts within 2x of
its dense baseline's output standard deviation (eval mode, seed 0; SR: one 16x16 LR image uniform in
0-255, classification: a standard-normal 32x32 batch).  official: the initial weights are those of the
code before --init existed, bit for bit (fingerprints below were computed with that code).
"""

import importlib.util
import shlex
import sys

import pytest
import torch
from reference_paths import ROOT

from filter_basis import init_scale
from filter_basis.engine import find_tree
from filter_basis.engine.resume import check_options
from filter_basis.errors import OptionError
from filter_basis.layers import BasisConv2d, FactorConv2d, GroupConv2d


def _paper_driver():
    """scripts/paper/run.py as a module."""
    spec = importlib.util.spec_from_file_location("paper_run_init", ROOT / "scripts" / "paper" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


DRIVER = _paper_driver()
CONFIGS = [c for c in DRIVER.load_configs() if c.runnable]
COMPRESSED = [c for c in CONFIGS if "_" in c.train[c.train.index("--model") + 1]]


def _args(tree_name, argv):
    return find_tree(tree_name).parse_args(list(argv) + ["--cpu"])


def _baseline_argv(config):
    tree = find_tree(config.tree)
    model = config.train[config.train.index("--model") + 1]
    baseline = tree.baseline_name(_args(config.tree, config.train))
    return [baseline if t == model else t for t in config.train]


_STD = {}


def _output_std(tree_name, argv):
    key = (tree_name, tuple(argv))
    if key not in _STD:
        tree = find_tree(tree_name)
        torch.manual_seed(0)
        model = tree.build_model(_args(tree_name, argv)).eval()
        generator = torch.Generator().manual_seed(0)
        if tree_name == "super_resolution":
            x = torch.rand(1, 3, 16, 16, generator=generator) * 255
        else:
            x = torch.randn(8, 3, 32, 32, generator=generator)
        with torch.no_grad():
            _STD[key] = model(x).std().item()
    return _STD[key]


def test_every_compressed_paper_configuration_is_checked():
    assert len(COMPRESSED) == 26  # Table 5: 9, Table 2: 8, Table 3: 9
    models = {c.train[c.train.index("--model") + 1] for c in COMPRESSED}
    assert models == {f"{family}_{kind}" for family in ("VGG", "ResNet", "DenseNet")
                      for kind in ("Basis", "Factor", "Group")} | {
        "EDSR_Basis", "EDSR_Factor", "SRResNet_Basis", "SRResNet_Factor"}


@pytest.mark.parametrize("config", COMPRESSED, ids=[c.name for c in COMPRESSED])
def test_scaled_starts_within_2x_of_the_dense_baseline(config, one_thread):
    assert _args(config.tree, config.train).init == "scaled"  # the default
    ours = _output_std(config.tree, config.train)
    dense = _output_std(config.tree, _baseline_argv(config))
    assert 0.5 < ours / dense < 2, f"output std {ours:.4g}, dense baseline {dense:.4g}"


@pytest.mark.parametrize("name", ["EDSR_Basis_X4_L8_B128+27", "EDSR_Factor_X4_L8_SIC2", "ResNet56_Basis"])
def test_official_starts_far_from_the_baseline(name, one_thread):
    """What scaled fixes: the official scheme multiplies the output scale by orders of magnitude."""
    config = next(c for c in CONFIGS if c.name == name)
    ours = _output_std(config.tree, config.train + ["--init", "official"])
    dense = _output_std(config.tree, _baseline_argv(config))
    assert ours / dense > 50


# ------------------------------------------------------------------------------------------ official
CASES = {
    "EDSR_Basis": ("super_resolution",
                   "--model EDSR_Basis --scale 2 --n_resblocks 2 --n_feats 16 --basis_size 8 --n_basis 4"),
    "EDSR_Basis_shared": ("super_resolution", "--model EDSR_Basis --scale 2 --n_resblocks 2 --n_feats 16 "
                                              "--basis_size 16 --n_basis 6 --share_basis"),
    "EDSR_Factor": ("super_resolution",
                    "--model EDSR_Factor --scale 2 --n_resblocks 2 --n_feats 16 --sic_layer 2"),
    "SRResNet_Basis": ("super_resolution", "--model SRResNet_Basis --scale 4 --n_resblocks 2 --n_feats 16 "
                                           "--basis_size 8 --n_basis 4"),
    "SRResNet_Basis_bn_every": ("super_resolution", "--model SRResNet_Basis --scale 4 --n_resblocks 2 "
                                                    "--n_feats 16 --basis_size 8 --n_basis 4 --bn_every"),
    "SRResNet_Factor": ("super_resolution",
                        "--model SRResNet_Factor --scale 4 --n_resblocks 2 --n_feats 16 --sic_layer 2"),
    "ResNet_Basis": ("image_classification", "--template ResNet --model ResNet_Basis --depth 8 --k_size2 1"),
    "ResNet_Factor": ("image_classification", "--template ResNet --model ResNet_Factor --depth 8"),
    "ResNet_Group": ("image_classification",
                     "--template ResNet --model ResNet_Group --depth 8 --group_size 8"),
    "VGG_Basis": ("image_classification", "--template VGG --model VGG_Basis --vgg_type 11"),
    "VGG_Factor": ("image_classification", "--template VGG --model VGG_Factor --vgg_type 11"),
    "VGG_Group": ("image_classification", "--template VGG --model VGG_Group --vgg_type 11 --group_size 64"),
    "DenseNet_Basis": ("image_classification", "--template DenseNet --model DenseNet_Basis --depth 40 "
                                               "--n_basis 36 --transition_group 6"),
    "DenseNet_Factor": ("image_classification", "--template DenseNet --model DenseNet_Factor --depth 40"),
    "DenseNet_Group": ("image_classification",
                       "--template DenseNet --model DenseNet_Group --depth 40 --group_size 6"),
}
# [sum, sum of squares, sum weighted by (position % 7)] of every state_dict tensor after torch.manual_seed(0)
# and build_model, computed with the code before --init existed (commit 8ac98e1).
OFFICIAL_FINGERPRINTS = {
    "EDSR_Basis": [12.18676674856215, 72467.68457531472, 33.934120106010596],
    "EDSR_Basis_shared": [9.498662289834101, 72483.69123005978, 85.0295245041525],
    "EDSR_Factor": [3.7257353582081123, 72399.2309142514, 3.3683677559565695],
    "SRResNet_Basis": [372.06674434655224, 464.3605673008305, 1044.038618561396],
    "SRResNet_Basis_bn_every": [243.56674434655224, 336.2355673008306, 683.5386185613961],
    "SRResNet_Factor": [178.3327835636942, 307.5273741820453, 509.52699862204554],
    "ResNet_Basis": [477.0245649357157, 1781.6017763866482, 1540.5084556142492],
    "ResNet_Factor": [489.5490141609989, 737.686800442338, 1420.4936474753486],
    "ResNet_Group": [447.9233512060082, 1329.9392511915514, 1342.1894940420407],
    "VGG_Basis": [9888.043596806772, 15878.963884819806, 29921.768878543793],
    "VGG_Factor": [18648.34973145415, 21822.392540042758, 55855.35517878022],
    "VGG_Group": [9877.674071385467, 15115.72190992458, 29401.70074509036],
    "DenseNet_Basis": [21500.962983732392, 26019.923909032208, 64288.6443856269],
    "DenseNet_Factor": [36308.1540637453, 56858.66209804888, 108816.7977561588],
    "DenseNet_Group": [18708.827646898797, 21450.796966320446, 56041.81245247915],
}


def fingerprint(model):
    total = square = weighted = 0.0
    for tensor in model.state_dict().values():
        flat = tensor.detach().double().flatten()
        total += flat.sum().item()
        square += flat.pow(2).sum().item()
        weighted += (flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64).remainder(7)).sum().item()
    return [total, square, weighted]


def _fingerprint(name, init):
    tree_name, line = CASES[name]
    tree = find_tree(tree_name)
    torch.manual_seed(0)
    return fingerprint(tree.build_model(_args(tree_name, shlex.split(line) + ["--init", init])))


@pytest.mark.parametrize("name", list(CASES))
def test_official_reproduces_the_initial_weights_of_the_official_scheme(name, one_thread):
    assert _fingerprint(name, "official") == pytest.approx(OFFICIAL_FINGERPRINTS[name], rel=1e-9)
    assert _fingerprint(name, "scaled") != pytest.approx(OFFICIAL_FINGERPRINTS[name], rel=1e-6)


# ------------------------------------------------------------------------------------------ layers
def _gain(module, channels, size=24, batch=16):
    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (module.eval()(x).pow(2).mean() / x.pow(2).mean()).item()


@pytest.mark.parametrize("make", [
    lambda: BasisConv2d(64, 64, 3, 16, 8),
    lambda: BasisConv2d(64, 32, 3, 64, 24, kernel_size2=3),
    lambda: GroupConv2d(64, 64, 3, groups=8),
], ids=["basis", "basis_k2_3", "group"])
def test_linear_layers_get_the_dense_gain(make, one_thread):
    torch.manual_seed(0)
    layer = make()
    assert init_scale.scale_compressed(layer, init_scale.pytorch_default) == 1
    # the dense conv's gain under PyTorch's default init is fan_in * 1 / (3 fan_in) = 1/3
    assert _gain(layer, 64) == pytest.approx(1 / 3, rel=0.15)
    assert all(b is None or not b.any() for b in (getattr(layer, "basis_bias", None), layer.projection.bias))


@pytest.mark.parametrize("channels,out,stride", [(64, 64, 1), (64, 128, 1), (64, 64, 2)])
def test_factor_layer_gets_the_dense_gain_before_its_last_activation(channels, out, stride, one_thread):
    torch.manual_seed(0)
    layer = FactorConv2d(channels, out, 3, stride, n_layers=2, act=None)  # linear SICs: gains multiply
    init_scale.scale_compressed(layer, init_scale.kaiming_fan_in)
    # no activation: intermediate SICs keep the second moment (gain 1), the last has the dense gain 2
    assert _gain(layer, channels) == pytest.approx(2.0, rel=0.2)


def test_a_residual_sic_cancels_its_identity(one_thread):
    """x + pw(dw(x)) composes a random conv, not the identity plus a small term."""
    torch.manual_seed(0)
    layer = FactorConv2d(32, 32, 3, n_layers=1, act=None)
    init_scale.scale_compressed(layer, init_scale.pytorch_default)
    x = torch.randn(4, 32, 12, 12)
    with torch.no_grad():
        y = layer(x)
    correlation = torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1].item()
    assert abs(correlation) < 0.2


def test_meta_layers_are_left_alone():
    with torch.device("meta"):
        layer = BasisConv2d(16, 16, 3, 8, 4)
    assert init_scale.scale_compressed(layer, init_scale.pytorch_default) == 0


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("tree_name", ["super_resolution", "image_classification"])
def test_init_option(tree_name):
    tree = find_tree(tree_name)
    assert tree.parse_args([]).init == "scaled"
    assert tree.parse_args(["--init", "official"]).init == "official"
    with pytest.raises(OptionError, match="--init.*'bogus'.*official"):
        tree.parse_args(["--init", "bogus"])


def test_init_may_differ_on_load():
    args = find_tree("super_resolution").parse_args(["--init", "official"])
    saved = {**vars(args), "init": "scaled"}
    check_options(args, saved)  # no drift error: the saved state replaces the initial weights


def test_paper_scripts_train_with_official_init():
    settings = DRIVER.Settings.from_env({})
    for config in CONFIGS:
        argv = DRIVER.train_argv(config, settings)
        assert argv[argv.index("--init") + 1] == "official"
