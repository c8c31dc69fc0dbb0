"""SR datasets: folder layouts, bicubic LR generation, test crops, training patches
(docs/official-code.md#sr-data)."""

import errno
import os
import stat
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
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(bicubic, "make_temp_dir", refuse)
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


def _div2k_sub(root, hr_names, lr_names, scale=4, lr_size=6, hr_size=None):
    """A DIV2KSUB folder pair (official layout): HR = LR upsampled by pixel repetition unless ``hr_size``."""
    rng = np.random.default_rng(1)
    hr_dir = root / "super_resolution" / "DIV2K" / "GT_sub"
    lr_dir = hr_dir.parent / f"GT_sub_bicLRx{scale}"
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir()
    for name in lr_names:
        iio.imwrite(lr_dir / f"{name}.png", _random_image(rng, lr_size, lr_size))
    for name in hr_names:
        size = hr_size or lr_size * scale
        iio.imwrite(hr_dir / f"{name}.png", _random_image(rng, size, size))
    return hr_dir, lr_dir


def _div2k_sub_args(root, n_train, scale=4):
    return _args(root, data_train="DIV2KSUB", n_train=n_train, scale=[scale], patch_size=4 * scale,
                 batch_size=2, test_every=1)


@pytest.mark.parametrize("suffix", ["", "x4"])
def test_div2ksub_pairs_sub_images_by_name_with_or_without_the_scale_suffix(tmp_path, suffix):
    names = ["0001_s002", "0001_s001", "0002_s001"]
    _div2k_sub(tmp_path, names, [n + suffix for n in reversed(names)])
    train_set = data.build_train_set(_div2k_sub_args(tmp_path, n_train=2))
    assert [p[0] for p in train_set.pairs] == ["0001_s001", "0001_s002"]
    assert [p[2].name for p in train_set.pairs] == [f"0001_s001{suffix}.png", f"0001_s002{suffix}.png"]
    with pytest.raises(DataError, match="fewer than --n_train 4"):
        data.build_train_set(_div2k_sub_args(tmp_path, n_train=4))


def test_div2ksub_refuses_sub_images_whose_names_do_not_match(tmp_path):
    """Four HR and four LR files: equal counts, but not one name in common (they trained silently)."""
    _div2k_sub(tmp_path, [f"0000_s00{i}" for i in range(1, 5)], [f"0007_s00{i}" for i in range(6, 10)])
    with pytest.raises(DataError, match=r"GT_sub/0000_s001\.png has no single LR partner .*GT_sub_bicLRx4: "
                                        r"expected 0000_s001<ext> or 0000_s001x4<ext>, found neither"):
        data.build_train_set(_div2k_sub_args(tmp_path, n_train=4))


def test_div2ksub_refuses_an_lr_image_without_hr_and_a_doubled_partner(tmp_path):
    hr_dir, lr_dir = _div2k_sub(tmp_path, ["a", "b"], ["a", "b", "c"])
    with pytest.raises(DataError, match=r"GT_sub_bicLRx4/c\.png has no HR partner \(1 unpaired"):
        data.build_train_set(_div2k_sub_args(tmp_path, n_train=1))  # the whole folder is checked
    (lr_dir / "c.png").rename(lr_dir / "ax4.png")
    with pytest.raises(DataError, match=r"GT_sub/a\.png has no single LR partner .*found both a\.png and "
                                        r"ax4\.png"):
        data.build_train_set(_div2k_sub_args(tmp_path, n_train=1))


def test_div2ksub_refuses_a_pair_whose_hr_is_smaller_than_lr_times_scale(tmp_path):
    _div2k_sub(tmp_path, ["a"], ["a"], lr_size=6, hr_size=20)  # 20 < 6 x 4
    with pytest.raises(DataError, match=r"HR image .*GT_sub/a\.png \(20x20\) is smaller than its LR image "
                                        r".*GT_sub_bicLRx4/a\.png \(6x6\) x4 = 24x24"):
        data.build_train_set(_div2k_sub_args(tmp_path, n_train=1))


def test_div2k_and_benchmark_pairs_whose_hr_is_smaller_than_lr_times_scale_are_refused(tmp_path, rng):
    """Refused when the data set is built, before any patch or test image is cut from it."""
    _div2k(tmp_path, "train", [1], [_random_image(rng, 8, 8)])
    iio.imwrite(tmp_path / "DIV2K" / "DIV2K_train_HR" / "0001.png", _random_image(rng, 16, 15))
    with pytest.raises(DataError, match=r"DIV2K_train_HR/0001\.png \(16x15\) is smaller than its LR image "
                                        r".*0001x2\.png \(8x8\) x2 = 16x16"):
        data.build_train_set(_args(tmp_path, n_train=1))
    hr_dir = _benchmark(tmp_path, "Set14", {"comic": _random_image(rng, 40, 41)})
    (hr_dir.parent / "LR_bicubic" / "X3").mkdir(parents=True)
    iio.imwrite(hr_dir.parent / "LR_bicubic" / "X3" / "comicx3.png", _random_image(rng, 14, 13))
    with pytest.raises(DataError, match=r"comic\.png \(40x41\) is smaller than its LR image .*\(14x13\) x3"):
        data.build_test_sets(_args(tmp_path, data_test="Set14", scale=[3]))


def test_benchmark_hr_images_sharing_a_name_are_refused_naming_both(tmp_path, rng):
    """a.png and a.bmp would share the LR file ax2.png (one overwriting the other): refused, as DIV2KSUB."""
    hr_dir = _benchmark(tmp_path, "Set5", {"a": _random_image(rng, 16, 16), "b": _random_image(rng, 16, 16)})
    iio.imwrite(hr_dir / "a.bmp", _random_image(rng, 16, 16))
    with pytest.raises(DataError, match=r"Set5/HR/a\.bmp and a\.png have the same name"):
        data.build_test_sets(_args(tmp_path, data_test="Set5", scale=[2]))
    assert not (hr_dir.parent / "LR_bicubic").exists()  # refused before any LR image was made


def test_the_shipped_greyscale_bridge_of_set14_becomes_three_channels(tmp_path, repo_root):
    shipped = repo_root / "datasets" / "benchmark" / "Set14" / "HR" / "bridge.png"
    assert iio.imread(shipped).ndim == 2
    hr_dir = tmp_path / "benchmark" / "Set14" / "HR"
    hr_dir.mkdir(parents=True)
    (hr_dir / "bridge.png").symlink_to(shipped)
    lr, hr, name = data.build_test_sets(_args(tmp_path, data_test="Set14", scale=[4]))["Set14"][0]
    assert name == "bridge" and hr.shape == (3, 512, 512) and lr.shape == (3, 128, 128)
    assert torch.equal(hr[0], hr[1]) and torch.equal(lr[1], lr[2])


def _sep_train_set(root, ext="sep"):
    return data.build_train_set(_args(root, ext=ext, n_train=1, patch_size=16, test_every=1, batch_size=1))


def test_ext_sep_decodes_training_images_once_into_npy_files(tmp_path, rng):
    _div2k(tmp_path, "train", [1], [_random_image(rng, 8, 8)])
    hr_png = tmp_path / "DIV2K" / "DIV2K_train_HR" / "0001.png"
    lr_png = tmp_path / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png"
    _sep_train_set(tmp_path, ext="img")
    assert not hr_png.with_suffix(".npy").exists()
    _sep_train_set(tmp_path)
    assert np.array_equal(np.load(hr_png.with_suffix(".npy")), iio.imread(hr_png))
    assert np.array_equal(np.load(lr_png.with_suffix(".npy")), iio.imread(lr_png))
    inode = lr_png.with_suffix(".npy").stat().st_ino
    _sep_train_set(tmp_path)
    assert lr_png.with_suffix(".npy").stat().st_ino == inode  # current: used as it is
    _sep_train_set(tmp_path, ext="sep_reset")
    assert lr_png.with_suffix(".npy").stat().st_ino != inode  # sep_reset rewrites it


def test_a_stale_npy_cache_is_rebuilt_when_its_image_changes_size_or_mtime(tmp_path, rng):
    _div2k(tmp_path, "train", [1], [_random_image(rng, 8, 8)])
    lr_png = tmp_path / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png"
    _sep_train_set(tmp_path)
    before = lr_png.stat()
    iio.imwrite(lr_png, np.full((8, 8, 3), 7, dtype=np.uint8))  # a new image, smaller file, same mtime
    os.utime(lr_png, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert lr_png.stat().st_size != before.st_size
    lr, _ = _sep_train_set(tmp_path)[0]
    assert torch.equal(lr, torch.full_like(lr, 7.0))  # the new content, not the cache of the old one
    assert np.array_equal(np.load(lr_png.with_suffix(".npy")), iio.imread(lr_png))
    inode = lr_png.with_suffix(".npy").stat().st_ino
    os.utime(lr_png, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # same size, touched
    _sep_train_set(tmp_path)
    assert lr_png.with_suffix(".npy").stat().st_ino != inode


def test_a_read_only_folder_decodes_on_every_use_and_says_so(tmp_path, rng, monkeypatch, caplog):
    from super_resolution.data import decoded_cache

    _div2k(tmp_path, "train", [1], [_random_image(rng, 8, 8)])

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(decoded_cache, "write_atomic", read_only)
    train_set = _sep_train_set(tmp_path)
    assert train_set.read is not decoded_cache.load_decoded and train_set[0][0].shape == (3, 8, 8)
    assert "decoding the images on every use" in caplog.text


@pytest.mark.parametrize("writer", ["npy cache", "bicubic LR"])
def test_other_write_failures_of_derived_files_are_reported_not_hidden(tmp_path, rng, monkeypatch, writer):
    from super_resolution.data import decoded_cache

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if writer == "npy cache":
        _div2k(tmp_path, "train", [1], [_random_image(rng, 8, 8)])
        monkeypatch.setattr(decoded_cache, "write_atomic", disk_full)
        with pytest.raises(DataError, match=r"cannot write the decoded training images .*No space left"):
            _sep_train_set(tmp_path)
    else:
        _benchmark(tmp_path, "Set5", {"head": _random_image(rng, 20, 20)})
        monkeypatch.setattr(bicubic, "write_atomic", disk_full)
        with pytest.raises(DataError, match=r"cannot write the bicubic LR images to .*X2: .*No space left"):
            data.build_test_sets(_args(tmp_path))
        assert not (tmp_path / "benchmark" / "Set5" / "LR_bicubic" / "X2").exists()


def test_generated_lr_images_are_remade_when_their_hr_image_changes_or_is_added(tmp_path, rng):
    hr_dir = _benchmark(tmp_path, "Set5", {"baby": _random_image(rng, 20, 20)})
    lr_file = hr_dir.parent / "LR_bicubic" / "X2" / "babyx2.png"
    data.build_test_sets(_args(tmp_path))
    new_hr = np.full((20, 22, 3), 200, dtype=np.uint8)
    before = (hr_dir / "baby.png").stat()
    iio.imwrite(hr_dir / "baby.png", new_hr)
    os.utime(hr_dir / "baby.png", ns=(before.st_atime_ns, before.st_mtime_ns))  # only the size tells
    iio.imwrite(hr_dir / "bird.png", _random_image(rng, 12, 12))
    test_set = data.build_test_sets(_args(tmp_path))["Set5"]
    expected = bicubic.downscale(new_hr, 2)
    assert np.array_equal(iio.imread(lr_file), expected)
    assert torch.equal(test_set[0][0], torch.from_numpy(expected.transpose(2, 0, 1).copy()).float())
    assert (lr_file.parent / "birdx2.png").is_file() and test_set[1][0].shape == (3, 6, 6)


def test_supplied_lr_images_are_only_read_even_when_hr_changes(tmp_path, rng):
    hr_dir = _benchmark(tmp_path, "Set14", {"comic": _random_image(rng, 26, 26)})
    lr_dir = hr_dir.parent / "LR_bicubic" / "X2"
    lr_dir.mkdir(parents=True)
    iio.imwrite(lr_dir / "comicx2.png", _random_image(rng, 13, 13))
    supplied = (lr_dir / "comicx2.png").read_bytes()
    iio.imwrite(hr_dir / "comic.png", _random_image(rng, 26, 27))
    data.build_test_sets(_args(tmp_path, data_test="Set14"))
    assert (lr_dir / "comicx2.png").read_bytes() == supplied and sorted(os.listdir(lr_dir)) == ["comicx2.png"]


def test_generated_folders_and_files_follow_the_umask(tmp_path, rng):
    _benchmark(tmp_path, "Set5", {"head": _random_image(rng, 20, 20)})
    _div2k(tmp_path, "train", [1], [_random_image(rng, 8, 8)])
    previous = os.umask(0o022)
    try:
        data.build_test_sets(_args(tmp_path))
        _sep_train_set(tmp_path)
    finally:
        os.umask(previous)
    lr_dir = tmp_path / "benchmark" / "Set5" / "LR_bicubic" / "X2"
    assert stat.S_IMODE(lr_dir.stat().st_mode) == 0o755
    made = [lr_dir / "headx2.png", lr_dir / bicubic.BICUBIC_RECORD,
            tmp_path / "DIV2K" / "DIV2K_train_HR" / "0001.npy"]
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in made] == [oct(0o644)] * 3


def test_a_damaged_image_is_one_line_but_out_of_memory_is_not_relabelled(tmp_path, monkeypatch):
    from super_resolution.data import images

    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"cannot read image .*damaged\.png"):
        images.read_image(damaged)

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(images.iio, "imread", out_of_memory)
    with pytest.raises(MemoryError):
        images.read_image(damaged)
