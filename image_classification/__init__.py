"""Image classification tree (CIFAR-10/100, ImageNet): options, data, models, losses, trainer."""
