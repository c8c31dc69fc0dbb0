"""Testing a saved run: its options come from the run, its results go to RUN/eval/<sets>-<checkpoint>/
and never into the training record; Demo on a run's weights; no test without trained weights."""

import hashlib
import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from threads import single_thread

from filter_basis.engine import cli_main, run
from filter_basis.engine.checkpoint import load_checkpoint
from image_classification import option
from image_classification.tree import TREE

TRAIN = ["--model", "ResNet_Basis", "--depth", "8", "--k_size2", "1", "--data_train", "Synthetic",
         "--data_test", "Synthetic", "--n_train", "64", "--n_test", "32", "--batch_size", "16", "--cpu",
         "--n_threads", "0", "--epochs", "2", "--lr", "0.05", "--decay", "step-1", "--momentum", "0.8",
         "--save_models"]
COMMON = ["--cpu", "--n_threads", "0"]  # this invocation's own: never taken from the run


def _snapshot(folder):
    """{relative path: sha256} of every file under ``folder`` (eval/ left out)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "eval" not in p.relative_to(folder).parts}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch ResNet_Basis run on Synthetic (tests work on copies)."""
    root = tmp_path_factory.mktemp("trained")
    with single_thread():
        run(TREE, option.parse_args(TRAIN + ["--dir_save", str(root), "--save", "run"]))
    return root / "run"


@pytest.fixture
def copied(trained, tmp_path):
    """``--dir_save`` holding a copy of the trained run as ``run``."""
    shutil.copytree(trained, tmp_path / "exp" / "run")
    return tmp_path / "exp"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_test_on_another_set_leaves_the_training_record_alone(copied, capsys):
    folder = copied / "run"
    before = _snapshot(folder)
    argv = ["--load", "run", "--test_only", "--data_test", "Digits", "--n_test", "20",
            "--dir_save", str(copied)] + COMMON
    assert cli_main(TREE, argv) == 0  # no training option repeated: they come from the run
    assert _snapshot(folder) == before  # results.json, args.json, log.txt, checkpoints: byte-identical
    evaluation = folder / "eval" / "Digits-latest"
    assert sorted(p.name for p in evaluation.iterdir() if not p.name.startswith("plot_")) == \
        ["args.json", "log.txt", "results.json", "run.json", "summary.json"]
    [record] = json.loads((evaluation / "results.json").read_text())
    assert record["epoch"] == 2 and record["checkpoint"] == "latest"
    assert record["weights"] == str((folder / "model" / "model_latest.pt").resolve())
    assert set(record["metrics"]) == {"top1_error", "top5_error", "loss"}
    assert "train_loss" not in record
    options = json.loads((evaluation / "args.json").read_text())
    assert options["data_test"] == "Digits" and options["n_test"] == 20 and options["test_only"]
    assert options["model"] == "ResNet_Basis" and options["depth"] == 8 and options["momentum"] == 0.8
    meta = json.loads((evaluation / "run.json").read_text())
    assert meta["kind"] == "evaluation" and meta["checkpoint"] == "latest" and meta["epoch"] == 2
    assert meta["data_test"] == "Digits" and meta["status"] == "finished" and meta["run"] == str(folder)
    assert meta["tree"] == "image_classification"
    log = (evaluation / "log.txt").read_text()
    assert "[Epoch 2] test: loss" in log and str(folder / "model" / "model_latest.pt") in log


def test_the_latest_checkpoint_gives_the_runs_own_numbers(copied):
    """Same set, same checkpoint: the evaluation repeats the run's last record exactly."""
    run(TREE, option.parse_args(["--load", "run", "--test_only", "--dir_save", str(copied)] + COMMON))
    results = json.loads((copied / "run" / "results.json").read_text())
    [record] = json.loads((copied / "run" / "eval" / "Synthetic-latest" / "results.json").read_text())
    assert record["metrics"] == results[-1]["metrics"]


def test_resume_n_and_a_file_of_the_run_pick_the_checkpoint(copied):
    """--resume N tests model/model_N.pt (eval/<set>-epochN); --pretrained RUN/model/model_best.pt without
    --save tests the best model into eval/<set>-best; each gives that epoch's numbers of the run."""
    folder = copied / "run"
    results = {r["epoch"]: r["metrics"] for r in json.loads((folder / "results.json").read_text())}
    run(TREE, option.parse_args(["--load", "run", "--test_only", "--resume", "1", "--dir_save", str(copied)]
                                + COMMON))
    [first] = json.loads((folder / "eval" / "Synthetic-epoch1" / "results.json").read_text())
    assert first["epoch"] == 1 and first["checkpoint"] == "epoch1" and first["metrics"] == results[1]
    run(TREE, option.parse_args(["--pretrained", str(folder / "model" / "model_best.pt"), "--test_only"]
                                + COMMON))
    [best] = json.loads((folder / "eval" / "Synthetic-best" / "results.json").read_text())
    assert best["checkpoint"] == "best" and best["metrics"] in results.values()
    assert sorted(p.name for p in (folder / "eval").iterdir()) == ["Synthetic-best", "Synthetic-epoch1"]


def test_a_missing_checkpoint_is_one_line(copied, capsys):
    before = _snapshot(copied / "run")
    argv = ["--load", "run", "--test_only", "--resume", "7", "--dir_save", str(copied)] + COMMON
    assert cli_main(TREE, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model_7.pt does not exist" in err and "model_best.pt" in err
    assert _snapshot(copied / "run") == before and not (copied / "run" / "eval").exists()


def test_a_new_evaluation_replaces_its_own_folder_only(copied):
    folder = copied / "run"
    argv = ["--load", "run", "--test_only", "--data_test", "Digits", "--n_test", "20",
            "--dir_save", str(copied)] + COMMON
    assert cli_main(TREE, argv) == 0
    assert cli_main(TREE, ["--load", "run", "--test_only", "--dir_save", str(copied)] + COMMON) == 0
    other = _snapshot(folder / "eval" / "Synthetic-latest")
    (folder / "eval" / "Digits-latest" / "stale.txt").write_text("from the previous evaluation\n")
    before = _snapshot(folder)
    argv[argv.index("--n_test") + 1] = "10"
    assert cli_main(TREE, argv) == 0
    assert not (folder / "eval" / "Digits-latest" / "stale.txt").exists()
    [record] = json.loads((folder / "eval" / "Digits-latest" / "results.json").read_text())
    assert json.loads((folder / "eval" / "Digits-latest" / "args.json").read_text())["n_test"] == 10
    assert record["epoch"] == 2
    assert _snapshot(folder / "eval" / "Synthetic-latest") == other and _snapshot(folder) == before


def test_a_folder_the_engine_did_not_write_is_never_replaced(copied, capsys):
    mine = copied / "run" / "eval" / "Synthetic-latest"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine\n")
    assert cli_main(TREE, ["--load", "run", "--test_only", "--dir_save", str(copied)] + COMMON) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(mine) in err and "--save NAME" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_training_options_are_taken_from_the_run_and_not_compared(copied):
    """Only the options that change the model's state_dict or forward pass are compared."""
    argv = ["--load", "run", "--test_only", "--dir_save", str(copied), "--batch_size", "7", "--lr", "0.3",
            "--decay", "step-3", "--optimizer", "ADAM", "--epochs", "9", "--momentum", "0.5",
            "--weight_decay", "0.01", "--data_train", "Synthetic", "--n_train", "5"] + COMMON
    assert cli_main(TREE, argv) == 0
    options = json.loads((copied / "run" / "eval" / "Synthetic-latest" / "args.json").read_text())
    assert options["batch_size"] == 7 and options["optimizer"] == "ADAM"  # recorded as given, not compared
    saved = json.loads((copied / "run" / "args.json").read_text())
    assert saved["batch_size"] == 16 and saved["optimizer"] == "SGD"


@pytest.mark.parametrize("given, shown", [(["--depth", "14"], "--depth 14 (saved 8)"),
                                          (["--model", "ResNet"], "--model ResNet (saved ResNet_Basis)"),
                                          (["--k_size2", "3"], "--k_size2 3 (saved 1)")])
def test_model_options_that_differ_are_refused(copied, capsys, given, shown):
    before = _snapshot(copied / "run")
    assert cli_main(TREE, ["--load", "run", "--test_only", "--dir_save", str(copied)] + given + COMMON) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and shown in err and "args.json" in err
    assert _snapshot(copied / "run") == before and not (copied / "run" / "eval").exists()


def test_pretrained_with_save_is_a_folder_of_its_own(copied):
    folder = copied / "run"
    before = _snapshot(folder)
    weights = folder / "model" / "model_best.pt"
    argv = ["--pretrained", str(weights), "--test_only", "--save", "new", "--dir_save", str(copied)] + COMMON
    assert cli_main(TREE, argv) == 0  # the model options come from the run beside the file
    [record] = json.loads((copied / "new" / "results.json").read_text())
    assert record["weights"] == str(weights.resolve()) and record["checkpoint"] == "best"
    assert json.loads((copied / "new" / "args.json").read_text())["pretrained"] == str(weights)
    assert _snapshot(folder) == before and not (folder / "eval").exists()
    # a file outside any run: a folder of its own too, recording the file
    shutil.copy(weights, copied / "weights.pt")
    argv = ["--pretrained", str(copied / "weights.pt"), "--test_only", "--save", "plain", "--model",
            "ResNet_Basis", "--depth", "8", "--k_size2", "1", "--data_test", "Synthetic", "--n_test", "32",
            "--dir_save", str(copied)] + COMMON
    assert cli_main(TREE, argv) == 0
    [plain] = json.loads((copied / "plain" / "results.json").read_text())
    assert plain["weights"] == str((copied / "weights.pt").resolve())
    assert plain["metrics"] == record["metrics"]


def test_a_test_without_trained_weights_is_refused(tmp_path, capsys):
    argv = ["--model", "ResNet", "--depth", "8", "--data_test", "Synthetic", "--test_only",
            "--dir_save", str(tmp_path / "exp")] + COMMON
    assert cli_main(TREE, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--test_only without trained weights" in err
    assert "--load RUN" in err and "--pretrained FILE" in err
    assert not (tmp_path / "exp").exists()


# ----- super-resolution: Demo on a run's weights -----
SR_TRAIN = ["--model", "EDSR", "--n_resblocks", "1", "--n_feats", "8", "--res_scale", "0.5", "--scale", "2",
            "--data_train", "Photos", "--n_train", "1", "--patch_size", "24", "--batch_size", "1",
            "--test_every", "2", "--epochs", "1", "--data_test", "Set5", "--cpu", "--n_threads", "0"]


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory, repo_root):
    """A 1-epoch EDSR of non-default size (8 features, 1 block) and its data folder."""
    from super_resolution.main import main

    root = tmp_path_factory.mktemp("sr")
    (root / "data" / "benchmark" / "Set5").mkdir(parents=True)
    shipped = repo_root / "datasets" / "benchmark" / "Set5" / "HR"
    (root / "data" / "benchmark" / "Set5" / "HR").symlink_to(shipped)
    with single_thread():
        assert main(SR_TRAIN + ["--dir_data", str(root / "data"), "--dir_save", str(root / "exp"),
                                "--save", "edsr"]) == 0
    return root / "exp" / "edsr"


def test_demo_with_only_a_runs_weights_file(sr_run, tmp_path, demo_folder, capsys):
    from super_resolution.main import main
    from super_resolution.model import build_model, load_pretrained
    from super_resolution.option import parse_args

    run_copy = tmp_path / "edsr"
    shutil.copytree(sr_run, run_copy)
    before = _snapshot(run_copy)
    weights = run_copy / "model" / "model_best.pt"
    argv = ["--data_test", "Demo", "--dir_demo", str(demo_folder), "--test_only", "--pre_train", str(weights),
            "--cpu"]
    assert main(argv) == 0
    out = run_copy / "eval" / "Demo-best" / "results" / "Demo_x2"
    saved = sorted(out.iterdir())
    assert [p.name for p in saved] == ["a_SR.png", "alpha_SR.png", "grey_SR.png"]
    printed = capsys.readouterr().out
    for path in saved:
        assert f"wrote {path}" in printed
    assert _snapshot(run_copy) == before
    # the images are the trained model's output (built here with the run's options, given by hand)
    args = parse_args(["--model", "EDSR", "--n_resblocks", "1", "--n_feats", "8", "--res_scale", "0.5",
                       "--scale", "2", "--test_only"])
    model = build_model(args)
    load_pretrained(model, weights, args)
    lr = torch.from_numpy(iio.imread(demo_folder / "a.png")).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = model.eval()(lr)[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(iio.imread(out / "a_SR.png"), expected)
    meta = json.loads((run_copy / "eval" / "Demo-best" / "run.json").read_text())
    assert meta["kind"] == "evaluation" and meta["tree"] == "super_resolution"
    assert meta["checkpoint"] == "best"


def test_a_sr_run_is_tested_on_its_own_set_without_retyping(sr_run, tmp_path):
    from super_resolution.main import main

    shutil.copytree(sr_run, tmp_path / "exp" / "edsr")
    assert main(["--load", "edsr", "--test_only", "--dir_save", str(tmp_path / "exp"), "--cpu",
                 "--dir_data", str(sr_run.parent.parent / "data")]) == 0
    results = json.loads((tmp_path / "exp" / "edsr" / "results.json").read_text())
    [record] = json.loads((tmp_path / "exp" / "edsr" / "eval" / "Set5-latest" / "results.json").read_text())
    assert record["metrics"] == results[-1]["metrics"] and record["epoch"] == 1


def test_an_override_that_does_not_fit_the_weights_names_the_run_options(sr_run, tmp_path, demo_folder,
                                                                        capsys):
    from super_resolution.main import main

    argv = ["--data_test", "Demo", "--dir_demo", str(demo_folder), "--test_only", "--cpu", "--n_feats", "16",
            "--pre_train", str(sr_run / "model" / "model_best.pt"), "--save", "x",
            "--dir_save", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(sr_run / "args.json") in err and "--n_feats" in err
    assert not (tmp_path / "x").exists()


def test_demo_without_weights_is_refused(tmp_path, demo_folder, capsys):
    from super_resolution.main import main

    argv = ["--model", "EDSR", "--n_resblocks", "1", "--n_feats", "8", "--data_test", "Demo", "--dir_demo",
            str(demo_folder), "--test_only", "--cpu", "--dir_save", str(tmp_path / "exp")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--pre_train FILE" in err
    assert not (tmp_path / "exp").exists()
    assert load_checkpoint  # (imported for the other tests' readers)


def test_the_options_given_are_what_was_typed_or_set_by_the_template():
    """What a test takes from the run depends on what was given, not on values: an option typed with its
    default value still overrides the run's, and --template's values count as given."""
    from filter_basis.engine.options import given_names

    args = option.parse_args(["--template", "ResNet18", "--lr", "0.1", "--n_test", "0", "--test_only"])
    given = given_names(args)
    assert {"template", "lr", "n_test", "test_only", "depth"} <= given  # depth 18: set by the template
    assert "batch_size" not in given and "model" not in given
    assert "given" not in vars(args)  # never reaches args.json
