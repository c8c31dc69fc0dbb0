"""ImageNet classification models: torchvision's architectures and parameter counts, torchvision weights
(from a file, from torch's hub cache, and the one-line refusal offline), the compressed variants' counts
against independent formulas, FLOPs at 224x224, multi-crop testing end to end.  Big models are built on
the meta device; outputs are compared on ResNet-18 and on small inputs only."""

import json
import shlex
import types
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from reference_paths import REFERENCE
from torch import nn

from filter_basis.engine.checkpoint import load_state_dict_strict
from filter_basis.errors import OptionError
from image_classification import main as cls_main
from image_classification.data.transforms import imagenet_transform
from image_classification.model import build_model, load_pretrained, pretrained_keys, summary_input_size
from image_classification.option import parse_args
from image_classification.trainer import Trainer

IMAGENET = " --data_train ImageNet --data_test ImageNet"
DEPTHS = (18, 34, 50, 101, 152)
# (bottleneck, blocks per stage) of torchvision's resnet<depth> (He et al. 2016, Table 1)
BLOCKS = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)),
          101: (True, (3, 4, 23, 3)), 152: (True, (3, 8, 36, 3))}
PLANES = (64, 128, 256, 512)

pytestmark = pytest.mark.usefixtures("one_thread")  # faster on a busy machine, same results


def args_of(command_line: str):
    return parse_args(shlex.split(command_line + IMAGENET))


def meta_model(command_line: str) -> nn.Module:
    with torch.device("meta"):
        return build_model(args_of(command_line))


def torchvision_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return getattr(torchvision.models, name)()


def counts(model: nn.Module):
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.dim() > 1)


def shapes(model: nn.Module, rename=lambda k: k) -> dict:
    return {rename(k): tuple(v.shape) for k, v in model.state_dict().items()}


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


METHODS = ("", "_Basis", "_Factor", "_Group")
ALL = ([f"--model ResNet{m} --depth {d}" for m in METHODS for d in DEPTHS]
       + [f"--model VGG{m} --vgg_type {t}" for m in METHODS for t in ("16", "19")])


@pytest.mark.parametrize("command_line", ALL)
def test_every_imagenet_model_builds_on_meta_and_gives_1000_logits(command_line):
    model = meta_model(command_line)
    assert model(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)


# ---------------------------------------------------------------------------- dense models = torchvision
def test_resnet18_and_vgg16_have_torchvision_parameter_counts():
    assert counts(meta_model("--model ResNet --depth 18"))[0] == 11_689_512
    assert counts(meta_model("--model VGG --vgg_type 16"))[0] == 138_357_544


@pytest.mark.parametrize("depth", DEPTHS)
def test_dense_resnet_has_torchvision_keys_and_shapes(depth):
    ours = meta_model(f"--model ResNet --depth {depth}")
    reference = torchvision_meta(f"resnet{depth}")
    assert shapes(ours) == shapes(reference)  # same keys: a torchvision state_dict loads as it is
    assert counts(ours) == counts(reference)


@pytest.mark.parametrize("vgg_type", ["16", "19"])
def test_dense_vgg_maps_torchvision_keys_onto_ours(vgg_type):
    ours = meta_model(f"--model VGG --vgg_type {vgg_type}")
    reference = torchvision_meta(f"vgg{vgg_type}")
    rename = pretrained_keys(args_of(f"--model VGG --vgg_type {vgg_type}"))
    assert shapes(reference, rename) == shapes(ours)
    assert counts(ours) == counts(reference)
    last_conv = {"16": ("features.28.bias", "features.16.0.bias"),
                 "19": ("features.34.bias", "features.19.0.bias")}
    assert rename(last_conv[vgg_type][0]) == last_conv[vgg_type][1]


def test_torchvision_resnet18_file_loads_and_gives_torchvision_outputs(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    randomize_bn(reference)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    args = args_of("--model ResNet --depth 18")
    ours = build_model(args)
    load_pretrained(ours, str(tmp_path / "resnet18.pth"), args)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), reference.eval()(x))


def test_torchvision_resnet50_weights_give_torchvision_outputs():
    """Bottlenecks: the stride sits on the 3x3 conv, as in torchvision (loaded in memory)."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    randomize_bn(reference)
    args = args_of("--model ResNet --depth 50")
    ours = meta_model("--model ResNet --depth 50").to_empty(device="cpu")
    load_state_dict_strict(ours, reference.state_dict(), "resnet50", pretrained_keys(args))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), reference.eval()(x))


def test_torchvision_vgg16_weights_give_torchvision_outputs():
    """The whole 138M-parameter vgg16, filled cheaply, loaded through the key mapping (in memory)."""
    reference = torchvision_meta("vgg16").to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, (2 / p[0].numel()) ** 0.5, generator=generator)
    args = args_of("--model VGG --vgg_type 16")
    ours = meta_model("--model VGG --vgg_type 16").to_empty(device="cpu")
    load_state_dict_strict(ours, reference.state_dict(), "vgg16", pretrained_keys(args))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), reference.eval()(x))


# ---------------------------------------------------------------------------- --pretrained download
def test_download_uses_torchs_hub_cache_without_a_connection(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    args = args_of("--model ResNet --depth 18 --pretrained download")
    ours = build_model(args)
    load_pretrained(ours, "download", args)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), reference.eval()(x))


def _offline(*args, **kwargs):
    """Stands in for torch.hub's download: the tests never reach the network."""
    raise URLError("[Errno -2] Name or service not known")


def test_download_offline_stops_with_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    argv = shlex.split("--model ResNet --depth 18 --pretrained download --cpu --test_only --n_threads 0"
                       + IMAGENET) + ["--dir_save", str(tmp_path / "runs"), "--dir_data", str(tmp_path)]
    assert cls_main.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet18-f37072fd.pth" in err[0] and "--pretrained /path/to/" in err[0]
    assert not (tmp_path / "runs").exists()  # stopped before the experiment folder was made


@pytest.mark.parametrize("command_line", ["--model ResNet_Basis --depth 18" + IMAGENET,
                                          "--model ResNet --depth 20",
                                          "--model VGG --vgg_type 11" + IMAGENET])
def test_download_is_refused_where_torchvision_has_no_weights(command_line):
    with pytest.raises(OptionError, match="--pretrained download"):
        parse_args(shlex.split(command_line + " --pretrained download"))


def test_download_and_files_are_accepted_as_pretrained_values(tmp_path):
    assert parse_args(shlex.split("--model ResNet --depth 50 --pretrained download" + IMAGENET))
    with pytest.raises(OptionError, match="no such file"):
        parse_args(shlex.split(f"--model ResNet --depth 50 --pretrained {tmp_path}/none.pth" + IMAGENET))


# ---------------------------------------------------------------------------- compressed models
def conv3x3_shapes(depth: int) -> list:
    """(in, out, stage) of every 3x3 conv of resnet<depth> (the 3x3 conv of a bottleneck is planes ->
    planes; the first conv of a basic stage still sees the previous stage's width)."""
    bottleneck, blocks = BLOCKS[depth]
    convs, width = [], 64
    for stage, (planes, n) in enumerate(zip(PLANES, blocks), start=1):
        for _ in range(n):
            if bottleneck:
                convs.append((planes, planes, stage))
            else:
                convs += [(width, planes, stage), (planes, planes, stage)]
            width = planes * (4 if bottleneck else 1)
    return convs


def compressed_counts(depth: int, per_conv, shared_weights: int = 0, shared_other: int = 0):
    """torchvision's resnet<depth> counts with every 3x3 conv replaced: ``per_conv(cin, cout, stage)`` gives
    its (weights, other parameters)."""
    total, weights = counts(torchvision_meta(f"resnet{depth}"))
    for cin, cout, stage in conv3x3_shapes(depth):
        w, o = per_conv(cin, cout, stage)
        total += w + o - cin * cout * 9
        weights += w - cin * cout * 9
    return total + shared_weights + shared_other, weights + shared_weights


@pytest.mark.parametrize("depth", DEPTHS)
def test_resnet_basis_counts(depth):
    """One basis (n_i, b_i, 3, 3) per stage, used by the 3x3 convs whose input has that stage's width;
    every conv owns a basis bias (n) and a 1x1 projection with bias. Defaults b = width, n = 5/8 width."""
    size = {64: (64, 40), 128: (128, 80), 256: (256, 160), 512: (512, 320)}  # input width -> (b, n)

    def per_conv(cin, cout, stage):
        b, n = size[cin]
        return cout * (cin // b) * n, n + cout

    bases = sum(b * n * 9 for b, n in size.values())
    expected = compressed_counts(depth, per_conv, bases)
    assert counts(meta_model(f"--model ResNet_Basis --depth {depth}")) == expected


def test_resnet_basis_stage_options_and_weight_fraction():
    model = meta_model("--model ResNet_Basis --depth 18 --basis_size4 128 --n_basis4 64")
    assert tuple(model.basis4.weight.shape) == (64, 128, 3, 3)
    assert tuple(model.basis1.weight.shape) == (40, 64, 3, 3)
    assert model.layer4[1].conv2.n_splits == 4 and model.layer4[0].conv1.basis is model.basis3
    dense = counts(meta_model("--model ResNet --depth 18"))[1]
    assert 0.28 < counts(meta_model("--model ResNet_Basis --depth 18"))[1] / dense < 0.31  # about 30%
    assert parse_args(shlex.split("--model ResNet_Basis --depth 20")).n_basis1 == 24  # CIFAR defaults stay


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_factor_counts(depth):
    """Two SICs per 3x3 conv: dw 3x3 + 1x1 (cin -> cin), dw 3x3 + 1x1 (cin -> cout); no biases."""
    per_conv = lambda cin, cout, stage: (2 * cin * 9 + cin * cin + cin * cout, 0)  # noqa: E731
    assert counts(meta_model(f"--model ResNet_Factor --depth {depth}")) == compressed_counts(depth, per_conv)


@pytest.mark.parametrize("depth, group_size", [(18, 16), (101, 32)])
def test_resnet_group_counts(depth, group_size):
    """Grouped 3x3 (cin -> cin, --group_size channels per group, in every stage) + 1x1, both with bias."""
    per_conv = lambda cin, cout, stage: (cin * group_size * 9 + cin * cout, cin + cout)  # noqa: E731
    model = meta_model(f"--model ResNet_Group --depth {depth} --group_size {group_size}")
    assert counts(model) == compressed_counts(depth, per_conv)


VGG_CLASSIFIER = 512 * 7 * 7 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000


@pytest.mark.parametrize("config, command_line", [
    ("VGG16_Basis", "--model VGG_Basis --vgg_type 16 --basis_size 128"),
    ("VGG16_Factor", "--model VGG_Factor --vgg_type 16"),
    ("VGG16_Group64", "--model VGG_Group --vgg_type 16 --group_size 64"),
])
def test_compressed_vgg_counts_are_the_official_cifar_ones_with_the_imagenet_head(config, command_line):
    """Same features as the CIFAR models (official counts), the CIFAR Linear(512, 10) replaced by
    torchvision's three-layer classifier."""
    rows = (REFERENCE / "official_models.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    row = dict(zip(header, next(r.split("\t") for r in rows[1:] if r.split("\t")[0] == config)))
    total, weights = int(row["total_params"]), int(row["weight_params(dim>1)"])
    expected = (total - 5130 + VGG_CLASSIFIER, weights - 5120 + VGG_CLASSIFIER - 4096 - 4096 - 1000)
    assert counts(meta_model(command_line)) == expected


def test_vgg_basis_on_imagenet_has_batchnorm_in_its_plain_layers():
    model = meta_model("--model VGG_Basis --vgg_type 16")
    assert isinstance(model.features[0][1], nn.BatchNorm2d)  # the vgg16_bn layout
    assert not any(isinstance(m, nn.BatchNorm2d) for m in meta_model("--model VGG --vgg_type 16").modules())


@pytest.mark.parametrize("name", ["DenseNet", "DenseNet_Basis", "DenseNet_Factor", "DenseNet_Group"])
def test_densenet_on_imagenet_is_refused_in_one_line(name):
    with pytest.raises(OptionError, match=f"--model {name} has no ImageNet version") as error:
        meta_model(f"--model {name} --depth 40")
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------- summary at 224x224
@pytest.mark.parametrize("model, weights", [("--model ResNet --depth 18", "ResNet18_Weights"),
                                            ("--model ResNet --depth 50", "ResNet50_Weights"),
                                            ("--model VGG --vgg_type 16", "VGG16_Weights")])
def test_summary_counts_flops_at_224(model, weights, capsys):
    assert summary_input_size(args_of(model)) == (3, 224, 224)
    assert cls_main.main(shlex.split(model + IMAGENET + " --summary")) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # torchvision lists multiply-accumulates (in G) as "_ops"; FlopCounterMode counts 2 FLOPs each
    macs = getattr(torchvision.models, weights).IMAGENET1K_V1.meta["_ops"]
    assert info["flops"] / 2e9 == pytest.approx(macs, abs=6e-3)
    assert info["params"] == getattr(torchvision.models, weights).IMAGENET1K_V1.meta["num_params"]


# ---------------------------------------------------------------------------- multi-crop testing
def test_crop_logits_are_averaged():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    images = torch.randn(2, 5, 3, 2, 2)
    trainer = types.SimpleNamespace(eval_net=net)  # tests run the unwrapped model
    expected = torch.stack([net(images[i]).mean(0) for i in range(2)])
    assert torch.allclose(Trainer.logits(trainer, images), expected)
    assert torch.equal(Trainer.logits(trainer, images[:, 0]), net(images[:, 0]))


def test_test_only_run_on_an_image_folder_with_ten_crops(tmp_path):
    """ResNet-18 with saved weights on a two-class ImageNet tree (``--n_test 1``: its first image),
    ``--crop 10``: the run's loss is the cross-entropy of the crop-averaged logits computed here by hand."""
    crop = 10
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    images = []
    for label in range(2):
        folder = tmp_path / "ILSVRC2012" / "val" / f"n0{label}"
        folder.mkdir(parents=True)
        image = rng.integers(0, 64, (32, 40 + 8 * label, 3), dtype=np.uint8)
        image[:16, :20] += 190  # a bright corner: the crops see different things
        images.append(image)
        iio.imwrite(folder / "x.png", images[-1])
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    randomize_bn(reference)
    with torch.no_grad():
        reference.fc.weight.mul_(100)  # logits that tell the crops apart
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    argv = shlex.split(f"--model ResNet --depth 18 --test_only --cpu --n_threads 0 --crop {crop} --n_test 1"
                       + IMAGENET)
    argv += ["--dir_data", str(tmp_path), "--dir_save", str(tmp_path), "--save", "run",
             "--pretrained", str(tmp_path / "weights.pth")]
    assert cls_main.main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "results.json").read_text())[-1]["metrics"]
    transform = imagenet_transform(False, crop=crop)
    with torch.no_grad():
        crops = transform(Image.fromarray(images[0]))  # as ImageFolder reads it (PIL)
        assert crops.shape == (crop, 3, 224, 224)
        loss = nn.functional.cross_entropy(reference(crops).mean(0, keepdim=True), torch.tensor([0]))
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-4)
