"""``--model Bicubic``: MATLAB bicubic upscaling as a parameter-free model in the normal test pipeline."""

import json

import torch
from bicubic_pytorch import core

from super_resolution.main import main
from super_resolution.model import build_model
from super_resolution.option import parse_args


def test_bicubic_is_matlab_imresize_upscaling():
    model = build_model(parse_args(["--model", "Bicubic", "--scale", "3", "--test_only"]))
    x = torch.rand(2, 3, 7, 9) * 255
    y = model(x)
    assert y.shape == (2, 3, 21, 27) and torch.equal(y, core.imresize(x, scale=3))
    assert sum(p.numel() for p in model.parameters()) == 0


def test_set5_x2_gives_the_known_bicubic_figure(tmp_path, repo_root):
    dir_data = tmp_path / "data"
    (dir_data / "benchmark" / "Set5").mkdir(parents=True)
    (dir_data / "benchmark" / "Set5" / "HR").symlink_to(repo_root / "datasets" / "benchmark" / "Set5" / "HR")
    argv = ["--model", "Bicubic", "--scale", "2", "--test_only", "--data_test", "Set5", "--cpu",
            "--n_threads", "0", "--dir_data", str(dir_data), "--dir_save", str(tmp_path / "exp"),
            "--save", "bic"]
    assert main(argv) == 0
    folder = tmp_path / "exp" / "bic"
    [record] = json.loads((folder / "results.json").read_text())
    psnr = record["metrics"]["Set5_x2"]["psnr"]
    assert 33.66 <= round(psnr, 2) <= 33.68  # published bicubic Set5 x2: 33.66 dB; this pipeline: 33.68
    assert 0.92 < record["metrics"]["Set5_x2"]["ssim"] < 0.94
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["params"] == 0 and summary["baseline"] == "Bicubic"


def test_training_bicubic_is_a_one_line_error(tmp_path, capsys):
    argv = ["--model", "Bicubic", "--scale", "2", "--data_train", "Photos", "--data_test", "Set5", "--cpu",
            "--dir_save", str(tmp_path / "exp")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model Bicubic" in err and "--test_only" in err
    assert not (tmp_path / "exp").exists()


def test_bicubic_summary(capsys):
    assert main(["--model", "Bicubic", "--scale", "4", "--summary"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info == {"model": "Bicubic", "params": 0, "weight_params": 0, "flops": 0, "baseline": "Bicubic",
                    "baseline_weight_params": 0, "block_weight_params": 0, "baseline_block_weight_params": 0}
