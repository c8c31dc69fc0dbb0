"""SR datasets: folder layouts, bicubic LR generation, test crops, training patches (architectures.md 5.4)."""

from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from bicubic_pytorch import core

from filter_basis.errors import DataError, OptionError
from super_resolution import data
from super_resolution.data import bicubic
from super_resolution.data.patches import parse_noise


def _args(dir_data, **overrides):
    values = dict(dir_data=str(dir_data), data_train="DIV2K", data_test="Set5", scale=[2], patch_size=8,
                  n_colors=3, rgb_range=255, n_train=800, n_val=100, offset_val=800, test_every=1000,
                  batch_size=16, noise=".", ext="sep")
    values.update(overrides)
    return SimpleNamespace(**values)


def _random_image(rng, h, w, channels=3):
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _benchmark(root, name, images):
    hr_dir = root / "benchmark" / name / "HR"
    hr_dir.mkdir(parents=True)
    for stem, image in images.items():
        iio.imwrite(hr_dir / f"{stem}.png", image)
    return hr_dir


@pytest.mark.parametrize("layout", ["", "super_resolution"])
def test_benchmark_lr_is_made_by_matlab_bicubic_and_cached_in_both_layouts(tmp_path, rng, layout):
    hr = _random_image(rng, 31, 29)
    hr_dir = _benchmark(tmp_path / layout, "Set5", {"baby": hr})
    sets = data.build_test_sets(_args(tmp_path, scale=[2]))
    lr_t, hr_t, name = sets["Set5"][0]
    expected = core.imresize(torch.from_numpy(hr[:30, :28].transpose(2, 0, 1).copy())[None], scale=0.5)[0]
    assert name == "baby" and sets["Set5"].benchmark
    assert torch.equal(lr_t, expected.float())
    assert torch.equal(hr_t, torch.from_numpy(hr[:30, :28].transpose(2, 0, 1).copy()).float())
    cached = hr_dir.parent / "LR_bicubic" / "X2" / "babyx2.png"
    assert cached.is_file() and np.array_equal(iio.imread(cached), expected.numpy().transpose(1, 2, 0))
    assert torch.equal(data.build_test_sets(_args(tmp_path, scale=[2]))["Set5"][0][0], lr_t)  # from the file


def test_existing_lr_files_are_used_and_hr_is_cropped_to_lr_times_scale(tmp_path, rng):
    hr = _random_image(rng, 40, 41)
    lr = _random_image(rng, 13, 13)
    hr_dir = _benchmark(tmp_path, "Set14", {"comic": hr})
    (hr_dir.parent / "LR_bicubic" / "X3").mkdir(parents=True)
    iio.imwrite(hr_dir.parent / "LR_bicubic" / "X3" / "comicx3.png", lr)
    lr_t, hr_t, _ = data.build_test_sets(_args(tmp_path, data_test="Set14", scale=[3]))["Set14"][0]
    assert torch.equal(lr_t, torch.from_numpy(lr.transpose(2, 0, 1).copy()).float())
    assert hr_t.shape == (3, 39, 39) and torch.equal(hr_t[0], torch.from_numpy(hr[:39, :39, 0]).float())


def test_grey_images_are_replicated_to_three_channels_and_rgb_becomes_y_with_one_colour(tmp_path, rng):
    _benchmark(tmp_path, "Set14", {"bridge": _random_image(rng, 24, 24, channels=1),
                                   "lenna": _random_image(rng, 24, 24)})
    grey_lr, grey_hr, _ = data.build_test_sets(_args(tmp_path, data_test="Set14"))["Set14"][0]
    assert grey_hr.shape == (3, 24, 24) and torch.equal(grey_hr[0], grey_hr[2])
    assert grey_lr.shape == (3, 12, 12)
    _, y, name = data.build_test_sets(_args(tmp_path, data_test="Set14", n_colors=1))["Set14"][1]
    rgb = iio.imread(tmp_path / "benchmark" / "Set14" / "HR" / "lenna.png").astype(np.float64)
    expected = 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255
    assert name == "lenna" and y.shape == (1, 24, 24)
    assert torch.allclose(y[0], torch.from_numpy(expected).float())


def test_rgb_range_scales_the_tensors(tmp_path, rng):
    _benchmark(tmp_path, "Set5", {"bird": _random_image(rng, 16, 16)})
    lr255, hr255, _ = data.build_test_sets(_args(tmp_path))["Set5"][0]
    lr1, hr1, _ = data.build_test_sets(_args(tmp_path, rgb_range=1))["Set5"][0]
    assert torch.allclose(hr1 * 255, hr255) and torch.allclose(lr1 * 255, lr255)


def test_read_only_data_keeps_the_lr_images_in_memory(tmp_path, rng, monkeypatch):
    hr = _random_image(rng, 20, 20)
    hr_dir = _benchmark(tmp_path, "Set5", {"head": hr})

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(bicubic.tempfile, "mkdtemp", refuse)
    lr, _, _ = data.build_test_sets(_args(tmp_path))["Set5"][0]
    assert lr.shape == (3, 10, 10) and not (hr_dir.parent / "LR_bicubic" / "X2").exists()
    assert torch.equal(lr, torch.from_numpy(bicubic.downscale(hr, 2).transpose(2, 0, 1).copy()).float())


def test_missing_folders_name_the_path_and_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"benchmark/Urban100.*super_resolution/benchmark/Urban100.*HR"):
        data.build_test_sets(_args(tmp_path, data_test="Urban100"))
    with pytest.raises(DataError, match=r"DIV2K/DIV2K_train_HR"):
        data.build_train_set(_args(tmp_path))
    with pytest.raises(DataError, match=r"GT_sub"):
        data.build_train_set(_args(tmp_path, data_train="DIV2KSUB"))
    (tmp_path / "benchmark" / "Set5" / "HR").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no HR images in .*Set5/HR"):
        data.build_test_sets(_args(tmp_path))


def test_unknown_names_and_bad_options_are_rejected(tmp_path):
    with pytest.raises(Exception, match=r"unknown test set --data_test 'Set6'; known: .*Set5"):
        data.build_test_sets(_args(tmp_path, data_test="Set6"))
    with pytest.raises(OptionError, match="--ext 'png'"):
        data.build_test_sets(_args(tmp_path, ext="png"))
    for bad in ("G", "X5", "G-1", "10"):
        with pytest.raises(OptionError, match="--noise"):
            parse_noise(bad)


def _div2k(root, split, indices, images, scale=2, with_lr=True):
    hr_dir = root / "DIV2K" / f"DIV2K_{split}_HR"
    lr_dir = root / "DIV2K" / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
    hr_dir.mkdir(parents=True, exist_ok=True)
    lr_dir.mkdir(parents=True, exist_ok=True)
    for i, lr in zip(indices, images):
        iio.imwrite(lr_dir / f"{i:04d}x{scale}.png", lr)
        iio.imwrite(hr_dir / f"{i:04d}.png", np.kron(lr, np.ones((scale, scale, 1), dtype=np.uint8)))


def test_div2k_trains_on_the_train_folder_and_tests_on_valid_801_onwards(tmp_path, rng):
    train = [_random_image(rng, 12, 12) for _ in range(3)]
    valid = [_random_image(rng, 10, 10) for _ in range(2)]
    _div2k(tmp_path, "train", [1, 2, 3], train)
    _div2k(tmp_path, "valid", [801, 802], valid)
    args = _args(tmp_path, n_train=3, n_val=2, data_test="DIV2K")
    train_set = data.build_train_set(args)
    assert [p[0] for p in train_set.pairs] == ["0001", "0002", "0003"]
    test_set = data.build_test_sets(args)["DIV2K"]
    assert not test_set.benchmark and [test_set[i][2] for i in range(2)] == ["0801", "0802"]
    with pytest.raises(DataError, match=r"0004\.png is missing"):
        data.build_train_set(_args(tmp_path, n_train=4))


def test_training_patches_are_aligned_and_sized_with_flips_and_transposes(tmp_path, rng):
    """HR is LR upsampled by pixel repetition, so every aligned patch satisfies hr[::s, ::s] == lr."""
    lrs = [_random_image(rng, 14, 11) for _ in range(2)]
    _div2k(tmp_path, "train", [1, 2], lrs, scale=3)
    args = _args(tmp_path, n_train=2, scale=[3], patch_size=12, batch_size=1, test_every=6)
    train_set = data.build_train_set(args)
    assert len(train_set) == 2 * 3  # n_train x round(test_every / (n_train / batch_size))
    torch.manual_seed(0)
    oriented = set()
    for i in range(len(train_set)):
        lr, hr = train_set[i]
        assert lr.shape == (3, 4, 4) and hr.shape == (3, 12, 12)
        assert torch.equal(hr[:, ::3, ::3], lr)
        source = torch.from_numpy(lrs[i % 2].transpose(2, 0, 1).copy()).float()
        windows = source.unfold(1, 4, 1).unfold(2, 4, 1).permute(1, 2, 0, 3, 4).reshape(-1, 3, 4, 4)
        matches = [k for k in range(8) if any(torch.equal(w, _orient(lr, k)) for w in windows)]
        assert matches, "the LR patch is a flipped/transposed window of the LR image"
        oriented.add(matches[0])
    assert len(oriented) > 1
    torch.manual_seed(5)
    first = train_set[0][0]
    torch.manual_seed(5)
    assert torch.equal(first, data.build_train_set(args)[0][0])  # seeded: reproducible


def test_training_patches_with_one_colour_are_the_y_channel_of_aligned_rgb_patches(tmp_path, rng):
    lr_image = _random_image(rng, 10, 9)
    _div2k(tmp_path, "train", [1], [lr_image], scale=2)
    train_set = data.build_train_set(_args(tmp_path, n_train=1, n_colors=1, patch_size=8, test_every=1))
    torch.manual_seed(0)
    lr, hr = train_set[0]
    assert lr.shape == (1, 4, 4) and hr.shape == (1, 8, 8) and torch.equal(hr[:, ::2, ::2], lr)
    rgb = lr_image.astype(np.float64)
    y = torch.from_numpy(16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255)
    windows = y.float().unfold(0, 4, 1).unfold(1, 4, 1).reshape(-1, 1, 4, 4)
    assert any(torch.equal(w, _orient(lr, k)) for w in windows for k in range(8))


def _orient(patch, k):
    """The k-th of the 8 flips/transposes of a patch (to undo augmentation in the test)."""
    if k & 4:
        patch = patch.transpose(-2, -1)
    if k & 2:
        patch = patch.flip(-2)
    if k & 1:
        patch = patch.flip(-1)
    return patch


def test_noise_is_added_to_the_training_lr_only(tmp_path, rng):
    lr_image = np.full((16, 16, 3), 128, dtype=np.uint8)
    _div2k(tmp_path, "train", [1], [lr_image])
    torch.manual_seed(0)
    lr, hr = data.build_train_set(_args(tmp_path, n_train=1, patch_size=32, noise="G10", test_every=1))[0]
    assert torch.equal(hr, torch.full_like(hr, 128.0))
    assert lr.std() > 5 and torch.equal(lr, lr.round()) and lr.min() >= 0 and lr.max() <= 255
    shot = parse_noise("S5")(lr_image)
    assert shot.dtype == np.uint8 and not np.array_equal(shot, lr_image)
    assert abs(shot.astype(float).mean() - 128) < 1.0  # de-meaned noise added, not the noisy image


def test_div2ksub_pairs_sub_images_by_sorted_order(tmp_path, rng):
    hr_dir = tmp_path / "super_resolution" / "DIV2K" / "GT_sub"
    lr_dir = hr_dir.parent / "GT_sub_bicLRx4"
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir()
    for name in ("0001_s002", "0001_s001", "0002_s001"):
        lr = _random_image(rng, 6, 6)
        iio.imwrite(lr_dir / f"{name}.png", lr)
        iio.imwrite(hr_dir / f"{name}.png", np.kron(lr, np.ones((4, 4, 1), dtype=np.uint8)))
    train_set = data.build_train_set(_args(tmp_path, data_train="DIV2KSUB", n_train=2, scale=[4],
                                           patch_size=16, batch_size=2, test_every=1))
    assert [p[0] for p in train_set.pairs] == ["0001_s001", "0001_s002"]
    assert all(p[2].name == p[1].name for p in train_set.pairs)
    with pytest.raises(DataError, match="fewer than --n_train 4"):
        data.build_train_set(_args(tmp_path, data_train="DIV2KSUB", n_train=4, scale=[4]))


def test_the_shipped_greyscale_bridge_of_set14_becomes_three_channels(tmp_path, repo_root):
    shipped = repo_root / "datasets" / "benchmark" / "Set14" / "HR" / "bridge.png"
    assert iio.imread(shipped).ndim == 2
    hr_dir = tmp_path / "benchmark" / "Set14" / "HR"
    hr_dir.mkdir(parents=True)
    (hr_dir / "bridge.png").symlink_to(shipped)
    lr, hr, name = data.build_test_sets(_args(tmp_path, data_test="Set14", scale=[4]))["Set14"][0]
    assert name == "bridge" and hr.shape == (3, 512, 512) and lr.shape == (3, 128, 128)
    assert torch.equal(hr[0], hr[1]) and torch.equal(lr[1], lr[2])


def test_ext_sep_decodes_training_images_once_into_npy_files(tmp_path, rng):
    _div2k(tmp_path, "train", [1], [_random_image(rng, 8, 8)])
    hr_png = tmp_path / "DIV2K" / "DIV2K_train_HR" / "0001.png"
    lr_png = tmp_path / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png"
    options = dict(n_train=1, patch_size=16, test_every=1, batch_size=1)
    data.build_train_set(_args(tmp_path, ext="img", **options))
    assert not hr_png.with_suffix(".npy").exists()
    data.build_train_set(_args(tmp_path, ext="sep", **options))
    assert np.array_equal(np.load(hr_png.with_suffix(".npy")), iio.imread(hr_png))
    np.save(lr_png.with_suffix(".npy"), np.zeros((8, 8, 3), dtype=np.uint8))  # a stale cache is used...
    assert data.build_train_set(_args(tmp_path, ext="sep", **options))[0][0].max() == 0
    refreshed = data.build_train_set(_args(tmp_path, ext="sep_reset", **options))  # ...until reset
    assert np.array_equal(np.load(lr_png.with_suffix(".npy")), iio.imread(lr_png))
    assert refreshed[0][0].max() > 0
