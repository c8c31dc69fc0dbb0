"""Digits: scikit-learn's handwritten digits as a CIFAR-shaped data set (split, pixels, preprocessing)."""

import argparse
import json

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from image_classification.data import build_test_sets, build_train_set, num_classes
from image_classification.data.digits import DIGITS_MEAN, DIGITS_STD, Digits, digits_transform
from image_classification.main import main

# Fixed once from the data (scikit-learn's bundled digits.csv.gz), so that any change to the split, the
# scaling or the resizing shows up here.
TEST_COUNTS = [36, 37, 35, 37, 36, 36, 36, 36, 35, 36]
FIRST_TEST_LABELS = [5, 0, 9, 8, 7, 1, 2, 3, 6, 4]
TRAIN_ROW_16 = [0, 0, 9, 28, 46, 64, 83, 103, 122, 142, 132, 95, 57, 19, 0, 0,
                0, 0, 17, 52, 86, 120, 136, 134, 131, 129, 112, 80, 48, 16, 0, 0]
TEST_ROW_16 = [0, 0, 1, 4, 7, 10, 31, 69, 108, 146, 164, 162, 159, 157, 162, 176,
               189, 202, 196, 171, 146, 120, 94, 67, 40, 13, 0, 0, 0, 0, 0, 0]
TRAIN_SUM, TEST_SUM = 343626060, 86047455


def digits_args(**overrides):
    values = dict(data_train="Digits", data_test="Digits", dir_data="/nonexistent", download=False, n_train=0,
                  n_test=0, no_flip=False, crop=1)
    return argparse.Namespace(**{**values, **overrides})


def test_split_sizes_classes_and_layout():
    train, test = Digits(train=True), Digits(train=False)
    assert (len(train), len(test)) == (1437, 360) and num_classes("Digits") == 10
    for split in (train, test):
        assert split.images.shape[1:] == (3, 32, 32) and split.images.dtype == torch.uint8
        assert torch.equal(split.images[:, 0], split.images[:, 1])  # grey replicated to 3 channels
        assert torch.equal(split.images[:, 0], split.images[:, 2])
        assert int(split.images.max()) == 255 and int(split.images.min()) == 0  # 0-16 scaled to 0-255
    assert np.bincount(test.labels.numpy(), minlength=10).tolist() == TEST_COUNTS  # stratified
    train_counts = np.bincount(train.labels.numpy(), minlength=10)
    assert (train_counts + TEST_COUNTS).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_split_and_pixels_are_the_fixed_ones():
    train, test = Digits(train=True), Digits(train=False)
    assert test.labels[:10].tolist() == FIRST_TEST_LABELS and train.labels[:10].tolist() == list(range(10))
    assert train.images[0, 0, 16].tolist() == TRAIN_ROW_16 and test.images[0, 0, 16].tolist() == TEST_ROW_16
    assert int(train.images.sum()) == TRAIN_SUM and int(test.images.sum()) == TEST_SUM
    # no image is in both splits
    flat_train = {bytes(im) for im in train.images[:, 0].flatten(1).numpy()}
    assert not any(bytes(im) in flat_train for im in test.images[:, 0].flatten(1).numpy())


def test_normalisation_constants_are_the_training_statistics():
    pixels = Digits(train=True).images.double() / 255
    assert pixels.mean().item() == pytest.approx(DIGITS_MEAN[0], abs=1e-5)
    assert pixels.std(unbiased=False).item() == pytest.approx(DIGITS_STD[0], abs=1e-5)


def test_items_are_normalised_and_test_items_unaugmented():
    test = build_test_sets(digits_args())["Digits"]
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == FIRST_TEST_LABELS[0]
    mean, std = torch.tensor(DIGITS_MEAN).view(3, 1, 1), torch.tensor(DIGITS_STD).view(3, 1, 1)
    assert torch.allclose((image * std + mean) * 255, test.images[0].float(), atol=1e-3)


def test_training_augmentation_is_a_padded_crop_and_never_a_flip():
    steps = digits_transform(train=True).transforms
    assert any(isinstance(s, v2.RandomCrop) and s.padding == [4, 4, 4, 4] for s in steps)
    assert not any(isinstance(s, v2.RandomHorizontalFlip) for s in steps)
    train = build_train_set(digits_args(no_flip=False))
    image = train.images[5, 0].float()
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    shifts = {tuple(padded[y:y + 32, x:x + 32].flatten().tolist()) for y in range(9) for x in range(9)}
    mean, std = DIGITS_MEAN[0], DIGITS_STD[0]
    torch.manual_seed(0)
    for _ in range(20):
        out = ((train[5][0][0] * std + mean) * 255).round()
        assert tuple(out.flatten().tolist()) in shifts


def test_n_train_keeps_the_first_images():
    train = build_train_set(digits_args(n_train=100))
    assert len(train) == 100 and train[99][1] == int(Digits(train=True).labels[99])


def test_a_cifar_resnet_trains_on_digits(tmp_path, one_thread):
    argv = ["--model", "ResNet", "--depth", "8", "--data_train", "Digits", "--data_test", "Digits", "--cpu",
            "--n_threads", "0", "--n_train", "256", "--n_test", "64", "--batch_size", "64", "--epochs", "1",
            "--dir_save", str(tmp_path), "--save", "digits"]
    assert main(argv) == 0
    records = json.loads((tmp_path / "digits" / "results.json").read_text())
    record = records[0]
    assert [r["epoch"] for r in records] == [1] and record["metrics"]["loss"] > 0
    assert 0 <= record["metrics"]["top1_error"] <= 100 and record["train_loss"] > 0
