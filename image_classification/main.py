"""Train or test an image classification network: ``python image_classification/main.py --model ResNet ...``.

Runs from any working directory (the repository root, this folder, or ``python ../main.py`` below it);
``torchrun --nproc_per_node N image_classification/main.py ...`` trains with DistributedDataParallel.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from filter_basis.engine import Tree, cli_main  # noqa: E402
from image_classification import data, loss, model, option, trainer  # noqa: E402

TREE = Tree(
    name="image_classification",
    parse_args=option.parse_args,
    build_model=model.build_model,
    baseline_name=model.baseline_name,
    summary_input_size=model.summary_input_size,
    load_pretrained=model.load_pretrained,
    pretrained_option=option.PRETRAINED_OPTION,
    build_train_set=data.build_train_set,
    build_test_sets=data.build_test_sets,
    test_batch_size=trainer.test_batch_size,
    loss_types=loss.LOSS_TYPES,
    trainer_class=trainer.Trainer,
    device_loader=data.device_loader,
    resume_may_change=option.RESUME_MAY_CHANGE,
    basis_count_options=model.basis_count_options,
)


def main(argv=None) -> int:
    return cli_main(TREE, argv)


if __name__ == "__main__":
    sys.exit(main())
