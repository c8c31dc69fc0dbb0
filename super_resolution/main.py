"""Train or test a super-resolution network: ``python super_resolution/main.py --model EDSR ...``.

Works from any working directory (the official scripts ran ``python ../main.py`` from a folder below).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repository root

from filter_basis.engine import Tree, cli_main  # noqa: E402
from super_resolution import data, loss, model, option, trainer  # noqa: E402

TREE = Tree(
    name="super_resolution",
    parse_args=option.parse_args,
    build_model=model.build_model,
    baseline_name=model.baseline_name,
    summary_input_size=model.summary_input_size,
    summary_block=model.first_block_path,
    load_pretrained=model.load_pretrained,
    pretrained_option=option.PRETRAINED_OPTION,
    build_train_set=data.build_train_set,
    build_test_sets=data.build_test_sets,
    test_batch_size=lambda args: 1,
    loss_types=loss.LOSS_TYPES,
    trainer_class=trainer.Trainer,
    resume_may_change=option.RESUME_MAY_CHANGE,
    basis_count_options=model.basis_count_options,
)


def main(argv=None) -> int:
    return cli_main(TREE, argv)


if __name__ == "__main__":
    sys.exit(main())
