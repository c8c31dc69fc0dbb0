"""The run record: run.json as the engine writes it, read_run on new and older folders (best epoch as the
trainer ranks it), evaluations, folder_state, option_drift and mark_status."""

import argparse
import json
import shutil

import pytest

from filter_basis.engine import cli_main, run
from filter_basis.engine.record import (
    RUN_FILE,
    NotAnExperiment,
    derive_best,
    folder_state,
    mark_status,
    option_drift,
    read_run,
)
from image_classification import option
from image_classification.trainer import Trainer as ClsTrainer
from image_classification.tree import TREE
from super_resolution.trainer import Trainer as SRTrainer

TINY = ["--model", "ResNet", "--depth", "8", "--data_train", "Synthetic", "--data_test", "Synthetic+Digits",
        "--n_train", "32", "--n_test", "16", "--batch_size", "16", "--cpu", "--n_threads", "0",
        "--lr", "0.05", "--epochs", "3"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 3-epoch run on two test sets (Synthetic ranks; Digits sorts first), and its trainer."""
    root = tmp_path_factory.mktemp("record")
    trainer = run(TREE, option.parse_args(TINY + ["--dir_save", str(root), "--save", "run",
                                                  "--made_by", "pytest"]))
    return root / "run", trainer


def test_run_json_records_the_run_as_the_trainer_saw_it(trained):
    folder, trainer = trained
    record = json.loads((folder / RUN_FILE).read_text())
    assert (record["format"], record["tree"], record["made_by"]) == (1, "image_classification", "pytest")
    assert (record["epochs_planned"], record["epochs_done"], record["status"]) == (3, 3, "finished")
    best = record["best"]
    assert best == {"epoch": trainer.best["epoch"], "test_set": "Synthetic", "metric": "top1_error",
                    "key": "Synthetic/top1_error", "direction": "min", "value": trainer.best["score"]}
    results = json.loads((folder / "results.json").read_text())
    assert isinstance(results, list) and [r["epoch"] for r in results] == [1, 2, 3]
    assert results[best["epoch"] - 1]["metrics"]["Synthetic"]["top1_error"] == best["value"]
    assert record["basis_counts"] is None


def test_read_run_gives_the_record_typed(trained):
    folder, trainer = trained
    got = read_run(folder)
    assert got.is_experiment and got.finished and got.has_state and got.status == "finished"
    assert (got.tree, got.made_by, got.epochs_planned, got.epochs_done, got.kind) == \
        ("image_classification", "pytest", 3, 3, "training")
    assert got.options["data_test"] == "Synthetic+Digits" and len(got.results) == 3
    assert got.best["epoch"] == trainer.best["epoch"] and got.best_result()["epoch"] == trainer.best["epoch"]
    assert {"run.json", "args.json", "results.json", "training_state.pt", "model/model_best.pt"} <= \
        set(got.files)
    assert got.evaluations == []


def test_an_older_folder_without_run_json_is_read_with_the_same_best(trained, tmp_path):
    folder, trainer = trained
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / RUN_FILE).unlink()
    got = read_run(old)
    assert got.record == {} and got.tree == "image_classification" and got.made_by is None
    assert (got.epochs_planned, got.epochs_done, got.finished, got.status) == (3, 3, True, "finished")
    assert got.best == json.loads((folder / RUN_FILE).read_text())["best"]


def cls_record(epoch, synthetic, digits, top5=50.0, trained=True):
    metrics = {"Digits": {"top1_error": digits, "top5_error": 0.0, "loss": 1.0},
               "Synthetic": {"top1_error": synthetic, "top5_error": top5, "loss": 1.0}}
    return {"epoch": epoch, "metrics": metrics, **({"train_loss": 1.0} if trained else {})}


def old_folder(path, options, results):
    path.mkdir()
    (path / "args.json").write_text(json.dumps(options))
    (path / "results.json").write_text(json.dumps(results))
    return path


def test_older_classification_folder_ranks_by_the_first_test_set_and_keeps_the_first_of_equals(tmp_path):
    """Digits sorts first and is best at epoch 2; Synthetic (the first --data_test) is best at epochs 3
    and 4 equally: the trainer keeps epoch 3; an evaluation appended by an older --test_only is no epoch."""
    results = [cls_record(1, 50.0, 40.0), cls_record(2, 45.0, 10.0), cls_record(3, 20.0, 30.0),
               cls_record(4, 20.0, 30.0), cls_record(4, 0.0, 0.0, trained=False)]
    got = read_run(old_folder(tmp_path / "old", {"data_test": "Synthetic+Digits", "top": 1, "epochs": 5,
                                                 "data_train": "Synthetic"}, results))
    assert (got.best["epoch"], got.best["value"], got.best["key"]) == (3, 20.0, "Synthetic/top1_error")
    assert (got.epochs_done, got.finished, got.status, got.kind) == (4, False, "training", "training")


def test_top_minus_one_ranks_by_top5(tmp_path):
    results = [cls_record(1, 10.0, 0.0, top5=9.0), cls_record(2, 50.0, 0.0, top5=1.0)]
    options = {"data_test": "Synthetic+Digits", "top": -1, "epochs": 2, "data_train": "Synthetic"}
    best = derive_best(results, "image_classification", options)
    assert (best["epoch"], best["metric"], best["value"]) == (2, "top5_error", 1.0)
    assert derive_best(results, "image_classification", {**options, "top": 1})["epoch"] == 1


def test_older_sr_folder_ranks_by_psnr_of_the_first_test_set(tmp_path):
    """Set14 comes first in the metrics and alphabetically; --data_test Set5+Set14 ranks by Set5."""
    def rec(epoch, set5, set14):
        return {"epoch": epoch, "train_loss": 1.0,
                "metrics": {"Set14_x2": {"psnr": set14, "ssim": 0.5}, "Set5_x2": {"psnr": set5, "ssim": 0.5}}}
    results = [rec(1, 30.0, 20.0), rec(2, 29.0, 31.0), rec(3, 30.0, 25.0)]
    got = read_run(old_folder(tmp_path / "sr", {"data_test": "Set5+Set14", "scale": [2], "epochs": 3},
                              results))
    assert got.tree == "super_resolution" and got.finished
    assert got.best == {"epoch": 1, "test_set": "Set5", "metric": "psnr", "key": "Set5_x2/psnr",
                        "direction": "max", "value": 30.0}


def test_the_trees_rank_with_their_best_key():
    """score() is the best_key value: one rule for the trainer and for readers of old folders."""
    metrics = cls_record(1, 12.5, 3.0, top5=7.0)["metrics"]
    options = argparse.Namespace(data_test="Synthetic+Digits", top=-1)
    cls = argparse.Namespace(best_key=ClsTrainer.best_key, args=options)
    assert ClsTrainer.score(cls, metrics) == 7.0
    sr = argparse.Namespace(best_key=SRTrainer.best_key, args=argparse.Namespace(data_test="Set5+Set14",
                                                                                 scale=[3]))
    assert SRTrainer.score(sr, {"Set14_x3": {"psnr": 1.0}, "Set5_x3": {"psnr": 2.0}}) == 2.0
    assert ClsTrainer.best_key({"data_test": "Synthetic", "top": 1}) == ("Synthetic", "top1_error")


def test_evaluations_are_listed_from_the_eval_folder(trained, tmp_path):
    folder, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    evaluation = copy / "eval" / "Digits-latest"
    evaluation.mkdir(parents=True)
    (evaluation / "results.json").write_text(json.dumps([{"epoch": 3, "metrics": {"top1_error": 12.0}}]))
    (evaluation / RUN_FILE).write_text(json.dumps({"format": 1, "kind": "evaluation", "data_test": "Digits",
                                                   "checkpoint": "latest"}))
    (copy / "eval" / "Set5+Set14-epoch2").mkdir()  # written by hand: the name still says what it holds
    got = read_run(copy)
    assert [(e.name, e.data_test, e.checkpoint) for e in got.evaluations] == \
        [("Digits-latest", "Digits", "latest"), ("Set5+Set14-epoch2", "Set5+Set14", "epoch2")]
    assert got.evaluations[0].results[0]["metrics"]["top1_error"] == 12.0
    assert got.epochs_done == 3 and len(got.results) == 3  # the training record is untouched


def test_a_folder_that_is_no_experiment_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "log.txt").write_text("mine\n")
    for path in (tmp_path / "notes", tmp_path / "missing", tmp_path / "notes" / "log.txt"):
        with pytest.raises(NotAnExperiment, match=str(path)):
            read_run(path)


def test_folder_state_names_every_case(trained, tmp_path):
    folder, _ = trained
    assert folder_state(tmp_path / "missing") == "absent"
    assert folder_state(folder) == "resumable"
    finished = tmp_path / "finished"
    shutil.copytree(folder, finished)
    (finished / "training_state.pt").unlink()
    assert folder_state(finished) == "finished"
    shutil.copy(finished / RUN_FILE, tmp_path / "keep.json")
    record = json.loads((finished / RUN_FILE).read_text())
    (finished / RUN_FILE).write_text(json.dumps({**record, "epochs_planned": 5, "status": "stopped"}))
    assert folder_state(finished) == "blocked"  # trained epochs, no state: never started again
    fresh = tmp_path / "fresh"
    (fresh / "model").mkdir(parents=True)
    for name in ("args.json", "summary.json", "log.txt"):
        shutil.copy(folder / name, fresh / name)
    (fresh / RUN_FILE).write_text(json.dumps({**record, "epochs_done": 0, "status": "interrupted",
                                              "best": None}))
    (fresh / ".results.json.abc.tmp").write_text("")  # an atomic write that was cut short
    assert folder_state(fresh) == "fresh"
    (tmp_path / "empty").mkdir()
    assert folder_state(tmp_path / "empty") == "fresh"
    (fresh / "NOTES.txt").write_text("mine\n")
    assert folder_state(fresh) == "blocked"
    (fresh / "NOTES.txt").unlink()
    (fresh / "model" / "model_latest.pt").write_bytes(b"")
    assert folder_state(fresh) == "blocked"
    (tmp_path / "file").write_text("")
    assert folder_state(tmp_path / "file") == "blocked"
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "log.txt").write_text("")
    assert folder_state(tmp_path / "user") == "blocked"


def test_option_drift_lists_changed_options_except_the_allowed_ones():
    saved = {"lr": 0.1, "epochs": 3, "scale": [2], "only_saved": 1}
    current = {"lr": 0.01, "epochs": 5, "scale": [2], "only_now": True}
    assert option_drift(saved, current, ["epochs"]) == [("lr", 0.01, 0.1)]
    assert option_drift(saved, current) == [("lr", 0.01, 0.1), ("epochs", 5, 3)]


def test_mark_status_updates_run_json_only(trained, tmp_path):
    folder, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    before = json.loads((copy / RUN_FILE).read_text())
    assert mark_status(copy, "preempted")
    assert json.loads((copy / RUN_FILE).read_text()) == {**before, "status": "preempted"}
    with pytest.raises(ValueError, match="expected one of"):
        mark_status(copy, "paused")
    (tmp_path / "old").mkdir()
    assert not mark_status(tmp_path / "old", "preempted") and not (tmp_path / "old" / RUN_FILE).exists()


def test_a_test_only_folder_records_its_evaluation_and_is_not_evaluated_twice(tmp_path, capsys):
    command = TINY[:-2] + ["--dir_save", str(tmp_path), "--save", "t", "--test_only"]
    run(TREE, option.parse_args(command))
    got = read_run(tmp_path / "t")
    assert (got.kind, got.status, got.epochs_planned, got.epochs_done, got.has_state) == \
        ("test", "finished", 0, 0, False)
    assert got.best["epoch"] == 0
    assert got.best["value"] == got.results[0]["metrics"]["Synthetic"]["top1_error"]
    assert folder_state(tmp_path / "t") == "finished"
    capsys.readouterr()
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "t").rglob("*"))
    assert cli_main(TREE, command) == 0
    assert "holds a finished test-only evaluation" in capsys.readouterr().out
    assert sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "t").rglob("*")) == before
