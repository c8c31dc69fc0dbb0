"""Option parsing: official names and per-tree defaults, templates, post-processing, validation errors."""

import csv
import json
import shlex

import pytest

from filter_basis.engine import cli_main
from filter_basis.engine.options import REPO_ROOT
from filter_basis.engine.templates import TemplateTable
from filter_basis.errors import OptionError, UserError
from image_classification import option as cls_option
from image_classification.tree import TREE as CLS_TREE
from super_resolution import option as sr_option

PARSERS = {"image_classification": cls_option, "super_resolution": sr_option}


def official_options(reference_dir, tree):
    """Option names of the official option.py of ``tree`` (tests/data/official/official_options.txt)."""
    names, current = [], None
    for line in (reference_dir / "official_options.txt").read_text().splitlines():
        if line.startswith("# "):
            current = line.split()[1].split("/")[0]
        elif line.startswith("'--") and current == tree:
            names.append(line.split("'")[1])
    return names


@pytest.mark.parametrize("tree", sorted(PARSERS))
def test_every_official_option_is_accepted(reference_dir, tree):
    names = official_options(reference_dir, tree)
    assert len(names) > 70
    known = {a for action in PARSERS[tree].build_parser()._actions for a in action.option_strings}
    assert [n for n in names if n not in known] == []


def test_tree_defaults_follow_the_official_trees():
    cls = cls_option.parse_args([])
    sr = sr_option.parse_args([])
    shared = ("optimizer", "resume", "test_every", "loss", "batch_size", "lr", "weight_decay", "epochs")
    assert [getattr(cls, name) for name in shared] == ["SGD", -1, 1000, "1*CE", 128, 0.1, 1e-4, 300]
    assert [getattr(sr, name) for name in shared] == ["ADAM", 0, 2000, "1*L1", 16, 1e-4, 0, 300]
    assert cls.dir_data == sr.dir_data == str(REPO_ROOT / "datasets")
    assert cls.dir_save == sr.dir_save == str(REPO_ROOT / "experiment")
    assert (cls.decay, sr.lr_decay, sr.decay_type, sr.scale) == ("step-150-225", 200, "step", [4])


def _official_commands(reference_dir, tree):
    with open(reference_dir / "official_commands.tsv") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["tree"] == tree]
    return [shlex.split(r["command"].replace("MODEL_PATH/", ""))[2:] for r in rows]


@pytest.mark.parametrize("tree", sorted(PARSERS))
def test_official_commands_parse(reference_dir, tree, tmp_path):
    commands = _official_commands(reference_dir, tree)
    assert len(commands) >= 18
    for argv in commands:
        # Checkpoint files of the official runs are not shipped: stand-ins with the same names.
        for i, arg in enumerate(argv[:-1]):
            if arg in ("--pretrained", "--pre_train"):
                argv[i + 1] = str(tmp_path / argv[i + 1])
                (tmp_path / argv[i + 1]).touch()
        args = PARSERS[tree].parse_args(argv)
        assert args.model == argv[argv.index("--model") + 1]


def test_official_classification_recipe_values():
    args = cls_option.parse_args(shlex.split(
        "--template DenseNet --model DenseNet_Basis --batch_size 64 --epochs 400 --decay step-250-325 "
        "--transition_group 6 --depth 40 --n_basis 36 --save DenseNet_Basis_N36T6"))
    assert (args.nesterov, args.bottleneck, args.reduction, args.weight_decay, args.print_every) == \
        (True, False, 1, 1e-4, 50)
    assert (args.batch_size, args.epochs, args.decay) == (64, 400, "step-250-325")
    assert (args.depth, args.n_basis) == (40, 36)


def test_templates_match_by_substring_and_linear_scales():
    args = cls_option.parse_args(["--template", "ResNet50_CIFAR100", "--linear", "4", "--lr", "0.1"])
    assert (args.depth, args.bottleneck) == (50, True)
    assert args.data_train == args.data_test == "CIFAR100"
    assert (args.batch_size, args.lr, args.decay, args.print_every) == (512, 0.4, "warmstep-150-225", 12)
    bc = cls_option.parse_args(["--template", "DenseNet_BC"])
    assert (bc.bottleneck, bc.reduction) == (True, 0.5)


def test_a_template_overriding_the_command_line_says_so_once_per_option(capsys):
    args = cls_option.parse_args(["--template", "ResNet", "--weight_decay", "5e-4", "--print_every", "50",
                                  "--lr", "0.2"])
    assert (args.weight_decay, args.print_every, args.lr) == (1e-4, 50, 0.2)  # the official precedence
    # --print_every: the template sets the value given; --lr: no template sets it; defaults: not given
    assert capsys.readouterr().err.splitlines() == [
        "note: --template ResNet sets --weight_decay 0.0001, overriding the command line's 0.0005"]
    sr_option.parse_args(["--template", "GAN", "--lr", "1e-3", "--epochs", "200"])
    assert capsys.readouterr().err.splitlines() == [
        "note: --template GAN sets --lr 5e-05, overriding the command line's 0.001"]
    cls_option.parse_args(["--template", "DenseNet_BC"])
    assert capsys.readouterr().err == ""


def test_template_table_lists_known_rules_for_an_unknown_template():
    table = TemplateTable()
    table.rule("A")(lambda args, t: None)
    table.rule("B")(lambda args, t: None)
    with pytest.raises(OptionError, match=r"unknown --template 'Z'.*A, B"):
        table.apply(type("Args", (), {"template": "Z"})())


def test_sr_post_processing():
    args = sr_option.parse_args(["--scale", "2+3", "--shift_mean", "False", "--epochs", "0"])
    assert (args.scale, args.shift_mean, args.epochs) == ([2, 3], False, 0)


def test_ignored_options_are_accepted_with_a_note(capsys):
    args = cls_option.parse_args(["--multi", "full-128", "--n_bits", "8"])
    assert args.multi == "full-128"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("ignored" in line for line in err)
    assert "--multi" in err[0] and "--n_bits" in err[1]
    cls_option.parse_args([])
    assert capsys.readouterr().err == ""


BAD = [
    (cls_option, ["--lr", "-1"], "--lr"),
    (cls_option, ["--epochs", "-3"], "--epochs"),
    (cls_option, ["--decay", "foo"], "--decay 'foo'"),
    (cls_option, ["--decay", "step-225-150"], "increasing"),
    (cls_option, ["--loss", "1*XYZ"], "'XYZ'; known: CE"),
    (cls_option, ["--loss", "L1"], "WEIGHT*TYPE"),
    (cls_option, ["--precision", "quad"], "--precision"),
    (cls_option, ["--amp", "fp8"], "--amp"),
    (cls_option, ["--amp", "bf16", "--precision", "half"], "--amp bf16"),
    (cls_option, ["--n_GPUs", "0"], "--n_GPUs"),
    (cls_option, ["--model", "Foo"], "--model 'Foo'"),
    (cls_option, ["--template", "Foo"], "--template 'Foo'"),
    (cls_option, ["--data_train", "Foo"], "'Foo'"),
    (cls_option, ["--optimizer", "LBFGS"], "--optimizer"),
    (cls_option, ["--top", "5"], "--top"),
    (cls_option, ["--betas", "0.9"], "--betas"),
    (cls_option, ["--pretrained", "/no/such/file.pt"], "--pretrained"),
    (cls_option, ["--load", "a", "--reset"], "--reset"),
    (cls_option, ["--save", "../outside"], "--save"),
    (cls_option, ["--save", "."], "--save '.': expected the name of a folder inside --dir_save"),
    (cls_option, ["--save", ""], "--save '': expected the name of a folder inside --dir_save"),
    (cls_option, ["--save", "a/.."], "--save 'a/..'"),
    (cls_option, ["--save", "/tmp/x"], "--save '/tmp/x'"),
    (cls_option, ["--load", "a/.."], "--load 'a/..'"),
    (cls_option, ["--nonexistent_option", "1"], "unrecognized arguments"),
    (sr_option, ["--scale", "5x"], "--scale '5x'"),
    (sr_option, ["--decay_type", "cosine"], "--decay_type"),
    (sr_option, ["--loss", "1*CE"], "'CE'; known: L1"),
    (sr_option, ["--shift_mean", "maybe"], "--shift_mean"),
    (sr_option, ["--pre_train", "/no/such/file.pt"], "--pre_train"),
]


@pytest.mark.parametrize("module, argv, needle", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_bad_values_are_one_line_option_errors(module, argv, needle):
    with pytest.raises(UserError) as info:
        module.parse_args(argv)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_summary_ignores_missing_checkpoint_files(capsys):
    argv = ["--summary", "--pretrained", "/no/such/file.pt", "--model", "ResNet", "--depth", "8"]
    args = cls_option.parse_args(argv)
    assert args.summary
    assert cli_main(CLS_TREE, argv) == 0  # the summary runs without reading the file
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == "ResNet"
