"""Photos: the bundled photographs as an SR data set (fixed split and pixels, layout, LR = bicubic of HR)."""

import os
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest

from filter_basis.errors import DataError, OptionError
from super_resolution import data
from super_resolution.data import photos
from super_resolution.data.bicubic import downscale
from super_resolution.main import main
from super_resolution.option import parse_args

# Fixed once from the installed files: (HR shape, top-left pixel, sum of all pixels) per image.
HR_FACTS = {
    "astronaut": ((504, 504, 3), [154, 147, 151], 88391714),
    "hubble_deep_field": ((864, 996, 3), [15, 7, 4], 49499273),
    "ihc": ((504, 504, 3), [156, 118, 81], 121269938),
    "motorcycle_left": ((492, 732, 3), [127, 79, 53], 116149331),
    "motorcycle_right": ((492, 732, 3), [102, 48, 24], 112755417),
    "retina": ((1404, 1404, 3), [0, 0, 0], 535691325),
    "rocket": ((420, 636, 3), [17, 33, 58], 52329595),
    "china": ((420, 636, 3), [174, 201, 231], 116397615),
    "chelsea": ((300, 444, 3), [143, 120, 104], 45998635),
    "coffee": ((396, 600, 3), [21, 13, 8], 70425416),
    "flower": ((420, 636, 3), [2, 19, 13], 49659265),
    "grace_hopper": ((600, 504, 3), [21, 24, 77], 72592903),
}
TRAIN = ["astronaut", "hubble_deep_field", "ihc", "motorcycle_left", "motorcycle_right", "retina", "rocket",
         "china"]
TEST = ["chelsea", "coffee", "flower", "grace_hopper"]


def _args(dir_data, **overrides):
    values = dict(dir_data=str(dir_data), data_train="Photos", data_test="Photos", scale=[2], patch_size=24,
                  n_colors=3, rgb_range=255, n_train=parse_args([]).n_train, test_every=1000, batch_size=16,
                  noise=".", ext="sep")
    return SimpleNamespace(**{**values, **overrides})


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    """The real test split at x2, made once for this module."""
    dir_data = tmp_path_factory.mktemp("data")
    return dir_data, data.build_test_sets(_args(dir_data))["Photos"]


def test_the_split_is_fixed():
    assert photos.SPLITS == {"train": TRAIN, "test": TEST}
    assert sorted(photos.SOURCES) == sorted(TRAIN + TEST)


def test_hr_images_are_the_fixed_ones():
    for name, (shape, first, total) in HR_FACTS.items():
        hr = photos.hr_image(name)
        assert hr.dtype == np.uint8 and hr.shape == shape and shape[0] % 12 == 0 and shape[1] % 12 == 0
        assert hr[0, 0].tolist() == first and int(hr.sum(dtype=np.int64)) == total, name


def test_test_split_layout_and_lr_is_the_bicubic_of_hr(test_split):
    dir_data, test_set = test_split
    root = dir_data / "Photos" / "test"
    assert sorted(p.name for p in (root / "HR").iterdir()) == sorted(f"{n}.png" for n in TEST)
    # the images, beside the hidden record of the sources they were made from
    lr_names = sorted(p.name for p in (root / "LR_bicubic" / "X2").iterdir() if not p.name.startswith("."))
    assert lr_names == sorted(f"{n}x2.png" for n in TEST)
    assert len(test_set) == 4 and test_set.benchmark  # evaluated like Set5: Y PSNR, shave = scale
    for index, name in enumerate(TEST):
        hr = iio.imread(root / "HR" / f"{name}.png")
        assert np.array_equal(hr, photos.hr_image(name))
        lr = iio.imread(root / "LR_bicubic" / "X2" / f"{name}x2.png")
        assert np.array_equal(lr, downscale(hr, 2))
        lr_t, hr_t, item_name = test_set[index]
        assert item_name == name and tuple(hr_t.shape) == (3, *HR_FACTS[name][0][:2])
        assert tuple(lr_t.shape) == (3, hr.shape[0] // 2, hr.shape[1] // 2)


def test_the_split_is_made_once(test_split):
    dir_data, _ = test_split
    files = sorted((dir_data / "Photos" / "test").rglob("*.png"))
    stamps = [p.stat().st_mtime_ns for p in files]
    data.build_test_sets(_args(dir_data))
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert not [p for p in (dir_data / "Photos" / "test").iterdir() if p.name.startswith(".")]  # no staging


@pytest.fixture
def tiny_sources(tmp_path, monkeypatch):
    """Small stand-ins for the twelve source files (the third training image greyscale)."""
    rng = np.random.default_rng(0)
    sources = {}
    for i, name in enumerate(TRAIN + TEST):
        image = rng.integers(0, 256, (30 + i, 40) if name == "ihc" else (30 + i, 40, 3), dtype=np.uint8)
        path = tmp_path / "sources" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        iio.imwrite(path, image)
        sources[name] = lambda p=path: p
    monkeypatch.setattr(photos, "SOURCES", sources)
    return tmp_path / "sources"


def test_training_uses_all_eight_or_the_first_n(tiny_sources, tmp_path):
    train_set = data.build_train_set(_args(tmp_path / "data", test_every=8, batch_size=4))
    assert [pair[0] for pair in train_set.pairs] == TRAIN
    assert len(train_set) == 8 * 4  # epoch of about --test_every batches, as for DIV2K
    first = data.build_train_set(_args(tmp_path / "data", n_train=3))
    assert [pair[0] for pair in first.pairs] == TRAIN[:3]
    with pytest.raises(OptionError, match=r"--n_train 9 exceeds the 8 training images of Photos"):
        data.build_train_set(_args(tmp_path / "data", n_train=9))
    hr = iio.imread(tmp_path / "data" / "Photos" / "train" / "HR" / "ihc.png")
    assert hr.shape == (24, 36, 3) and np.array_equal(hr[..., 0], hr[..., 2])  # grey -> RGB, cut to 12k
    lr, hr_patch = train_set[0]
    assert tuple(lr.shape) == (3, 12, 12) and tuple(hr_patch.shape) == (3, 24, 24)


def test_a_read_only_data_folder_keeps_the_images_in_memory(tiny_sources, tmp_path, monkeypatch):
    monkeypatch.setattr(photos, "_write_hr", lambda names, hr_dir: False)
    pairs = photos.photos_pairs(tmp_path / "data", "test", 3)
    assert [p[0] for p in pairs] == TEST and not (tmp_path / "data" / "Photos" / "test" / "HR").exists()
    name, hr, lr = pairs[0]
    assert np.array_equal(lr, downscale(hr, 3)) and hr.shape[0] % 12 == 0


def test_a_missing_source_file_is_one_line_naming_it(tiny_sources, tmp_path, capsys):
    (tiny_sources / "coffee.png").unlink()
    argv = ["--model", "Bicubic", "--scale", "2", "--cpu", "--test_only", "--data_test", "Photos",
            "--dir_data", str(tmp_path / "data"), "--dir_save", str(tmp_path / "exp")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tiny_sources / "coffee.png") in err
    assert not (tmp_path / "data" / "Photos" / "test" / "HR").exists()  # nothing half-made left
    with pytest.raises(DataError, match="coffee.png"):
        photos.photos_pairs(tmp_path / "data", "test", 2)


def test_the_hr_folder_follows_the_umask(tmp_path):
    """The staging folder renamed into place gets 0777 & ~umask (not mkdtemp's 0700), like the LR folders."""
    previous = os.umask(0o027)
    try:
        photos.photos_pairs(tmp_path, "test", 2)
    finally:
        os.umask(previous)
    hr_dir = tmp_path / "Photos" / "test" / "HR"
    assert hr_dir.stat().st_mode & 0o777 == 0o750
    assert (hr_dir / "chelsea.png").stat().st_mode & 0o777 == 0o640
