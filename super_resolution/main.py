"""Train or test a super-resolution network: ``python super_resolution/main.py --model EDSR ...``.

Works from any working directory (the official scripts ran ``python ../main.py`` from a folder below).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repository root

from filter_basis.engine import cli_main  # noqa: E402
from super_resolution.tree import TREE  # noqa: E402


def main(argv=None) -> int:
    return cli_main(TREE, argv)


if __name__ == "__main__":
    sys.exit(main())
