"""``--data_test Demo --dir_demo FOLDER --test_only``: one saved SR image per input, no metrics."""

import json

import imageio.v3 as iio
import numpy as np
import torch

from super_resolution.data.demo import DemoImages
from super_resolution.main import main
from super_resolution.model import build_model
from super_resolution.option import parse_args


def _demo(tmp_path, folder, *options):
    return main(["--model", "Bicubic", "--scale", "2", "--data_test", "Demo", "--dir_demo", str(folder),
                 "--cpu", "--n_threads", "0", "--dir_save", str(tmp_path / "exp"), "--save", "demo",
                 *options])


def test_demo_writes_one_sr_image_per_input(tmp_path, demo_folder):
    assert _demo(tmp_path, demo_folder, "--test_only", "--save_results") == 0
    out = tmp_path / "exp" / "demo" / "results" / "Demo_x2"
    assert sorted(p.name for p in out.iterdir()) == ["a_SR.png", "alpha_SR.png", "grey_SR.png"]
    assert iio.imread(out / "a_SR.png").shape == (20, 28, 3)
    assert iio.imread(out / "grey_SR.png").shape == (18, 14, 3)  # grey input replicated to RGB
    # the saved image is the model's output, rounded to 8 bits
    lr = torch.from_numpy(iio.imread(demo_folder / "a.png")).permute(2, 0, 1)[None].float()
    model = build_model(parse_args(["--model", "Bicubic", "--scale", "2", "--test_only"]))
    expected = model(lr)[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(iio.imread(out / "a_SR.png"), expected)
    [record] = json.loads((tmp_path / "exp" / "demo" / "results.json").read_text())
    assert record["metrics"] == {}  # no ground truth, nothing measured


def test_a_network_runs_on_the_demo_folder_too(tmp_path, demo_folder):
    model = ["--model", "EDSR", "--n_resblocks", "1", "--n_feats", "8", "--scale", "3"]
    torch.save(build_model(parse_args(model)).state_dict(), tmp_path / "weights.pt")
    argv = model + ["--data_test", "Demo", "--dir_demo", str(demo_folder), "--test_only", "--cpu",
                    "--n_threads", "0", "--pre_train", str(tmp_path / "weights.pt"),
                    "--dir_save", str(tmp_path / "exp"), "--save", "edsr_demo"]
    assert main(argv) == 0
    out = tmp_path / "exp" / "edsr_demo" / "results" / "Demo_x3"
    assert iio.imread(out / "alpha_SR.png").shape == (24, 24, 3)


def test_same_stems_are_kept_apart(tmp_path):
    for suffix in (".png", ".bmp"):
        iio.imwrite(tmp_path / f"x{suffix}", np.zeros((4, 4, 3), dtype=np.uint8))
    assert DemoImages(tmp_path, n_colors=3, rgb_range=255).names == ["x_bmp", "x_png"]


def test_an_empty_folder_or_training_is_a_one_line_error(tmp_path, demo_folder, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert _demo(tmp_path, empty, "--test_only") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--dir_demo {empty} holds no images" in err
    assert _demo(tmp_path, tmp_path / "missing", "--test_only") == 2
    assert "no such folder" in capsys.readouterr().err
    argv = ["--model", "EDSR", "--n_resblocks", "1", "--n_feats", "8", "--scale", "2",
            "--data_train", "Photos", "--data_test", "Demo", "--dir_demo", str(demo_folder), "--cpu",
            "--dir_save", str(tmp_path / "exp"), "--dir_data", str(tmp_path / "data"), "--n_train", "1",
            "--epochs", "1", "--test_every", "1", "--batch_size", "1", "--patch_size", "24"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data_test Demo" in err and "--test_only" in err
    assert not (tmp_path / "exp").exists()


def test_dir_demo_is_a_live_option(capsys):
    args = parse_args(["--dir_demo", "pictures"])
    assert args.dir_demo == "pictures" and "ignored" not in capsys.readouterr().err
    assert parse_args([]).dir_demo == "../test"  # the official default
