"""The SR hooks of the shared training loop: L1/MSE on patches, PSNR/SSIM on whole test images.

Metrics are keyed ``"<set>_x<scale>"`` with ``psnr`` and ``ssim`` inside (DESIGN.md contract 3); the best
model is the one with the highest PSNR on the first ``--data_test`` set.  Test images go through the
network one at a time, tiled with ``--chop`` and averaged over flips with ``--self_ensemble``, then
quantised to 8 bits before any metric, as the published numbers were measured.
"""

from __future__ import annotations

from functools import partial

import imageio.v3 as iio
import torch

from filter_basis import engine
from super_resolution.inference import forward_chop, self_ensemble
from super_resolution.metrics import calc_psnr, calc_ssim, quantize


class Trainer(engine.Trainer):
    higher_is_better = True  # PSNR
    loss_norm_lambda = 1.0  # official SR weight of the --loss_norm basis term

    @property
    def scale(self) -> int:
        return self.args.scale[0]

    def metric_key(self, set_name: str) -> str:
        return f"{set_name}_x{self.scale}"

    def train_step(self, batch):
        lr, hr = self.to_device(batch[0]), self.to_device(batch[1])
        return self.loss(self.net(lr), hr), lr.shape[0]

    def super_resolve(self, lr: torch.Tensor) -> torch.Tensor:
        forward = partial(forward_chop, self.eval_net, scale=self.scale) if self.args.chop else self.eval_net
        return self_ensemble(forward, lr) if self.args.self_ensemble else forward(lr)

    def test_step(self, batch, meter, set_name: str) -> None:
        if not getattr(self.test_loaders[set_name].dataset, "ground_truth", True):  # Demo: save, no metrics
            lr, names = batch
            sr = quantize(self.super_resolve(self.to_device(lr)).float(), self.args.rgb_range)
            for i, name in enumerate(names):
                self.save_image(sr[i], set_name, name)
            return
        lr, hr, names = batch
        lr, hr = self.to_device(lr), self.to_device(hr, cast=False)  # HR only feeds the metrics: float32
        sr = quantize(self.super_resolve(lr).float(), self.args.rgb_range)
        benchmark = self.test_loaders[set_name].dataset.benchmark
        key = self.metric_key(set_name)
        for i, name in enumerate(names):
            one_sr, one_hr = sr[i:i + 1], hr[i:i + 1]
            meter.add(f"{key}/psnr", calc_psnr(one_sr, one_hr, self.scale, self.args.rgb_range, benchmark), 1)
            meter.add(f"{key}/ssim", calc_ssim(one_sr, one_hr, self.scale, self.args.rgb_range), 1)
            if self.args.save_results:
                self.save_image(sr[i], set_name, name)

    def save_image(self, sr: torch.Tensor, set_name: str, name: str) -> None:
        """``<experiment>/results/<set>_x<s>/<name>_SR.png`` (every process writes its own images)."""
        folder = self.experiment.dir / "results" / self.metric_key(set_name)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = sr.mul(255 / self.args.rgb_range).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
        iio.imwrite(folder / f"{name}_SR.png", pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)

    @classmethod
    def best_key(cls, options) -> tuple:
        """PSNR of the first ``--data_test`` set at the first scale."""
        first = str(options["data_test"]).split("+")[0]
        scale = options["scale"]
        scale = scale[0] if isinstance(scale, list) else int(str(scale).split("+")[0])
        return first, f"{first}_x{scale}/psnr"
