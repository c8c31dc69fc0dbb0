"""Running a tree: the ``--summary`` path, or set-up, training/testing and tear-down of one experiment."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from torch.utils.data import DataLoader, SequentialSampler

from ..errors import DataError, report_errors
from ..layers import set_basis_form
from ..registry import Registry
from . import basis_init, evaluation
from .checkpoint import seed_everything
from .cluster import check_one_run, check_same_decision
from .device import Runtime, use_cuda
from .distributed import DistEnv, ShardSampler, barrier, setup, teardown
from .experiment import Experiment
from .losses import build_loss
from .optim import Schedule
from .options import is_given
from .preemption import ResumableSampler, notice_handlers
from .record import read_run_file
from .regularizers import LOSS_NORM, build_loss_norm
from .resume import check_options
from .stopping import Interrupted, interrupted
from .summary import describe
from .trainer import Trainer

HALF_WARNING = ("warning: --precision half trains float16 weights without a float32 master copy or loss "
                "scaling (official behaviour): an update smaller than about 1/2000 of its weight is rounded "
                "away; --amp fp16 trains float32 weights with float16 arithmetic")


@dataclass(frozen=True)
class Tree:
    """What a task tree plugs into the engine (see each tree's tree.py)."""

    name: str
    parse_args: Callable[[Optional[list]], argparse.Namespace]
    build_model: Callable
    baseline_name: Callable[[argparse.Namespace], str]
    summary_input_size: Callable[[argparse.Namespace], tuple]
    load_pretrained: Callable
    pretrained_option: str
    build_train_set: Callable
    build_test_sets: Callable[[argparse.Namespace], dict]
    test_batch_size: Callable[[argparse.Namespace], int]
    loss_types: Registry
    trainer_class: type
    schedule: Callable[[argparse.Namespace], Schedule]  # the tree's reading of its schedule options
    summary_block: Optional[Callable[[argparse.Namespace], str]] = None
    # device_loader(name, dataset, train, batch_size, sampler, args, device): batches made on the device
    # (with the loader's state_dict for resuming), or None for a DataLoader with per-item transforms
    device_loader: Optional[Callable] = None
    resume_may_change: tuple = ()  # the tree's options that may differ on --load besides resume.py's list
                                   # and the pretrained weights (replaced by the saved state anyway)
    # (args, basis names, filters per basis) -> {option: value} that rebuild the model with those counts
    basis_count_options: Optional[Callable[[argparse.Namespace, list, list], dict]] = None
    log_model: Callable[[argparse.Namespace], bool] = lambda args: False  # SR's --print_model
    # A test of a saved run (docs/testing.md): the tree's options that change the model's state_dict or
    # forward pass (compared with the run's, besides evaluation.MODEL_OPTIONS), and the tree's options that
    # belong to the invocation, never taken from the run (besides evaluation.INVOCATION_OPTIONS)
    model_options: tuple = ()
    invocation_options: tuple = ()


def cli_main(tree: Tree, argv: Optional[list] = None) -> int:
    """Parse, run, and turn user errors into one line on stderr (exit 2) instead of a traceback; Ctrl-C
    into one line saying what was kept and how to continue (exit 130)."""
    try:
        return report_errors(lambda: run(tree, tree.parse_args(argv)))
    except KeyboardInterrupt:  # before the experiment folder was opened (parsing, set-up)
        stop = interrupted(None, None)
    except Interrupted as error:
        stop = error
    print(stop, file=sys.stderr)
    return stop.exit_code


def run(tree: Tree, args: argparse.Namespace) -> Optional[Trainer]:
    """Print the summary, or train/test as the options say; returns the finished trainer."""
    if args.summary:
        table, info = describe(tree, args)
        print(table)
        print(json.dumps(info))
        return None
    env = setup(args, use_cuda(args))
    try:
        with notice_handlers(not args.test_only):  # SIGTERM/SIGUSR1: stop after a step (docs/cluster.md)
            trainer = _run_experiment(tree, args, env)
        barrier(env)  # no process closes its connections while another still communicates
        return trainer
    except BaseException as error:
        if env.enabled:  # the failed run's frames hold its DDP wrapper: let teardown end the group now
            traceback.clear_frames(error.__traceback__)
        raise
    finally:
        teardown(env)


def _run_experiment(tree: Tree, args: argparse.Namespace, env: DistEnv) -> Optional[Trainer]:
    tested = evaluation.settle(tree, args)  # a test of a saved run: its options, checkpoint and eval folder
    check_one_run(args, env)  # several processes: the same options, one shared --dir_save (docs/cluster.md)
    experiment = Experiment(args, env, tree.name, tested)  # refuses a folder it must not touch, before writes
    check_same_decision(env, experiment.resuming, experiment.dir)
    try:
        return _run_in(experiment, tree, args, env, tested)
    except KeyboardInterrupt:
        raise interrupted(experiment, args) from None
    except Exception:
        experiment.stopped()
        raise
    finally:
        experiment.close()


def _settle_counts(experiment: Experiment, tree: Tree, args: argparse.Namespace):
    """``--basis_init``: the dense start of a new run (None when continuing: the saved state replaces it);
    ``--target_compression`` of a run that exists takes the filter counts its record says were chosen,
    so the first command continues it without refitting (the printed count options continue it too)."""
    if not experiment.resuming and experiment.finished is None:
        return basis_init.prepare(tree, args)  # settles --target_compression before args are recorded
    if getattr(args, "target_compression", None) is not None or \
            getattr(args, "target_flops", None) is not None:
        chosen = (read_run_file(experiment.dir) or {}).get("basis_counts") or {}
        if isinstance(chosen.get("options"), dict):
            for name, value in chosen["options"].items():
                setattr(args, name, value)
        else:  # a folder of an older version: the counts its options recorded
            for name, value in experiment.saved_options().items():
                if name.startswith("n_basis") and hasattr(args, name):
                    setattr(args, name, value)
    return None


def _finished(line: str, env: DistEnv) -> None:
    if env.is_main:
        print(line)


def _run_in(experiment: Experiment, tree: Tree, args: argparse.Namespace, env: DistEnv,
            tested: Optional[evaluation.Evaluation]) -> Optional[Trainer]:
    may_change = tree.resume_may_change + (tree.pretrained_option,)
    dense_init = _settle_counts(experiment, tree, args)
    runtime = Runtime.from_args(args, env)
    if dense_init is not None:
        dense_init.settle(lambda: _calibration_loader(tree, args, runtime), runtime)
        if dense_init.choice is not None and env.is_main:
            print(f"--basis_init chose: {dense_init.options_line()}")
    if experiment.finished is not None:  # no training state and nothing left to train: touch nothing
        check_options(args, experiment.saved_options(), may_change)
        _finished(experiment.finished, env)
        return None
    state = None
    if experiment.resuming:  # refuse drifted options before building anything
        state = experiment.load_state()
        check_options(args, state.get("options") or experiment.saved_options(), may_change)
        done = experiment.finished_with_state(args, experiment.state_epoch)
        if done is not None:
            _finished(done, env)
            return None
    _, info = describe(tree, args)
    seed_everything(args.seed + env.rank)
    model = tree.build_model(args)
    set_basis_form(model, args.basis_form)
    pretrained = getattr(args, tree.pretrained_option)
    if tested is not None:
        evaluation.load_weights(tree, model, tested, args)
        experiment.tested = {"checkpoint": tested.checkpoint, "weights": str(tested.weights)}
    elif is_given(pretrained):
        tree.load_pretrained(model, pretrained, args)
        if args.test_only and os.path.isfile(pretrained):
            experiment.tested = {"weights": os.path.abspath(pretrained)}
    evaluation.refuse_untrained(tree, args, model)
    if dense_init is not None:
        dense_init.apply(model)
    runtime.prepare(model)
    loss = build_loss(args.loss, tree.loss_types, args)
    if args.loss_norm and not args.test_only:  # a training regulariser: nothing to build for a test run
        loss.add_term(1.0, LOSS_NORM, build_loss_norm(tree, args, model))
    test_loaders = {name: _loader(tree, name, dataset, False, tree.test_batch_size(args),
                                  ShardSampler(len(dataset), env), args, runtime)
                    for name, dataset in tree.build_test_sets(args).items()}
    train_loader = None
    if not args.test_only:
        train_set = tree.build_train_set(args)
        sampler = ResumableSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                   seed=args.seed)
        train_loader = _loader(tree, args.data_train, train_set, True, args.batch_size // env.world_size,
                               sampler, args, runtime)
    if dense_init is not None:
        dense_init.calibrate(model, lambda: _calibration_loader(tree, args, runtime), runtime)
    if dense_init is not None and dense_init.needs_batches(model):
        bn_loader = train_loader
        if bn_loader is None:  # a test run re-estimates on the training data when they are at hand
            try:
                bn_loader = _calibration_loader(tree, args, runtime)
            except DataError as error:
                dense_init.no_data = str(error)
        dense_init.reestimate(model, bn_loader, runtime)
    trainer = tree.trainer_class(args, model, loss, runtime, env, experiment, train_loader, test_loaders,
                                 schedule=tree.schedule(args))
    if tested is not None:
        trainer.epoch = tested.epoch
    trainer.fitted_start = dense_init is not None
    if state is not None:
        trainer.load_state(state)  # refuses a state that does not fit the model, still before any write
    barrier(env)  # every process has checked the folder and the state before the main one writes
    experiment.create(args, info, dense_init.counts_record() if dense_init is not None else None)
    barrier(env)  # a replaced evaluation folder is gone before any process writes into the new one
    experiment.log(f"{tree.name}: --model {args.model} on {runtime.device}, {env.world_size} process(es)")
    if tested is not None:
        experiment.log(f"testing {tested.weights} (checkpoint {tested.checkpoint}, epoch {tested.epoch}) of "
                       f"{tested.run} with the run's options")
    if dense_init is not None:
        dense_init.write(experiment)
    if tree.log_model(args):
        experiment.log(str(model))
    if args.precision == "half" and not args.test_only:
        experiment.warn(HALF_WARNING)
    try:
        trainer.fit()
    finally:
        trainer.release()  # the process group must end at teardown, not at interpreter exit
    return trainer


def _calibration_loader(tree: Tree, args: argparse.Namespace, runtime: Runtime):
    """The training set in order, as --basis_init's calibration and BatchNorm re-estimation read it."""
    train_set = tree.build_train_set(args)
    return _loader(tree, args.data_train, train_set, True, args.batch_size, SequentialSampler(train_set),
                   args, runtime)


def _loader(tree: Tree, name: str, dataset, train: bool, batch_size: int, sampler, args: argparse.Namespace,
            runtime: Runtime):
    if tree.device_loader is not None:
        loader = tree.device_loader(name, dataset, train, batch_size, sampler, args, runtime.device)
        if loader is not None:
            return loader
    # The official default (6 workers) exceeds small machines' cores; more workers than cores only
    # adds start-up time and a PyTorch warning (data order does not depend on the count; augmentation
    # draws, made in the workers, do, as with any change of --n_threads).
    workers = min(args.n_threads, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else (os.cpu_count() or 1))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=runtime.device.type == "cuda")
