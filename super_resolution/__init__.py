"""Super-resolution tree (EDSR, SRResNet, compressed forms): options, data, models, losses, trainer."""
