"""The SR command line end to end: official command lines parse, a tiny EDSR trains and tests."""

import csv
import json
import shlex

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from super_resolution.main import main
from super_resolution.model import build_model, load_pretrained
from super_resolution.option import parse_args


def _official_sr_commands(reference_dir):
    with open(reference_dir / "official_commands.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["tree"] == "super_resolution"]
    return [r["command"] for r in rows]


def test_every_official_sr_command_line_parses_and_builds(reference_dir, tmp_path):
    commands = _official_sr_commands(reference_dir)
    assert len(commands) == 32
    for command in commands:
        argv = shlex.split(command.replace("MODEL_PATH", str(tmp_path)))[2:]  # drop "python ../main.py"
        if "--pre_train" in argv:
            (tmp_path / argv[argv.index("--pre_train") + 1].rsplit("/", 1)[-1]).touch()
        args = parse_args(argv)
        assert args.scale == [int(argv[argv.index("--scale") + 1])]
        with torch.device("meta"):
            build_model(args)


def _tiny_div2k(root, n_images=4, size=64):
    """A DIV2K-layout training folder cut from the shipped Set5 images (LR made on first use)."""
    hr_dir = root / "DIV2K" / "DIV2K_train_HR"
    hr_dir.mkdir(parents=True)
    sources = sorted((root / "benchmark" / "Set5" / "HR").glob("*.png"))
    for i in range(n_images):
        image = iio.imread(sources[i])
        iio.imwrite(hr_dir / f"{i + 1:04d}.png", image[:size, :size])


@pytest.fixture
def dir_data(tmp_path, repo_root):
    root = tmp_path / "data"
    (root / "benchmark" / "Set5").mkdir(parents=True)
    (root / "benchmark" / "Set5" / "HR").symlink_to(repo_root / "datasets" / "benchmark" / "Set5" / "HR")
    _tiny_div2k(root)
    return root


def _run(dir_data, tmp_path, *options):
    argv = ["--model", "EDSR", "--n_resblocks", "2", "--n_feats", "16", "--scale", "2", "--cpu",
            "--n_threads", "0", "--dir_data", str(dir_data), "--dir_save", str(tmp_path / "experiment"),
            "--data_test", "Set5", *options]
    return main(argv)


def _set5_x2_metrics(results_dir, dir_data):
    """PSNR and SSIM of the saved 8-bit SR images of Set5 x2 computed here with numpy and scikit-image:
    the luminance of the difference with 2 border pixels cut (official PSNR) and SSIM of BT.601 Y."""
    from skimage.metrics import structural_similarity

    psnrs, ssims = [], []
    for saved in sorted(results_dir.glob("*_SR.png")):
        sr = iio.imread(saved).astype(np.float64)
        hr = iio.imread(dir_data / "benchmark" / "Set5" / "HR" / saved.name.replace("_SR", ""))
        hr = hr[:sr.shape[0], :sr.shape[1]].astype(np.float64)
        luma = ((sr - hr) / 255) @ np.array([65.738, 129.057, 25.064]) / 256
        psnrs.append(-10 * np.log10(np.mean(luma[2:-2, 2:-2] ** 2)))
        y_sr, y_hr = (16 + (x @ np.array([65.481, 128.553, 24.966])) / 255 for x in (sr, hr))
        ssims.append(structural_similarity(y_sr[2:-2, 2:-2], y_hr[2:-2, 2:-2], gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False, data_range=255))
    assert len(psnrs) == 5
    return float(np.mean(psnrs)), float(np.mean(ssims))


def test_tiny_edsr_trains_tests_and_reloads(dir_data, tmp_path, capsys):
    train = ["--save", "tiny", "--data_train", "DIV2K", "--n_train", "4", "--patch_size", "32",
             "--batch_size", "2", "--test_every", "2", "--epochs", "2", "--print_every", "1",
             "--save_results"]
    assert _run(dir_data, tmp_path, *train) == 0
    folder = tmp_path / "experiment" / "tiny"
    results = json.loads((folder / "results.json").read_text())
    assert [r["epoch"] for r in results] == [1, 2]
    for record in results:
        assert record["train_loss"] > 0 and record["samples_per_s"] > 0
    # the images saved by the last evaluation give its metrics, computed independently
    psnr, ssim = _set5_x2_metrics(folder / "results" / "Set5_x2", dir_data)
    assert results[-1]["metrics"]["Set5_x2"] == pytest.approx({"psnr": psnr, "ssim": ssim}, rel=1e-9)
    assert (dir_data / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png").is_file()

    best = max(results, key=lambda r: r["metrics"]["Set5_x2"]["psnr"])
    model_file = folder / "model" / "model_best.pt"
    args = parse_args(["--model", "EDSR", "--n_resblocks", "2", "--n_feats", "16", "--scale", "2"])
    load_pretrained(build_model(args), model_file, args)  # a plain state_dict, loadable anywhere

    test = ["--save", "tiny_test", "--test_only", "--pre_train", str(model_file), "--save_results", "--chop",
            "--print_model"]
    assert _run(dir_data, tmp_path, *test) == 0
    assert (tmp_path / "experiment" / "tiny_test" / "log.txt").read_text().count("EDSR(") == 1  # printed once
    records = json.loads((tmp_path / "experiment" / "tiny_test" / "results.json").read_text())
    assert len(records) == 1 and "train_loss" not in records[0]
    # a file of a run: the record names the checkpoint and the epoch it was saved after
    assert records[0]["checkpoint"] == "best" and records[0]["epoch"] == best["epoch"]
    # the receptive field of this model fits chop's 10-pixel overlap: same numbers as whole images
    assert records[0]["metrics"]["Set5_x2"]["psnr"] == pytest.approx(best["metrics"]["Set5_x2"]["psnr"],
                                                                     abs=1e-3)
    psnr, ssim = _set5_x2_metrics(tmp_path / "experiment" / "tiny_test" / "results" / "Set5_x2", dir_data)
    assert records[0]["metrics"]["Set5_x2"] == pytest.approx({"psnr": psnr, "ssim": ssim}, rel=1e-9)
    saved = sorted((tmp_path / "experiment" / "tiny_test" / "results" / "Set5_x2").glob("*_SR.png"))
    assert [p.name for p in saved] == ["baby_SR.png", "bird_SR.png", "butterfly_SR.png", "head_SR.png",
                                       "woman_SR.png"]
    height, width = iio.imread(dir_data / "benchmark" / "Set5" / "HR" / "woman.png").shape[:2]
    assert iio.imread(saved[-1]).shape == (height // 2 * 2, width // 2 * 2, 3)  # HR cropped to LR size x 2


def test_user_errors_are_one_line_and_exit_2(dir_data, tmp_path, capsys):
    assert _run(dir_data, tmp_path, "--test_only", "--data_test", "B100", "--model", "Bicubic") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "benchmark/B100" in err
    assert _run(dir_data, tmp_path, "--test_only", "--model", "EDSR_Basis", "--basis_size", "5") == 2
    assert "--basis_size 5" in capsys.readouterr().err


def test_summary_reports_block_compression_against_the_baseline(capsys):
    argv = ["--model", "EDSR_Basis", "--scale", "4", "--n_resblocks", "2", "--n_feats", "16",
            "--basis_size", "16", "--n_basis", "4", "--summary"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["baseline"] == "EDSR"
    assert info["block_weight_params"] == 2 * (4 * 16 * 9 + 16 * 4)
    assert info["baseline_block_weight_params"] == 2 * 16 * 16 * 9
