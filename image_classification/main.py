"""Train or test an image classification network: ``python image_classification/main.py --model ResNet ...``.

Runs from any working directory (the repository root, this folder, or ``python ../main.py`` below it);
``torchrun --nproc_per_node N image_classification/main.py ...`` trains with DistributedDataParallel.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from filter_basis.engine import cli_main  # noqa: E402
from image_classification.tree import TREE  # noqa: E402


def main(argv=None) -> int:
    return cli_main(TREE, argv)


if __name__ == "__main__":
    sys.exit(main())
