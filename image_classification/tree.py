"""The image classification tree as the engine sees it: its options, models, data, losses and trainer.

``main.py`` runs it; tools and tests import :data:`TREE` from here (never from the ``main.py`` script),
and the library finds it by name through :func:`filter_basis.engine.find_tree`.
"""

from filter_basis.engine import Tree
from image_classification import data, loss, model, option, trainer

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
    schedule=option.SCHEDULE,
    device_loader=data.device_loader,
    resume_may_change=option.RESUME_MAY_CHANGE,
    basis_count_options=model.basis_count_options,
    model_options=option.MODEL_OPTIONS,
    invocation_options=option.TEST_INVOCATION_OPTIONS,
)
