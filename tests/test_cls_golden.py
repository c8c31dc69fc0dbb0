"""Golden vectors of the official code: our models, built from the official command lines and loaded
through load_pretrained from the official state_dicts, reproduce the official eval-mode outputs.

These pin what counts alone cannot: split-major channel order after the basis convolution, the zeros on
both sides of the option-A shortcut, the first/last-channel basis slice of DenseNet_Basis (--inverse_index),
BN/ReLU placement in every Factor and Group variant.
"""

import ast
import csv
import shlex

import pytest
import torch
from reference_paths import GOLDEN_CPU_TOLERANCE, GOLDEN_CUDA_TOLERANCE, REFERENCE

from image_classification.model import MODELS, build_model, load_pretrained
from image_classification.option import parse_args

GOLDEN = [row for row in csv.DictReader((REFERENCE / "golden" / "README.tsv").read_text().splitlines(),
                                         delimiter="\t")
          if row["tree"] == "image_classification"]


def test_all_classification_vectors_are_covered():
    assert len(GOLDEN) == 11
    # every model has a vector but VGG, VGG_Factor and VGG_Group (only their counts and state_dict
    # layouts are pinned, by test_cls_models)
    covered = {parse_args(shlex.split(row["command_line"])).model for row in GOLDEN}
    assert covered == set(MODELS.names()) - {"VGG", "VGG_Factor", "VGG_Group"}


def _official_model(row, tmp_path):
    """The golden record of ``row`` and our model built from its command line, loaded from its
    official state_dict through load_pretrained, in eval mode."""
    golden = torch.load(REFERENCE / "golden" / f"{row['name']}.pt", weights_only=True)
    path = tmp_path / "official.pt"
    torch.save(golden["state_dict"], path)  # the file layout the official code saved
    # the official initialisation (every tensor is then loaded, so it only matters if loading missed one)
    args = parse_args(shlex.split(row["command_line"]) + ["--init", "official"])
    torch.manual_seed(0)
    model = build_model(args)
    load_pretrained(model, str(path), args)
    return golden, model.eval()


@pytest.mark.parametrize("row", GOLDEN, ids=[row["name"] for row in GOLDEN])
def test_official_output_is_reproduced(row, tmp_path):
    golden, model = _official_model(row, tmp_path)
    assert tuple(golden["input"].shape) == ast.literal_eval(row["input_shape"])
    with torch.no_grad():
        output = model(golden["input"])
    assert output.shape == golden["output"].shape == ast.literal_eval(row["output_shape"])
    error = (output - golden["output"]).norm() / golden["output"].norm()
    assert error < GOLDEN_CPU_TOLERANCE, f"relative error {error:.2e}"


@pytest.mark.cuda
@pytest.mark.parametrize("row", GOLDEN, ids=[row["name"] for row in GOLDEN])
def test_official_output_is_reproduced_on_cuda_channels_last(row, tmp_path):
    """Same vectors on the GPU with NHWC tensors (the basis layer's grouped path when G > 1)."""
    golden, model = _official_model(row, tmp_path)
    model = model.to("cuda", memory_format=torch.channels_last)
    x = golden["input"].to("cuda", memory_format=torch.channels_last)
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # compare in true float32
    try:
        with torch.no_grad():
            output = model(x).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = allow_tf32
    error = (output - golden["output"]).norm() / golden["output"].norm()
    assert error < GOLDEN_CUDA_TOLERANCE, f"relative error {error:.2e}"
