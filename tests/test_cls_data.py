"""Classification data: Synthetic, the CIFAR folder readers, preprocessing, subsets, errors, losses."""

import argparse
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from filter_basis.errors import DataError, OptionError, UserError
from image_classification.data import build_test_sets, build_train_set, num_classes
from image_classification.data.transforms import cifar_transform
from image_classification.loss import LOSS_TYPES

# Reference facts (architectures.md 5.1), in 8-bit pixel units.
MEAN_255 = (125.3, 123.0, 113.9)
STD_255 = (63.0, 62.1, 66.7)


def data_args(**overrides):
    values = dict(data_train="Synthetic", data_test="Synthetic", dir_data="/nonexistent", download=False,
                  n_train=0, n_test=0, no_flip=False, crop=1)
    values.update(overrides)
    return argparse.Namespace(**values)


def write_cifar(root, folder, files, label_key, n_per_file, num_classes, seed=0):
    """A tiny folder in torchvision's CIFAR python format; returns {file: (data, labels)}."""
    rng = np.random.default_rng(seed)
    (root / folder).mkdir(parents=True)
    written = {}
    for name in files:
        data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, n_per_file).tolist()
        with open(root / folder / name, "wb") as f:
            pickle.dump({"data": data, label_key: labels, "filenames": []}, f)
        written[name] = (data, labels)
    return written


def unnormalise(x):
    mean = torch.tensor(MEAN_255).view(3, 1, 1) / 255
    std = torch.tensor(STD_255).view(3, 1, 1) / 255
    return (x * std + mean) * 255


# ---------------------------------------------------------------------------- Synthetic
def test_synthetic_is_deterministic_and_sized():
    args = data_args()
    a, b = build_train_set(args), build_train_set(args)
    assert len(a) == 1000 and len(build_test_sets(args)["Synthetic"]) == 200
    test_a, test_b = build_test_sets(args)["Synthetic"], build_test_sets(args)["Synthetic"]
    for i in (0, 17, 199):
        assert torch.equal(test_a[i][0], test_b[i][0]) and test_a[i][1] == test_b[i][1]
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images[:200], test_a.images)
    assert set(a.labels.tolist()) == set(range(10)) and num_classes("Synthetic") == 10


def test_synthetic_classes_are_learnable():
    """Images of one class share a pattern: the nearest class mean (from the training split) labels
    the test split far above chance."""
    args = data_args()
    train, test = build_train_set(args), build_test_sets(args)["Synthetic"]
    means = torch.stack([train.images[train.labels == c].float().mean(0) for c in range(10)])
    dist = torch.cdist(test.images.float().flatten(1), means.flatten(1))
    assert (dist.argmin(1) == test.labels).float().mean() > 0.9


def test_items_are_normalised_float_tensors_and_int_labels():
    image, label = build_test_sets(data_args())["Synthetic"][3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and isinstance(label, int)


# ---------------------------------------------------------------------------- preprocessing
def test_cifar_normalisation_constants():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, 16:] = 255
    out = cifar_transform(train=False)(image)
    for c in range(3):
        assert out[c, 0, 0].item() == pytest.approx(-MEAN_255[c] / STD_255[c], rel=1e-5)
        assert out[c, 0, 31].item() == pytest.approx((255 - MEAN_255[c]) / STD_255[c], rel=1e-5)


def _white_right_half_columns(no_flip, draws=24):
    """For an image black on the left half and white on the right, whether output columns 20..27 are
    white in each augmented draw (always, rows 4..27, without a flip: the crop shifts by at most 4)."""
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, 16:] = 255
    transform = cifar_transform(train=True, flip=not no_flip)
    torch.manual_seed(0)
    results = []
    for _ in range(draws):
        out = unnormalise(transform(image))
        assert out.shape == (3, 32, 32)
        values = out.round()
        assert bool(((values == 0) | (values == 255)).all()), "padding must be black in pixel space"
        results.append(bool((values[:, 4:28, 20:28] == 255).all()))
    return results


def test_training_augmentation_crops_with_black_padding_and_flips():
    assert not all(_white_right_half_columns(no_flip=False))


def test_no_flip_turns_the_flip_off():
    assert all(_white_right_half_columns(no_flip=True))


def test_training_crop_moves_the_image():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, 8:24, 8:24] = 255
    transform = cifar_transform(train=True, flip=False)
    torch.manual_seed(1)
    outs = {tuple(unnormalise(transform(image)).round()[0].nonzero().min(0).values.tolist())
            for _ in range(20)}
    assert len(outs) > 1 and all(4 <= r <= 12 and 4 <= c <= 12 for r, c in outs)


# ---------------------------------------------------------------------------- CIFAR folders
def test_cifar10_folder_is_read(tmp_path):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", 4, 10)
    args = data_args(data_train="CIFAR10", data_test="CIFAR10", dir_data=str(tmp_path))
    train, test = build_train_set(args), build_test_sets(args)["CIFAR10"]
    assert len(train) == 20 and len(test) == 4
    expected = torch.as_tensor(np.concatenate([written[f][0] for f in files[:5]])).view(-1, 3, 32, 32)
    assert torch.equal(train.images, expected)
    assert train.labels.tolist() == sum((written[f][1] for f in files[:5]), [])
    image, label = test[2]
    assert label == written["test_batch"][1][2]
    pixels = torch.as_tensor(written["test_batch"][0][2]).view(3, 32, 32).float()
    assert torch.allclose(unnormalise(image), pixels, atol=1e-3)


def test_cifar100_folder_is_read_with_fine_labels(tmp_path):
    written = write_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels", 6, 100)
    args = data_args(data_train="CIFAR100", data_test="CIFAR100", dir_data=str(tmp_path))
    assert build_train_set(args).labels.tolist() == written["train"][1]
    assert len(build_test_sets(args)["CIFAR100"]) == 6 and num_classes("CIFAR100") == 100


def test_missing_cifar_folder_is_a_data_error(tmp_path):
    args = data_args(data_train="CIFAR10", dir_data=str(tmp_path))
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        build_train_set(args)


def test_download_only_with_the_option(tmp_path, monkeypatch):
    """--download hands the folder to torchvision's downloader (replaced here: no network), then reads it."""
    import torchvision.datasets

    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, download))
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", 2, 10)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    with pytest.raises(DataError):
        build_train_set(data_args(data_train="CIFAR10", dir_data=str(tmp_path)))
    assert calls == []
    assert len(build_train_set(data_args(data_train="CIFAR10", dir_data=str(tmp_path), download=True))) == 10
    assert calls == [(str(tmp_path), True)]


def test_missing_cifar_file_is_named(tmp_path):
    write_cifar(tmp_path, "cifar-10-batches-py", ["data_batch_1", "test_batch"], "labels", 2, 10)
    with pytest.raises(DataError, match="data_batch_2"):
        build_train_set(data_args(data_train="CIFAR10", dir_data=str(tmp_path)))


def test_corrupt_cifar_file_is_a_data_error(tmp_path):
    write_cifar(tmp_path, "cifar-10-batches-py", ["test_batch"], "labels", 2, 10)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch"):
        build_test_sets(data_args(data_test="CIFAR10", dir_data=str(tmp_path)))


def write_imagenet(root, split="val", sizes=((260, 300), (300, 256))):
    """A tiny ImageFolder tree ``root/ILSVRC2012/<split>/<wnid>/x.JPEG``, one image per class."""
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    for label, (h, w) in enumerate(sizes):
        folder = root / "ILSVRC2012" / split / f"n0000000{label}"
        folder.mkdir(parents=True)
        iio.imwrite(folder / "x.JPEG", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), extension=".jpeg")


def test_imagenet_folder_is_read_at_224(tmp_path):
    write_imagenet(tmp_path)
    test = build_test_sets(data_args(data_test="ImageNet", dir_data=str(tmp_path)))["ImageNet"]
    assert [test[i][0].shape for i in range(2)] == [(3, 224, 224)] * 2
    assert [test[i][1] for i in range(2)] == [0, 1]
    with pytest.raises(DataError, match="ILSVRC2012"):
        build_train_set(data_args(data_train="ImageNet", dir_data=str(tmp_path)))


@pytest.mark.usefixtures("one_thread")
def test_imagenet_five_and_ten_crops(tmp_path):
    """--crop 5: corners and centre of the 256-resized image (the centre is the --crop 1 image);
    --crop 10: those five, then the same crops of the mirrored image."""
    write_imagenet(tmp_path)
    sets = {crop: build_test_sets(data_args(data_test="ImageNet", dir_data=str(tmp_path), crop=crop))
            ["ImageNet"] for crop in (1, 5, 10)}
    for i in range(2):
        one, five, ten = (sets[c][i][0] for c in (1, 5, 10))
        assert five.shape == (5, 3, 224, 224) and ten.shape == (10, 3, 224, 224)
        assert torch.equal(five[4], one) and torch.equal(ten[:5], five)
        for j, mirrored in enumerate((1, 0, 3, 2)):  # left and right corners swap in the mirror image
            assert torch.equal(ten[5 + j], five[mirrored].flip(-1))
        # the mirrored centre: exact, or one pixel off where the margin (width - 224) is odd
        assert any(torch.equal(ten[9][..., 1:-1], five[4].flip(-1)[..., a:223 + a - 1]) for a in (0, 1, 2))
        assert not torch.equal(five[0], five[3])  # different places of the image
    assert [sets[10][i][1] for i in range(2)] == [0, 1]


# ---------------------------------------------------------------------------- subsets and names
def test_n_train_and_n_test_take_the_first_samples():
    full = build_train_set(data_args())
    train = build_train_set(data_args(n_train=30, n_test=7))
    test = build_test_sets(data_args(n_train=30, n_test=7))["Synthetic"]
    assert len(train) == 30 and len(test) == 7
    assert [train[i][1] for i in range(30)] == full.labels[:30].tolist()


@pytest.mark.parametrize("n", [-1, 1001])
def test_bad_subset_sizes_are_option_errors(n):
    with pytest.raises(OptionError, match="--n_train"):
        build_train_set(data_args(n_train=n))


def test_several_test_sets_and_unknown_names():
    assert list(build_test_sets(data_args(data_test="Synthetic+Synthetic"))) == ["Synthetic"]
    with pytest.raises(UserError, match="CIFAR10"):
        build_train_set(data_args(data_train="MNIST"))


# ---------------------------------------------------------------------------- losses
def test_loss_types():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 10), torch.tensor([0, 3, 9, 3, 1])
    args = argparse.Namespace()
    assert torch.allclose(LOSS_TYPES.get("CE")(args)(logits, labels), F.cross_entropy(logits, labels))
    assert torch.allclose(LOSS_TYPES.get("NLL")(args)(logits, labels), -logits[range(5), labels].mean())
    one_hot = torch.zeros(5, 10)
    one_hot[range(5), labels] = 1
    assert torch.allclose(LOSS_TYPES.get("MSE")(args)(logits, labels), ((logits - one_hot) ** 2).mean())
    assert sorted(LOSS_TYPES.names()) == ["CE", "MSE", "NLL"]
    with pytest.raises(UserError, match="L1"):
        LOSS_TYPES.get("L1")
