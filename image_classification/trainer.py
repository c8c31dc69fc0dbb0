"""Classification hooks of the engine's training loop: cross-entropy style training, top-k error testing."""

from __future__ import annotations

import torch.nn.functional as F

from filter_basis import engine
from filter_basis.engine.meters import MetricSums

TEST_BATCH_SIZE = 500  # official test batch


class Trainer(engine.Trainer):
    """Metrics: ``top1_error`` and ``top5_error`` (percent of test images) and ``loss`` (mean cross-entropy).

    With several ``--data_test`` sets the metrics are grouped by set name; the first set picks the best.
    """

    higher_is_better = False
    loss_norm_lambda = 0.05  # official classification weight of the --loss_norm basis term

    def train_step(self, batch) -> tuple:
        images, labels = batch
        labels = self.to_device(labels, cast=False)
        return self.loss(self.net(self.to_device(images)), labels), labels.shape[0]

    def test_step(self, batch, meter: MetricSums, set_name: str) -> None:
        images, labels = batch
        labels = self.to_device(labels, cast=False)
        logits = self.logits(self.to_device(images))
        prefix = f"{set_name}/" if len(self.test_loaders) > 1 else ""
        n = labels.shape[0]
        meter.add(prefix + "loss", F.cross_entropy(logits, labels, reduction="sum"), n)
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked == labels[:, None]
        meter.add(prefix + "top1_error", 100.0 * (n - hits[:, :1].sum()), n)
        meter.add(prefix + "top5_error", 100.0 * (n - hits.sum()), n)

    def logits(self, images):
        """Float logits of a batch; a (N, crops, C, H, W) batch (ImageNet ``--crop 5/10``) gives the mean of
        each image's crop logits."""
        if images.dim() == 5:
            n, crops = images.shape[:2]
            return self.eval_net(images.flatten(0, 1)).float().unflatten(0, (n, crops)).mean(1)
        return self.eval_net(images).float()

    @classmethod
    def best_key(cls, options) -> tuple:
        """Top-1 error (``--top -1``: top-5) of the first ``--data_test`` set (grouped by set name when
        there are several sets)."""
        names = list(dict.fromkeys(str(options["data_test"]).split("+")))
        key = "top1_error" if options.get("top", 1) == 1 else "top5_error"
        return names[0], key if len(names) == 1 else f"{names[0]}/{key}"


def test_batch_size(args) -> int:
    """The official test batch of CIFAR; for ImageNet divided by ``--crop`` (500 images of ten crops each
    would be 3 GB of input)."""
    return TEST_BATCH_SIZE // args.crop if "ImageNet" in args.data_test.split("+") else TEST_BATCH_SIZE
