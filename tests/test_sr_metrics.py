"""SR metrics and test-time forward passes against hand-computed values
(docs/official-code.md#sr-evaluation)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from super_resolution.inference import forward_chop, self_ensemble
from super_resolution.metrics import calc_psnr, calc_ssim, luminance, quantize


def test_quantize_rounds_and_clamps_to_8_bit_levels():
    x = torch.tensor([-3.0, 0.4, 127.5, 200.6, 300.0])
    assert quantize(x, 255).tolist() == [0.0, 0.0, 128.0, 201.0, 255.0]
    y = quantize(torch.tensor([0.5, 2.0]), 1)
    assert torch.allclose(y, torch.tensor([128 / 255, 1.0]))


def test_benchmark_psnr_of_a_constant_error_uses_the_luminance_of_the_difference():
    hr = torch.full((1, 3, 20, 24), 100.0)
    sr = hr + 5
    luma = 5 / 255 * (65.738 + 129.057 + 25.064) / 256
    assert calc_psnr(sr, hr, 2, 255, benchmark=True) == pytest.approx(-20 * math.log10(luma), abs=1e-9)


def test_benchmark_psnr_ignores_the_shaved_border_of_scale_pixels():
    hr = torch.zeros(1, 3, 20, 20)
    sr = hr.clone()
    sr[..., :3, :] = 50  # inside the 3-pixel border cut at x3
    assert calc_psnr(sr, hr, 3, 255, benchmark=True) == math.inf
    sr[..., 3, 3] = 50  # first pixel kept
    assert calc_psnr(sr, hr, 3, 255, benchmark=True) < math.inf


def test_div2k_psnr_is_rgb_with_a_border_of_scale_plus_6():
    hr = torch.zeros(1, 3, 30, 30)
    sr = hr.clone()
    sr[:, 0] = 10  # red channel only
    mse = (10 / 255) ** 2 / 3
    assert calc_psnr(sr, hr, 2, 255, benchmark=False) == pytest.approx(-10 * math.log10(mse), abs=1e-9)
    sr = hr.clone()
    sr[..., :8, :] = 10  # within scale + 6 = 8
    assert calc_psnr(sr, hr, 2, 255, benchmark=False) == math.inf


def test_psnr_with_rgb_range_1_equals_rgb_range_255():
    g = torch.Generator().manual_seed(0)
    hr = torch.randint(0, 256, (1, 3, 16, 16), generator=g).float()
    sr = torch.randint(0, 256, (1, 3, 16, 16), generator=g).float()
    assert calc_psnr(sr / 255, hr / 255, 2, 1, True) == pytest.approx(calc_psnr(sr, hr, 2, 255, True))


def test_luminance_is_bt601_y_in_16_to_235():
    pixels = torch.tensor([[[255.0, 0, 255]], [[0.0, 0, 255]], [[0.0, 0, 255]]])  # red, black, white
    assert luminance(pixels, 255)[0].tolist() == pytest.approx([16 + 65.481, 16.0, 235.0])


def test_ssim_is_one_for_equal_images_and_ignores_the_border():
    g = torch.Generator().manual_seed(1)
    hr = torch.randint(0, 256, (1, 3, 32, 32), generator=g).float()
    assert calc_ssim(hr, hr.clone(), 4, 255) == pytest.approx(1.0)
    sr = hr.clone()
    sr[..., :4, :] = 0
    sr[..., :, -4:] = 255
    assert calc_ssim(sr, hr, 4, 255) == pytest.approx(1.0)
    noisy = (hr + 40 * torch.randn(hr.shape, generator=g)).clamp(0, 255)
    assert calc_ssim(noisy, hr, 4, 255) < 0.9


def _upsampling_model(scale, channels=3, pixel_shuffle=True):
    """A 1x1 conv: every output pixel depends on one input pixel, well within chop's overlap."""
    torch.manual_seed(0)
    if pixel_shuffle:
        conv = nn.Conv2d(channels, channels * scale * scale, 1)
        return lambda x: F.pixel_shuffle(conv(x), scale)
    conv = nn.Conv2d(channels, channels, 1)
    return lambda x: F.interpolate(conv(x), scale_factor=scale, mode="nearest")


@pytest.mark.parametrize("scale, size, min_size, n_tiles", [
    (2, (45, 38), 160000, 1), (3, (41, 52), 800, 1), (4, (60, 47), 1000, 2), (2, (64, 64), 1000, 4)])
def test_chop_equals_the_whole_image_forward_when_the_receptive_field_fits_the_overlap(
        scale, size, min_size, n_tiles):
    model = _upsampling_model(scale)
    x = torch.rand(2, 3, *size) * 255
    calls = []

    def forward(t):
        calls.append(t.shape)
        return model(t)

    with torch.no_grad():
        chopped = forward_chop(forward, x, scale, min_size=min_size, n_tiles=n_tiles)
        whole = model(x)
    assert chopped.shape == whole.shape
    assert torch.allclose(chopped, whole, atol=1e-4)
    tile_h = size[0] // 2 + 10
    if (size[1] // 2 + 10) * tile_h < min_size:
        assert len(calls) == 4 // n_tiles and calls[0][0] == 2 * n_tiles  # no recursion, batched tiles
    else:
        assert len(calls) == 16 // n_tiles and all(s[-2] < tile_h for s in calls)  # one level deeper


def test_chop_differs_from_whole_forward_for_a_wide_receptive_field():
    torch.manual_seed(0)
    blur = nn.Conv2d(3, 3, 25, padding=12)
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        assert not torch.allclose(forward_chop(blur, x, 1), blur(x), atol=1e-4)


def test_chop_passes_images_too_small_to_split_through_whole():
    model = _upsampling_model(2)
    x = torch.rand(1, 3, 12, 40)  # 12 // 2 + 10 >= 12
    with torch.no_grad():
        assert torch.equal(forward_chop(model, x, 2), model(x))


def test_self_ensemble_of_an_equivariant_model_equals_its_forward():
    model = _upsampling_model(2, pixel_shuffle=False)
    x = torch.rand(2, 3, 9, 13) * 255
    with torch.no_grad():
        assert torch.allclose(self_ensemble(model, x), model(x), atol=1e-4)


def test_self_ensemble_maps_every_output_back_before_averaging():
    """f adds the column index: averaged over the 8 flips/transposes of a square this is (n - 1) / 2."""
    n = 7
    x = torch.rand(1, 3, n, n)
    add_column = lambda t: t + torch.arange(t.shape[-1], dtype=t.dtype)
    assert torch.allclose(self_ensemble(add_column, x), x + (n - 1) / 2, atol=1e-6)


def test_self_ensemble_composes_with_chop():
    model = _upsampling_model(3, pixel_shuffle=False)
    x = torch.rand(1, 3, 30, 34)
    with torch.no_grad():
        out = self_ensemble(lambda t: forward_chop(model, t, 3, min_size=600), x)
        assert torch.allclose(out, model(x), atol=1e-4)
