"""--patch_size that is not a multiple of --scale (an odd HR patch at x2): a working run with a note; one
smaller than the scale: a one-line refusal."""

import json

import pytest

from super_resolution import data
from super_resolution.main import main
from super_resolution.option import parse_args

pytestmark = pytest.mark.usefixtures("one_thread")

PHOTOS = ["--model", "EDSR", "--n_resblocks", "1", "--n_feats", "8", "--scale", "2", "--cpu", "--n_threads",
          "0", "--data_train", "Photos", "--data_test", "Photos", "--batch_size", "4", "--test_every", "2",
          "--epochs", "1", "--print_every", "1000"]


def test_an_odd_hr_patch_at_x2_trains_on_the_patch_cut_to_the_scale_and_says_so(tmp_path, capsys):
    argv = PHOTOS + ["--patch_size", "7", "--dir_data", str(tmp_path / "data"), "--dir_save", str(tmp_path),
                     "--save", "odd"]
    assert main(argv) == 0
    assert capsys.readouterr().err.splitlines() == [
        "note: --patch_size 7 is not a multiple of --scale 2: training uses 6x6 HR patches (3x3 LR)"]
    assert [r["epoch"] for r in json.loads((tmp_path / "odd" / "results.json").read_text())] == [1]
    lr, hr = data.build_train_set(parse_args(argv))[0]
    assert tuple(lr.shape) == (3, 3, 3) and tuple(hr.shape) == (3, 6, 6)


def test_a_patch_smaller_than_the_scale_is_refused_in_one_line(tmp_path, capsys):
    argv = PHOTOS + ["--patch_size", "1", "--dir_data", str(tmp_path / "data"), "--dir_save", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --patch_size 1 is smaller than --scale 2: the LR patch would be empty; use a multiple of the "
        "scale, e.g. 96"]
    assert list(tmp_path.iterdir()) == []
