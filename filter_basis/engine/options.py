"""Command-line options both trees share, checked value types, and the parse pipeline.

Names and meanings follow the official ``option.py`` files; each tree passes its own official defaults
where the two official trees differ.  Every rejection is an :class:`OptionError` naming the option, the
value and what is accepted (one line on stderr, exit status 2).
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from ..errors import OptionError
from ..init_scale import DEFAULT_INIT, INIT_SCHEMES
from ..suggest import close_matches, did_you_mean
from .distributed import launched_processes
from .losses import check_loss_string

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_PATH = ("", ".")  # how the official trees spell "not given" for path options
SAVE_DEFAULT = "test"  # official default of --save


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except the empty ones (off switches, unset paths)."""

    def _get_help_string(self, action):
        if action.default in (None, False, "") or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class OptionParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are :class:`OptionError` instead of usage text and ``exit(2)``; a
    misspelt option or choice gets "did you mean", and ``--help`` lists the registered names."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.ignored: list = []
        # () -> [(what, names)], e.g. [("models (--model)", MODELS)]: listed at the end of --help; a
        # callable, so that the registries are imported only when help is asked for
        self.registered: Callable[[], list] = lambda: []

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            known = [o.lstrip("-") for o in self._option_string_actions]
            words = [w.split("=")[0].lstrip("-") for w in extras if w.startswith("-")]
            close = [match for w in words for match in close_matches(w, known)]
            self.error(f"unrecognized arguments: {' '.join(extras)}"
                       + (f"; did you mean --{close[0]}?" if close else ""))
        return namespace

    def error(self, message):
        choice = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if choice:
            message += did_you_mean(choice.group(1), re.findall(r"'(.*?)'", choice.group(2)))
        raise OptionError(message)

    def format_help(self) -> str:
        text = super().format_help()
        listed = [textwrap.fill(f"{what}: {', '.join(names)}", width=100, initial_indent="  ",
                                subsequent_indent="    ") for what, names in self.registered()]
        return text + ("\nregistered names:\n" + "\n".join(listed) + "\n" if listed else "")


def _checked(kind: str, convert: Callable, accept: Callable) -> Callable:
    def parse(text):
        try:
            value = convert(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not accepted; expected {kind}")
        return value
    parse.__name__ = kind
    return parse


positive_int = _checked("an integer >= 1", int, lambda v: v >= 1)
nonnegative_int = _checked("an integer >= 0", int, lambda v: v >= 0)
positive_float = _checked("a number > 0", float, lambda v: v > 0)
nonnegative_float = _checked("a number >= 0", float, lambda v: v >= 0)
unit_float = _checked("a number in [0, 1)", float, lambda v: 0 <= v < 1)
fraction = _checked("a fraction in (0, 1], e.g. 0.3", float, lambda v: 0 < v <= 1)


def _betas(text):
    parts = text.replace("(", "").replace(")", "").replace(",", " ").split()
    return tuple(float(p) for p in parts) if len(parts) == 2 else None


betas_pair = _checked("two numbers in [0, 1) such as 0.9,0.999", _betas, lambda v: all(0 <= b < 1 for b in v))

# Defaults the two official trees agree on; TREE_OPTIONS are the shared options whose official default
# differs between the trees, so each tree's option.py must give them (docs/design.md#command-lines).
COMMON_DEFAULTS = {"n_threads": 6, "epochs": 300, "print_every": 100}
TREE_OPTIONS = ("template", "optimizer", "resume", "test_every", "loss", "batch_size", "lr", "weight_decay",
                "load", "pre_train_optim")


def add_common_options(parser: OptionParser, tree_defaults: dict) -> None:
    """The options of both official trees (hardware, data/save folders, optimisation, logging, precision)."""
    missing = set(TREE_OPTIONS) - set(tree_defaults)
    unknown = set(tree_defaults) - set(TREE_OPTIONS)
    if missing or unknown:
        raise KeyError(f"tree defaults must give exactly {sorted(TREE_OPTIONS)}; missing {sorted(missing)}, "
                       f"unknown {sorted(unknown)}")
    d = {**COMMON_DEFAULTS, **tree_defaults}
    add = parser.add_argument

    hw = parser.add_argument_group("hardware and precision")
    hw.add_argument("--n_threads", type=nonnegative_int, default=d["n_threads"],
                    help="data-loading worker processes (0: load in the main process)")
    hw.add_argument("--cpu", action="store_true", help="use the CPU even if CUDA is available")
    hw.add_argument("--n_GPUs", type=positive_int, default=1,
                    help="GPUs; more than 1 needs torchrun --nproc_per_node N (one process per GPU)")
    hw.add_argument("--seed", type=int, default=1, help="random seed")
    hw.add_argument("--precision", default="single", choices=("single", "half"),
                    help="single: float32; half: the whole model in float16 (official)")
    hw.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"),
                    help="mixed precision with torch.autocast (fp16 uses a GradScaler on CUDA)")
    hw.add_argument("--channels_last", action="store_true", help="channels-last memory format")
    hw.add_argument("--compile", action="store_true", help="torch.compile the model")

    add("--debug", action="store_true", help="accepted for compatibility; no effect")
    add("--template", default=d["template"], help="presets from the tree's template.py (substring match)")
    add("--dir_data", default=str(REPO_ROOT / "datasets"), help="dataset root folder")

    run = parser.add_argument_group("training and testing")
    run.add_argument("--reset", action="store_true", help="start the experiment folder afresh")
    run.add_argument("--test_every", type=positive_int, default=d["test_every"],
                     help="batches per epoch in the SR tree (official meaning); accepted in classification")
    run.add_argument("--test_only", action="store_true", help="evaluate once and stop")
    run.add_argument("--epochs", type=nonnegative_int, default=d["epochs"],
                     help="epochs to train (0: unlimited); trained exactly in both trees")
    run.add_argument("--resume", type=int, default=d["resume"],
                     help="with --load: -1 (or 0) continues from the latest training state")
    run.add_argument("--batch_size", type=positive_int, default=d["batch_size"],
                     help="training batch size (split evenly over torchrun processes)")
    run.add_argument("--basis_form", default="auto", choices=("auto", "decomposed", "merged"),
                     help="how basis layers without layers between basis and projection compute: "
                          "the cheaper form by FLOPs (auto), basis conv then projection, or one dense "
                          "conv composed every step (same parameters and results)")
    run.add_argument("--summary", action="store_true",
                     help="print the model's complexity (last line: JSON) and exit; reads and writes nothing")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--lr", type=positive_float, default=d["lr"], help="learning rate")
    opt.add_argument("--gamma", type=positive_float, default=0.1, help="learning-rate decay factor")
    opt.add_argument("--optimizer", default=d["optimizer"], choices=("SGD", "ADAM", "RMSprop"),
                     help="optimiser")
    opt.add_argument("--momentum", type=nonnegative_float, default=0.9, help="SGD momentum")
    opt.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    opt.add_argument("--betas", type=betas_pair, default=None, help="ADAM betas, e.g. 0.9,0.999")
    opt.add_argument("--beta1", type=unit_float, default=0.9, help="ADAM beta1 (when --betas is not given)")
    opt.add_argument("--beta2", type=unit_float, default=0.999, help="ADAM beta2 (when --betas is not given)")
    opt.add_argument("--epsilon", type=positive_float, default=1e-8, help="ADAM/RMSprop epsilon")
    opt.add_argument("--weight_decay", type=nonnegative_float, default=d["weight_decay"], help="weight decay")
    opt.add_argument("--loss", default=d["loss"], help="WEIGHT*TYPE terms joined by '+', e.g. 1*L1+0.5*MSE")
    opt.add_argument("--skip_threshold", type=positive_float, default=1e6,
                     help="skip a batch whose loss exceeds this times the previous epoch's mean loss")
    opt.add_argument("--loss_norm", action="store_true",
                     help="add the approximation regulariser: pull the basis layers towards the dense "
                          "filters of --pre_train_optim")
    opt.add_argument("--pre_train_optim", default=d["pre_train_optim"],
                     help="--loss_norm: state_dict of the dense baseline model (ours or the official layout)")

    init = parser.add_argument_group("starting from a trained dense network")
    init.add_argument("--basis_init", default="",
                      help="state_dict of the dense baseline of --model (ours or the official layout): fit "
                           "every basis layer to it (--basis_fit) and copy every other tensor")
    init.add_argument("--target_compression", type=fraction, default=None,
                      help="with --basis_init: choose the filters per basis so that the weights are at most "
                           "this fraction of the baseline's (chosen by --rank_select)")
    init.add_argument("--bn_batches", type=nonnegative_int, default=10,
                      help="with --basis_init: training batches to re-estimate BatchNorm statistics on "
                           "(0: keep the baseline's)")
    # --basis_fit, --fit_batches, --fit_rounds, --rank_select, --target_flops: see docs/compressing.md
    init.add_argument("--basis_fit", choices=("data", "weights"), default="data",
                      help="with --basis_init: fit what the dense layers compute on --fit_batches training "
                           "batches (data), or their filters in closed form (weights: linear layers only)")
    init.add_argument("--fit_batches", type=positive_int, default=32,
                      help="with --basis_init: training batches the data fit and --rank_select sensitivity "
                           "calibrate on")
    init.add_argument("--fit_rounds", type=nonnegative_int, default=0,
                      help="with --basis_fit data: then alternate Adam steps on the linear layers' bases "
                           "and least-squares refits of their projections this many times (0: none)")
    init.add_argument("--rank_select", choices=("sensitivity", "energy"), default="sensitivity",
                      help="with a target: choose the filters per basis by measured calibration loss "
                           "(sensitivity) or by spectral energy per weight (energy)")
    init.add_argument("--target_flops", type=fraction, default=None,
                      help="with --basis_init: choose the filters per basis so that the whole model's "
                           "forward FLOPs (as --summary counts them) are at most this fraction of the "
                           "baseline's")
    # --init (docs/initialisation.md): how a freshly built compressed model is initialised
    init.add_argument("--init", default=DEFAULT_INIT, choices=INIT_SCHEMES,
                      help="scaled: every basis, factor and group layer starts with the gain of the dense "
                           "convolution it replaces (the model starts at its baseline's scale); official: "
                           "the official code's initialisation, bit for bit (the paper scripts use it)")

    log = parser.add_argument_group("experiment folder and logging")
    log.add_argument("--dir_save", default=str(REPO_ROOT / "experiment"), help="root of experiment folders")
    log.add_argument("--save", default=SAVE_DEFAULT, help="experiment folder name under --dir_save")
    log.add_argument("--load", default=d["load"], help="continue the run in this folder under --dir_save")
    log.add_argument("--print_every", type=positive_int, default=d["print_every"],
                     help="log the training loss every N batches")
    log.add_argument("--save_models", action="store_true", help="keep the model of every epoch")
    # start-or-continue and the run record (docs/experiments.md)
    log.add_argument("--auto_resume", action="store_true",
                     help="with --save NAME: continue NAME when it holds a training state, start it when it "
                          "does not exist (one command line for a job that may be requeued)")
    log.add_argument("--made_by", default=None, help=argparse.SUPPRESS)  # the tool that started the run
    log.add_argument("--tensorboard", action="store_true",
                     help="also write each epoch's losses, learning rate and test metrics (SR: a few test "
                          "images) to RUN/tensorboard/ for TensorBoard")
    # preemption and cluster runs (docs/cluster.md)
    log.add_argument("--save_every_steps", type=nonnegative_int, default=0,
                     help="also save the training state every N batches within an epoch (0: at epoch ends "
                          "only); a scheduler's SIGTERM/SIGUSR1 always saves one before the run stops")


def add_ignored_options(parser: OptionParser, specs: Iterable[tuple]) -> None:
    """Official options that served other experiments or were hard-wired: accepted, ignored, noted on stderr.

    Each spec is ``(flag, type, default)``; ``type`` ``bool`` makes a store_true flag.
    """
    group = parser.add_argument_group("accepted for compatibility with the official scripts, ignored")
    for flag, kind, default in specs:
        if kind is bool:
            group.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
        else:
            group.add_argument(flag, type=kind, default=default, help=argparse.SUPPRESS)
        parser.ignored.append((flag.lstrip("-"), default if kind is not bool else False))


def ignored_names(specs: Iterable[tuple]) -> tuple:
    """The option names of :func:`add_ignored_options` specs (they may change freely on --load)."""
    return tuple(flag.lstrip("-") for flag, _, _ in specs)


def str2bool(args: argparse.Namespace) -> None:
    """Official post-processing: string values "True"/"False" become booleans."""
    for name, value in vars(args).items():
        if value in ("True", "False"):
            setattr(args, name, value == "True")


def is_given(path: Optional[str]) -> bool:
    """Whether a path (or --template) option was set ('' and '.' are the official trees' "not given")."""
    return path not in NO_PATH and path is not None


def _validate_common(args: argparse.Namespace) -> None:
    # --loss is checked with the tree's loss types in check_tree_names, the schedule by the tree's validate
    if args.precision == "half" and args.amp != "none":
        raise OptionError(f"--amp {args.amp} cannot be combined with --precision half; use one of them")
    if args.reset and is_given(args.load):
        raise OptionError(f"--reset with --load {args.load!r}: use --load to continue a run or --reset "
                          f"to start --save afresh, not both")
    if getattr(args, "auto_resume", False) and (args.reset or is_given(args.load)):
        both = "--reset" if args.reset else f"--load {args.load!r}"
        raise OptionError(f"--auto_resume with {both}: --auto_resume --save NAME starts or continues NAME by "
                          f"itself; give --save NAME alone")
    if is_given(args.load) and args.save not in (SAVE_DEFAULT, args.load):
        raise OptionError(f"--load {args.load!r} with --save {args.save!r}: a continued run stays in its own "
                          f"folder; give --load {args.load} alone (or --save {args.save} alone: a new run)")
    if args.resume > 0 and is_given(args.load) and not args.test_only:  # a test picks model/model_N.pt
        raise OptionError(f"--resume {args.resume} is not supported; accepted: -1 or 0 (continue from the "
                          f"latest training state of --load), or N >= 1 with --test_only (test "
                          f"model/model_N.pt, kept with --save_models)")
    if args.loss_norm and not (args.summary or args.test_only) and not Path(args.pre_train_optim).is_file():
        raise OptionError(f"--loss_norm needs --pre_train_optim FILE: a state_dict of the dense baseline "
                          f"model; {args.pre_train_optim!r} is not a file")
    processes = launched_processes()
    if args.batch_size % processes != 0 and not args.test_only:
        raise OptionError(f"--batch_size {args.batch_size} is not divisible by the {processes} torchrun "
                          f"processes")
    experiment_folder(args.dir_save, args.save, "--save")
    if is_given(args.load):
        experiment_folder(args.dir_save, args.load, "--load")


def experiment_folder(dir_save: str, name: str, option: str) -> Path:
    """``DIR_SAVE/NAME``, refused unless it is a folder strictly inside --dir_save.

    ``''``, ``'.'``, ``'..'`` parts, absolute paths and names that a symbolic link sends anywhere else
    (even to a sibling) are refused: ``--reset`` removes this folder and nothing else.
    """
    parts = Path(name).parts
    folder = Path(dir_save) / name
    if not name or not parts or Path(name).is_absolute() or ".." in parts or \
            folder.resolve() != Path(dir_save).resolve().joinpath(*parts):
        raise OptionError(f"{option} {name!r}: expected the name of a folder inside --dir_save {dir_save!r} "
                          f"(not empty, '.', '..', an absolute path or a symbolic link)")
    return folder


def basis_counts(args: argparse.Namespace, n_bases: int, where: str) -> list:
    """Filters of each of ``n_bases`` bases: ``--n_basis_str`` when given (official syntax
    ``VALUE*COUNT+VALUE*COUNT...``, e.g. ``27*4+40*12``; a bare VALUE counts once), else ``--n_basis``
    for every basis."""
    text = args.n_basis_str or ""
    if not text:
        return [args.n_basis] * n_bases
    counts = []
    for item in text.split("+"):
        value, _, repeat = item.partition("*")
        try:
            value, repeat = int(value), int(repeat) if repeat else 1
        except ValueError:
            value = repeat = 0
        if value < 1 or repeat < 1:
            raise OptionError(f"--n_basis_str {text!r}: {item!r} is not accepted; expected VALUE*COUNT items "
                              f"joined by '+' (integers >= 1), e.g. 27*4+40*12")
        counts += [value] * repeat
    if len(counts) != n_bases:
        raise OptionError(f"--n_basis_str {text!r} gives {len(counts)} numbers; {where} has {n_bases} bases")
    return counts


def counts_string(counts: Sequence[int]) -> str:
    """The ``--n_basis_str`` that gives ``counts`` (runs of equal numbers as VALUE*COUNT)."""
    runs: list = []
    for n in counts:
        if runs and runs[-1][0] == n:
            runs[-1][1] += 1
        else:
            runs.append([n, 1])
    return "+".join(f"{n}*{c}" for n, c in runs)


def n_basis_str_options(args: argparse.Namespace, names: list, counts: list) -> dict:
    """``--target_compression`` for a model with a basis per layer or block: one ``--n_basis_str``."""
    return {"n_basis_str": counts_string(counts)}


def check_file(args: argparse.Namespace, option: str) -> None:
    """A path option that must name an existing file (skipped under --summary, which reads no file)."""
    path = getattr(args, option)
    if is_given(path) and not args.summary and not Path(path).is_file():
        raise OptionError(f"--{option} {path!r}: no such file")


def test_set_names(args: argparse.Namespace) -> list:
    """``--data_test Set5+Set14`` -> ``["Set5", "Set14"]`` (several test sets joined by '+')."""
    return args.data_test.split("+")


def check_tree_names(args: argparse.Namespace, *, models, train_sets, test_sets, loss_types,
                     pretrained_option: str, pretrained_keywords: Sequence[str] = ()) -> None:
    """What every tree validates the same way: --model, --data_train and each '+'-joined --data_test
    name resolve in the tree's registries, --loss uses its loss types, the pretrained file exists
    (unless it is one of the tree's ``pretrained_keywords``, such as ``download``)."""
    models.get(args.model)
    train_sets.get(args.data_train)
    for name in test_set_names(args):
        test_sets.get(name)
    check_loss_string(args.loss, loss_types)
    if getattr(args, pretrained_option) not in pretrained_keywords:
        check_file(args, pretrained_option)
    check_file(args, "basis_init")
    if is_given(args.basis_init) and is_given(getattr(args, pretrained_option)):
        raise OptionError(f"--basis_init and --{pretrained_option} both give the initial weights; use one "
                          f"(--basis_init: a dense baseline, --{pretrained_option}: weights of --model)")
    if args.target_compression is not None and not is_given(args.basis_init):
        raise OptionError(f"--target_compression {args.target_compression:g} needs --basis_init FILE: the "
                          f"filters per basis are chosen from the dense baseline's filters")
    if getattr(args, "target_flops", None) is not None and not is_given(args.basis_init):
        raise OptionError(f"--target_flops {args.target_flops:g} needs --basis_init FILE: the filters per "
                          f"basis are chosen from the dense baseline")


_NOT_GIVEN = object()


class ParsedOptions(argparse.Namespace):
    """The parsed options, plus ``given``: the names set on the command line or by ``--template``.

    ``given`` lives in a slot, outside ``vars()``, so it never reaches ``args.json`` or a comparison of
    options; a test run of a saved experiment takes every other option from the run
    (:mod:`filter_basis.engine.evaluation`).
    """

    __slots__ = ("given",)


def given_names(args: argparse.Namespace) -> Optional[set]:
    """The options set on the command line (or by its ``--template``); ``None`` when unknown (a namespace
    made by hand, not by :func:`parse`)."""
    return getattr(args, "given", None) if isinstance(args, ParsedOptions) else None


def given_options(parser: OptionParser, argv: Optional[Sequence[str]] = None) -> set:
    """Names of the options set on the command line (whatever their value), found by parsing ``argv``
    into a namespace whose attributes are all pre-set, so that argparse fills in no default."""
    probe = argparse.Namespace(**{a.dest: _NOT_GIVEN for a in parser._actions if a.dest != argparse.SUPPRESS})
    parser.parse_args(argv, probe)
    return {name for name, value in vars(probe).items() if value is not _NOT_GIVEN}


def parse(parser: OptionParser, argv: Optional[Sequence[str]] = None, *,
          templates: Callable = lambda args, given: None, postprocess: Callable = lambda args: None,
          validate: Callable = lambda args: None,
          notes: Callable[[argparse.Namespace, set], Iterable[str]] = lambda args, given: ()
          ) -> argparse.Namespace:
    """argparse -> notes for ignored options -> templates (told which options were given, to note the
    ones they override) -> post-processing -> validation -> the tree's notes (told which options were
    given: e.g. an option that --model does not read)."""
    args = parser.parse_args(argv, ParsedOptions())
    for name, default in parser.ignored:
        if getattr(args, name) != default:
            print(f"note: --{name} is accepted for compatibility with the official scripts and ignored",
                  file=sys.stderr)
    given = given_options(parser, argv)
    before = dict(vars(args))
    templates(args, given)
    args.given = given | {name for name, value in before.items() if getattr(args, name) != value}
    str2bool(args)
    postprocess(args)
    _validate_common(args)
    validate(args)
    for line in notes(args, given):
        print(f"note: {line}", file=sys.stderr)
    return args
