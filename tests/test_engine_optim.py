"""Optimiser factory and learning-rate schedules: official names and per-epoch learning rates."""

import argparse

import pytest
import torch

from filter_basis.engine.optim import Schedule, build_optimizer, build_scheduler


def lrs_per_epoch(args, epochs):
    """The learning rate each 1-based epoch trains with (the scheduler steps after each evaluation)."""
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(args, model.parameters())
    scheduler = build_scheduler(optimizer, Schedule.from_decay(args))
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def classification_args(**kw):
    base = dict(optimizer="SGD", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
                decay="step-150-225", gamma=0.1, linear=1, betas=None, beta1=0.9, beta2=0.999, epsilon=1e-8)
    return argparse.Namespace(**{**base, **kw})


def test_multistep_decay_uses_milestones_of_completed_epochs():
    lrs = lrs_per_epoch(classification_args(), 300)
    assert lrs[0] == lrs[149] == pytest.approx(0.1)
    assert lrs[150] == lrs[224] == pytest.approx(0.01)
    assert lrs[225] == lrs[299] == pytest.approx(0.001)


def test_warm_up_goes_linearly_towards_the_scaled_rate():
    lrs = lrs_per_epoch(classification_args(lr=0.4, linear=4, decay="warmstep-7"), 9)
    expected = [0.4 * (1 + t * 3 / 5) / 4 for t in range(5)] + [0.4, 0.4, 0.04, 0.04]
    assert lrs == pytest.approx(expected)


def test_sr_step_decay_every_lr_decay_epochs_and_milestones():
    sr = argparse.Namespace(decay_type="step", lr_decay=200, gamma=0.1)
    assert [Schedule.from_decay_type(sr).factor(t) for t in (0, 199, 200, 399, 400)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01])
    multi = argparse.Namespace(decay_type="step_3_5", lr_decay=200, gamma=0.5)
    factors = [Schedule.from_decay_type(multi).factor(t) for t in range(7)]
    assert factors == pytest.approx([1, 1, 1, .5, .5, .25, .25])


def test_optimizer_factory_uses_official_hyperparameters():
    params = list(torch.nn.Linear(2, 2).parameters())
    sgd = build_optimizer(classification_args(nesterov=True), params)
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["momentum"], sgd.defaults["nesterov"]) == (0.9, True)
    assert sgd.defaults["weight_decay"] == 1e-4
    adam = build_optimizer(classification_args(optimizer="ADAM", beta1=0.8, beta2=0.99, epsilon=1e-6), params)
    assert isinstance(adam, torch.optim.Adam)
    assert (adam.defaults["betas"], adam.defaults["eps"]) == ((0.8, 0.99), 1e-6)
    adam = build_optimizer(classification_args(optimizer="ADAM", betas=(0.5, 0.9)), params)
    assert adam.defaults["betas"] == (0.5, 0.9)
    assert isinstance(build_optimizer(classification_args(optimizer="RMSprop"), params), torch.optim.RMSprop)


def test_each_tree_reads_its_own_schedule_options():
    """The engine asks the tree (``Tree.schedule``), it does not guess the tree from the option names:
    an SR namespace that also carried a --decay would still be read through --decay_type/--lr_decay."""
    from image_classification.tree import TREE as CLS
    from super_resolution.tree import TREE as SR

    cls = CLS.parse_args(["--decay", "step-2-4", "--gamma", "0.5"])
    assert CLS.schedule(cls) == Schedule(milestones=(2, 4), gamma=0.5)
    sr = SR.parse_args(["--lr_decay", "3", "--gamma", "0.5"])
    sr.decay = "step-1"  # a stray classification-style option is not what the SR tree reads
    assert SR.schedule(sr) == Schedule(every=3, gamma=0.5)
    with pytest.raises(Exception, match="--decay_type 'step-1'"):
        SR.parse_args(["--decay_type", "step-1"])
