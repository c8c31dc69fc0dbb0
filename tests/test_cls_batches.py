"""Batch augmentation on the device: same distribution and values as the per-image pipeline."""

import argparse

import pytest
import torch
from torch.utils.data import DistributedSampler, SequentialSampler, Subset
from torchvision.transforms.v2 import functional as TF

from image_classification.data import device_loader
from image_classification.data.batches import CropFlipNormalize, DeviceBatches
from image_classification.data.in_memory import InMemoryImages
from image_classification.data.transforms import CIFAR_MEAN, CIFAR_STD, cifar_batch_transform, cifar_transform


def _position_images(n: int) -> torch.Tensor:
    """Channel 0 holds row + 1, channel 1 column + 1 (1..32), so zero means padding."""
    steps = torch.arange(1, 33, dtype=torch.uint8)
    image = torch.stack([steps[:, None].expand(32, 32), steps[None, :].expand(32, 32),
                         torch.full((32, 32), 7, dtype=torch.uint8)])
    return image.expand(n, 3, 32, 32).contiguous()


def _recover(batch: torch.Tensor) -> tuple:
    """Crop offsets and flips back from augmented position images (mean 0, std 1 keep x / 255)."""
    values = (batch * 255).round().long()[:, :, 16]  # output row 16 is inside the image for every offset
    # output row i shows padded row top + i, i.e. image row top + i - 4, holding top + i - 3
    top = values[:, 0, 16] + 3 - 16
    flipped = values[:, 1, 15] > values[:, 1, 16]
    # output column j shows padded column left + j (flipped: left + 31 - j)
    left = torch.where(flipped, values[:, 1, 16] + 3 - 31 + 16, values[:, 1, 16] + 3 - 16)
    return top, left, flipped


def test_every_offset_and_flip_occurs_with_its_frequency():
    n = 81 * 200
    augment = CropFlipNormalize((0.0,) * 3, (1.0,) * 3)
    generator = torch.Generator().manual_seed(0)
    top, left, flipped = _recover(augment(_position_images(n), generator))
    counts = torch.bincount(top * 9 + left, minlength=81)
    # each of the 9 x 9 offsets has probability 1/81: 200 expected, binomial sd ~14
    assert counts.numel() == 81 and counts.min() > 200 - 5 * 14 and counts.max() < 200 + 5 * 14
    for values in (top, left):
        assert set(values.tolist()) == set(range(9))
    assert abs(flipped.sum().item() - n / 2) < 5 * (n / 4) ** 0.5
    # flips are independent of the offsets: about half of every offset's images are flipped
    per_offset = torch.bincount(top * 9 + left, weights=flipped.double(), minlength=81) / counts
    assert per_offset.min() > 0.25 and per_offset.max() < 0.75


def test_draws_match_the_recovered_crops():
    augment = CropFlipNormalize((0.0,) * 3, (1.0,) * 3)
    images = _position_images(64)
    draws = augment.draw(64, torch.Generator().manual_seed(3))
    recovered = _recover(augment.apply(images, *draws))
    for drawn, found in zip(draws, recovered):
        assert torch.equal(drawn, found)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_batch_equals_the_per_image_transform_with_the_same_offsets(memory_format):
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=generator)
    augment = cifar_batch_transform(train=True)
    top, left, flipped = augment.draw(16, generator)
    flipped[:2] = torch.tensor([True, False])  # both cases present
    batch = augment.apply(images, top, left, flipped, memory_format)
    assert batch.is_contiguous(memory_format=memory_format)
    normalise = cifar_transform(train=False)
    for i in range(16):
        image = TF.crop(TF.pad(images[i], [4], fill=0), int(top[i]), int(left[i]), 32, 32)
        if flipped[i]:
            image = TF.horizontal_flip(image)
        assert torch.equal(batch[i], normalise(image)), i


def test_no_flip_and_test_transforms():
    generator = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=generator)
    no_flip = cifar_batch_transform(train=True, flip=False)  # Digits, --no_flip
    assert not no_flip.draw(1000, generator)[2].any()
    test = cifar_batch_transform(train=False)
    normalise = cifar_transform(train=False)
    batch = test(images, generator)
    assert all(torch.equal(batch[i], normalise(images[i])) for i in range(32))
    mean, std = (0.3,) * 3, (0.2,) * 3
    other = cifar_batch_transform(train=False, mean=mean, std=std)(images[:1], generator)
    assert torch.equal(other[0], cifar_transform(train=False, mean=mean, std=std)(images[0]))


def _set(n: int = 50) -> InMemoryImages:
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).contiguous()
    return InMemoryImages(images, torch.arange(n) % 10)


def test_batches_follow_the_sampler_and_subsets():
    dataset = Subset(_set(), range(10, 33))  # --n_train style subset of a subset's base
    test = cifar_batch_transform(train=False, mean=(0.0,) * 3, std=(1.0,) * 3)
    loader = DeviceBatches(dataset, 8, SequentialSampler(dataset), test, torch.device("cpu"), seed=0)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(b[1]) for b in batches] == [8, 8, 7]
    ids = torch.cat([(images[:, 0, 0, 0] * 255).round().long() for images, _ in batches])
    assert ids.tolist() == list(range(10, 33))
    assert torch.cat([labels for _, labels in batches]).tolist() == [i % 10 for i in range(10, 33)]
    assert loader.dataset is dataset and batches[0][0].dtype == torch.float32
    assert batches[0][0].is_contiguous()
    channels_last = DeviceBatches(dataset, 8, SequentialSampler(dataset), test, torch.device("cpu"), seed=0,
                                  memory_format=torch.channels_last)
    for (a, _), (b, _) in zip(batches, channels_last):
        assert torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last)


def test_distributed_shards_cover_the_set_once_per_epoch():
    dataset = _set(50)
    test = cifar_batch_transform(train=False, mean=(0.0,) * 3, std=(1.0,) * 3)
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=1)
        sampler.set_epoch(3)
        loader = DeviceBatches(dataset, 16, sampler, test, torch.device("cpu"), seed=rank)
        seen += [int(v) for images, _ in loader for v in (images[:, 0, 0, 0] * 255).round()]
    assert sorted(seen) == list(range(50))


def test_generator_state_resumes_the_same_augmentation():
    dataset = _set(40)
    augment = cifar_batch_transform(train=True)

    def loader():
        return DeviceBatches(dataset, 16, SequentialSampler(dataset), augment, torch.device("cpu"), seed=5)

    first = loader()
    list(first)  # one epoch
    state = first.state_dict()
    expected = [images for images, _ in first]
    resumed = loader()
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for (a, _), b in zip(resumed, expected))
    fresh = [images for images, _ in loader()]
    assert not torch.equal(fresh[0], expected[0])


def test_device_loader_only_for_sets_with_a_batch_transform():
    args = argparse.Namespace(no_flip=False, channels_last=False)
    dataset = _set(20)
    sampler = SequentialSampler(dataset)
    loader = device_loader("Synthetic", dataset, True, 8, sampler, args, torch.device("cpu"))
    assert isinstance(loader, DeviceBatches) and loader.transform.flip and loader.transform.padding == 4
    cpu = torch.device("cpu")
    assert device_loader("CIFAR10", dataset, False, 8, sampler, args, cpu).transform.padding == 0
    assert device_loader("ImageNet", dataset, True, 8, sampler, args, cpu) is None
    args.no_flip = True
    assert not device_loader("CIFAR100", dataset, True, 8, sampler, args, cpu).transform.flip
    args.no_flip = False
    digits = device_loader("Digits", dataset, True, 8, sampler, args, cpu).transform  # crop, never a flip
    assert digits.padding == 4 and not digits.flip and digits.mean != CIFAR_MEAN


def test_refuses_a_set_that_is_not_in_memory():
    with pytest.raises(ValueError, match="in-memory"):
        DeviceBatches([1, 2], 1, SequentialSampler([1, 2]), cifar_batch_transform(True),
                      torch.device("cpu"), 0)


def test_mean_and_std_are_the_cifar_ones_by_default():
    assert cifar_batch_transform(True).mean == CIFAR_MEAN and cifar_batch_transform(True).std == CIFAR_STD


def test_digits_batches_equal_its_per_image_transform():
    from image_classification.data.digits import digits_batch_transform, digits_transform

    generator = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=generator)
    augment = digits_batch_transform(train=True)
    top, left, flipped = augment.draw(8, generator)
    assert not flipped.any()
    batch = augment.apply(images, top, left, flipped)
    normalise = digits_transform(train=False)
    for i in range(8):
        crop = TF.crop(TF.pad(images[i], [4], fill=0), int(top[i]), int(left[i]), 32, 32)
        assert torch.equal(batch[i], normalise(crop))
