"""ITU-R BT.601 luma of 0..255 RGB, in 16..235: the Y channel of ``--n_colors 1`` images and of SSIM.

Written once for the training images (``data.images.set_channel``), the model's mean colour
(``model.common.mean_colour``) and the SSIM input (``metrics.luminance``).
"""


def rgb_to_y(r, g, b):
    """Y of R, G, B in 0..255: numbers, numpy arrays or tensors alike."""
    return 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
