"""filter_basis.collect on small fake experiment folders written here."""

import csv
import io
import json
import os

import pytest

from filter_basis import collect


def write_run(folder, args, summary, results, record=None):
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps(args))
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "results.json").write_text(json.dumps(results))
    if record is not None:
        (folder / "run.json").write_text(json.dumps(record))
    return folder


def cls_record(epoch, top1, time_s=2.0, top5=0.0):
    return {"epoch": epoch, "metrics": {"loss": 0.1, "top1_error": top1, "top5_error": top5},
            "train_loss": 0.2, "lr": 0.1, "time_s": time_s, "data_time_s": 0.1, "samples_per_s": 100.0}


def sr_record(epoch, psnr5, psnr14, time_s=None):
    """Metrics in the order Set5, Set14 (a run with --data_test Set14+Set5 ranks by Set14)."""
    record = {"epoch": epoch, "metrics": {"Set5_x2": {"psnr": psnr5, "ssim": 0.9 + epoch / 100},
                                          "Set14_x2": {"psnr": psnr14, "ssim": 0.8}}}
    if time_s is not None:
        record.update(time_s=time_s, train_loss=0.1)
    return record


BASE_ARGS = {"model": "ResNet", "depth": 20, "n_basis": 16, "seed": 1, "save": "x", "dir_save": "/a",
             "n_threads": 2, "data_test": "Digits", "top": 1, "test_only": False,
             "target_compression": None, "basis_init": ""}
CLS_SUMMARY = {"model": "ResNet", "params": 100, "weight_params": 1000, "baseline": "ResNet",
               "baseline_weight_params": 1000, "compression_pct": 100.0}


@pytest.fixture
def cls_runs(tmp_path):
    a = write_run(tmp_path / "dense", {**BASE_ARGS, "save": "dense"}, CLS_SUMMARY,
                  [cls_record(1, 9.0), cls_record(2, 4.5), cls_record(3, 5.0)])
    basis_summary = {**CLS_SUMMARY, "model": "ResNet_Basis", "weight_params": 400, "compression_pct": 40.0}
    b = write_run(tmp_path / "b16", {**BASE_ARGS, "model": "ResNet_Basis", "save": "b16"}, basis_summary,
                  [cls_record(1, 7.0), cls_record(2, 6.0)])
    c = write_run(tmp_path / "b8", {**BASE_ARGS, "model": "ResNet_Basis", "n_basis": 8, "save": "b8",
                                    "n_threads": 4},
                  {**basis_summary, "weight_params": 300}, [cls_record(1, 8.0)])
    return [a, b, c]


def test_classification_table_values_labels_and_files(tmp_path, cls_runs):
    out = tmp_path / "out"
    tables = collect.collect(cls_runs, out, warn=pytest.fail)
    table = tables[collect.CLASSIFICATION]
    rows = {row["run"]: row for row in table.rows}
    # the baseline is alone with its model: no options; the two Basis runs differ in --n_basis only
    # (save, n_threads are bookkeeping)
    assert list(rows) == ["ResNet", "ResNet_Basis --n_basis 16", "ResNet_Basis --n_basis 8"]
    dense = rows["ResNet"]
    assert (dense["best epoch"], dense["top-1 error % (best)"]) == (2, 4.5)
    assert (dense["last epoch"], dense["top-1 error % (last)"]) == (3, 5.0)
    assert dense["train time s"] == 6.0
    assert rows["ResNet_Basis --n_basis 8"]["weight params"] == 300
    assert rows["ResNet_Basis --n_basis 16"]["compression %"] == 40.0

    markdown = (out / "classification.md").read_text()
    assert markdown.splitlines()[0].startswith("| run | weight params | compression % | best epoch")
    assert "| ResNet | 1,000 | 100.0 | 2 | 4.50 | 3 | 5.00 | 6 |" in markdown
    parsed = list(csv.DictReader(io.StringIO((out / "classification.csv").read_text())))
    assert [float(r["top-1 error % (best)"]) for r in parsed] == [4.5, 6.0, 8.0]
    assert parsed[2]["folder"] == str(cls_runs[2]) and parsed[2]["model"] == "ResNet_Basis"
    png = (out / "classification.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert not (out / "super_resolution.md").exists()


def _best(tmp_path, name, args, results, record=None):
    run = collect.read_run(write_run(tmp_path / name, {**BASE_ARGS, **args}, CLS_SUMMARY, results, record))
    best = collect.best_record(run)
    return best["epoch"] if best else None


def test_best_epoch_is_the_trainers_first_test_set_score_and_first_of_equals(tmp_path):
    def two_sets(epoch, digits, synthetic):
        record = cls_record(epoch, 0.0)
        record["metrics"] = {"Digits": {"top1_error": digits, "top5_error": 0.0},  # alphabetically first
                             "Synthetic": {"top1_error": synthetic, "top5_error": 0.0}}
        return record

    # --data_test Synthetic+Digits: the trainer ranks by Synthetic (best epoch 3), not by Digits (2)
    results = [two_sets(1, 9.0, 9.0), two_sets(2, 1.0, 8.0), two_sets(3, 5.0, 2.0)]
    assert _best(tmp_path, "sets", {"data_test": "Synthetic+Digits"}, results) == 3
    # equal scores: the first stays best (the trainer saves model_best.pt on a strict improvement only)
    results = [cls_record(1, 9.0), cls_record(2, 4.0), cls_record(3, 4.0), cls_record(4, 6.0)]
    assert _best(tmp_path, "equal", {}, results) == 2
    # --top -1: the trainer ranks by top-5 error
    results = [cls_record(1, 3.0, top5=2.0), cls_record(2, 5.0, top5=1.0)]
    assert _best(tmp_path, "top5", {"top": -1}, results) == 2
    assert _best(tmp_path, "top1", {"top": 1}, results) == 1
    # the trainer's own record (run.json) is what counts when the folder has one
    assert _best(tmp_path, "recorded", {}, results, {"format": 1, "best": {"epoch": 2}}) == 2
    # a test-only record an older version appended to a training run is no epoch of the training
    results = [cls_record(1, 5.0), cls_record(2, 4.0), {"epoch": 2, "metrics": {"top1_error": 1.0}}]
    folder = write_run(tmp_path / "appended", BASE_ARGS, CLS_SUMMARY, results)
    row = collect.build_table([collect.read_run(folder)]).rows[0]
    assert (row["best epoch"], row["top-1 error % (best)"], row["top-1 error % (last)"]) == (2, 4.0, 4.0)


def test_sr_table_best_by_first_test_set_and_block_counts(tmp_path):
    summary = {"model": "EDSR_Basis", "params": 10, "weight_params": 5000, "baseline": "EDSR",
               "baseline_weight_params": 9000, "compression_pct": 55.5, "block_weight_params": 2560,
               "baseline_block_weight_params": 4608, "block_compression_pct": 55.6}
    # --data_test Set14+Set5, metrics listed Set5 first: epoch 1 is best on Set14 (the trainer's
    # ranking), although Set5 is better at epoch 2
    run = write_run(tmp_path / "sr", {"model": "EDSR_Basis", "scale": [2], "data_test": "Set14+Set5"},
                    summary, [sr_record(1, 30.0, 29.0, 5.0), sr_record(2, 31.0, 28.0, 7.0)])
    bicubic = write_run(tmp_path / "bic", {"model": "Bicubic", "scale": [2], "test_only": True,
                                           "data_test": "Set14+Set5"},
                        {"model": "Bicubic", "params": 0, "weight_params": 0}, [sr_record(0, 28.0, 27.0)])
    table = collect.collect([run, bicubic], tmp_path / "out", name="sr")[collect.SUPER_RESOLUTION]
    sr, bic = table.rows
    assert sr["best epoch"] == 1
    assert sr["Set14_x2 PSNR (best)"] == 29.0 and sr["Set5_x2 PSNR (best)"] == 30.0
    assert sr["Set5_x2 SSIM (best)"] == pytest.approx(0.91) and sr["Set5_x2 PSNR (last)"] == 31.0
    assert sr["block weight params"] == 2560 and sr["block compression %"] == 55.6
    assert sr["train time s"] == 12.0
    # Bicubic (no weights) is a reference row of the training table, not an evaluation
    assert bic["run"] == "Bicubic" and bic["block weight params"] is None and bic["train time s"] is None
    assert table.x_column == "block weight params"
    assert table.y_columns == ["Set5_x2 PSNR (best)", "Set14_x2 PSNR (best)"]
    assert (tmp_path / "out" / "sr.md").is_file() and (tmp_path / "out" / "sr.png").is_file()
    assert "| Bicubic |  |  | 0 | 0 | 28.00 |" in (tmp_path / "out" / "sr.md").read_text()


def test_mixed_tasks_give_one_file_set_each(tmp_path, cls_runs):
    sr = write_run(tmp_path / "sr", {"model": "EDSR", "data_test": "Set5", "scale": [2]},
                   {"model": "EDSR", "weight_params": 9}, [sr_record(1, 30.0, 29.0, 1.0)])
    tables = collect.collect([cls_runs[0], sr], tmp_path / "out", name="all")
    assert set(tables) == {collect.CLASSIFICATION, collect.SUPER_RESOLUTION}
    for stem in ("all_classification", "all_super_resolution"):
        for ext in ("md", "csv", "png"):
            assert (tmp_path / "out" / f"{stem}.{ext}").is_file()


def test_evaluations_and_demo_are_listed_apart_and_never_overwrite_the_training_table(tmp_path, cls_runs):
    out = tmp_path / "out"
    collect.collect(cls_runs, out, warn=pytest.fail)
    before = (out / "classification.md").read_text()
    # RUN/eval/<data_test>-<checkpoint>/ (only results.json of its own), and a --pretrained test-only folder
    evaluation = cls_runs[0] / "eval" / "Synthetic-best"
    evaluation.mkdir(parents=True)
    (evaluation / "results.json").write_text(json.dumps([{"epoch": 3, "metrics": {"top1_error": 12.5}}]))
    tested = write_run(tmp_path / "tested", {**BASE_ARGS, "test_only": True,
                                             "pretrained": str(cls_runs[1] / "model" / "model_best.pt")},
                       CLS_SUMMARY, [{"epoch": 0, "metrics": {"top1_error": 6.25}}])
    demo = write_run(tmp_path / "demo", {"model": "EDSR", "scale": [2], "test_only": True,
                                         "data_test": "Demo"}, {"weight_params": 5},
                     [{"epoch": 0, "metrics": {}}])
    (demo / "results" / "Demo_x2").mkdir(parents=True)
    for image in ("a_SR.png", "b_SR.png"):
        (demo / "results" / "Demo_x2" / image).write_bytes(b"png")
    shown = []
    alone = collect.collect([tested, demo], out, warn=pytest.fail, show=shown.append)
    assert list(alone) == ["classification_evaluations"]
    assert (out / "classification.md").read_text() == before  # not overwritten
    assert not any((out / f"super_resolution{kind}.md").exists() for kind in ("", "_evaluations"))
    assert shown == [f"Demo demo: 2 image(s) in {demo / 'results' / 'Demo_x2'} (no metrics: not tabulated)"]
    row = alone["classification_evaluations"].rows[0]
    assert row["tested"] == "model_best.pt" and row["top-1 error %"] == 6.25
    assert row["train time s"] == 4.0  # of the run whose model/ holds the tested file

    tables = collect.collect([cls_runs[0], tested], tmp_path / "both", warn=pytest.fail)
    assert set(tables) == {"classification", "classification_evaluations"}
    assert [row["best epoch"] for row in tables["classification"].rows] == [2]  # the eval is no epoch
    evaluations = tables["classification_evaluations"]
    assert [(r["run"], r["tested"], r["top-1 error %"], r["train time s"]) for r in evaluations.rows] == [
        ("ResNet --data_test Synthetic", "best", 12.5, 6.0),
        ("ResNet --data_test Digits --pretrained b16/model_best.pt", "model_best.pt", 6.25, 4.0)]
    assert evaluations.columns == ["run", "weight params", "compression %", "tested", "top-1 error %",
                                   "train time s"]
    assert (tmp_path / "both" / "classification_evaluations.md").is_file()
    with pytest.raises(collect.UserError, match="no experiment folder"):
        collect.collect([tmp_path / "nothing"], tmp_path / "none", warn=lambda line: None)
    assert collect.collect([demo], tmp_path / "demo_only", show=lambda line: None) == {}
    assert not (tmp_path / "demo_only").exists()


def test_non_experiment_folders_are_named_and_skipped(tmp_path, cls_runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    started = write_run(tmp_path / "started", BASE_ARGS, {"model": "ResNet"}, [])
    broken = write_run(tmp_path / "broken", BASE_ARGS, {"model": "ResNet"}, [])
    (broken / "results.json").write_text("{not json")
    warnings = []
    tables = collect.collect([empty, cls_runs[0], started, broken, tmp_path / "gone"], tmp_path / "out",
                             warn=warnings.append)
    assert [row["run"] for row in tables[collect.CLASSIFICATION].rows] == ["ResNet"]
    assert len(warnings) == 4
    assert str(empty) in warnings[0] and "is not an experiment folder" in warnings[0]
    assert str(started) in warnings[1] and "no evaluation" in warnings[1]
    assert str(broken) in warnings[2] and "results.json" in warnings[2]
    assert str(tmp_path / "gone") in warnings[3]


def test_identical_options_are_told_apart_by_folder(tmp_path):
    summary = {"model": "ResNet", "weight_params": 1}
    runs = [write_run(tmp_path / name, {"model": "ResNet", "save": name}, summary, [cls_record(1, 1.0)])
            for name in ("one", "two")]
    table = collect.build_table(collect.read_runs(runs)[0])
    assert [row["run"] for row in table.rows] == ["ResNet [one]", "ResNet [two]"]


def test_labels_carry_only_options_that_differ_and_are_set(tmp_path):
    summary = {"model": "EDSR", "weight_params": 1}
    runs = [write_run(tmp_path / "a", {"model": "EDSR", "scale": [2, 3], "chop": True, "test_only": False,
                                       "pre_train": "/x/y/model.pt", "target_compression": 0.3,
                                       "basis_init": "/r/dense.pt", "data_test": "Set5"},
                      summary, [sr_record(1, 1, 1, 1.0)]),
            write_run(tmp_path / "b", {"model": "EDSR", "scale": [4], "chop": False, "pre_train": ".",
                                       "test_only": False, "target_compression": None, "basis_init": "",
                                       "data_test": "Set5"}, summary, [sr_record(1, 1, 1, 1.0)])]
    assert collect.labels(collect.read_runs(runs)[0]) == [
        "EDSR --basis_init dense.pt --chop --pre_train model.pt --scale 2+3 --target_compression 0.3",
        "EDSR --scale 4"]


def test_expected_values_add_paper_and_diff_columns(tmp_path, cls_runs):
    runs, _ = collect.read_runs(cls_runs)
    expected = {"ResNet": {"top-1 error % (best)": 4.0}, "b8": {"top-1 error % (best)": 7.0}}
    table = collect.build_table(runs, expected)
    at = table.columns.index("top-1 error % (best)")
    assert table.columns[at + 1:at + 3] == ["top-1 error % (best) paper", "top-1 error % (best) diff"]
    dense, b16, b8 = table.rows
    assert dense["top-1 error % (best) diff"] == 0.5 and b8["top-1 error % (best) paper"] == 7.0
    assert b8["top-1 error % (best) diff"] == 1.0 and b16["top-1 error % (best) paper"] is None
    assert "| 4.50 | 4.00 | +0.50 |" in collect.to_markdown(table)
    with pytest.raises(ValueError, match="no such"):
        collect.build_table(runs, {"ResNet": {"no such": 1.0}})


def test_plot_of_eight_runs_keeps_every_label_readable_and_inside(tmp_path):
    runs = []
    for i in range(8):
        args = {**BASE_ARGS, "model": "ResNet_Basis", "n_basis": 8 + i, "lr": 0.1 / (i + 1),
                "loss_norm": bool(i % 2), "basis_size": 64 + i, "k_size2": 1 + i % 2, "group_size": 4,
                "decay": f"step-{100 + i}-{200 + i}", "pre_train": f"/runs/dense_{i}/model/model_best.pt",
                "weight_decay": 1e-4 * (i + 1), "momentum": 0.9 - i / 100}
        runs.append(collect.read_run(write_run(tmp_path / f"r{i}", args, {**CLS_SUMMARY, "weight_params":
                                                                         270_000 + 1000 * i},
                                               [cls_record(1, 5.0 + i / 100)])))  # points nearly on top
    table = collect.build_table(runs)
    assert all(len(row["run"]) > 140 for row in table.rows)  # wider than the figure on one line
    drawn = collect.figure(table)
    drawn.canvas.draw()
    renderer = drawn.canvas.get_renderer()
    whole = drawn.bbox
    legend = drawn.legends[0]
    texts = [t.get_window_extent(renderer) for t in legend.get_texts()]
    assert len(texts) == 8
    for box in texts + [legend.get_window_extent(renderer)]:
        assert whole.x0 - 1 <= box.x0 and box.x1 <= whole.x1 + 1
        assert whole.y0 - 1 <= box.y0 and box.y1 <= whole.y1 + 1
    assert not any(a.overlaps(b) for i, a in enumerate(texts) for b in texts[i + 1:])
    axes = drawn.axes[0]
    ticks = [t.get_text() for t in axes.get_xticklabels() if t.get_text()]
    assert ticks and all("," in t for t in ticks), ticks  # 271,000, not 271000
    legend_box = legend.get_window_extent(renderer)
    assert not legend_box.overlaps(axes.get_window_extent(renderer))


def test_main_prints_tables_and_refuses_no_experiment(tmp_path, cls_runs, capsys):
    assert collect.main([str(f) for f in cls_runs] + ["--out", str(tmp_path / "o")]) == 0
    assert "| ResNet_Basis --n_basis 8 |" in capsys.readouterr().out
    assert collect.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skipped ") and err.splitlines()[-1].startswith("error: no experiment folder")
    assert len(err.splitlines()) == 2 and not (tmp_path / "o2").exists()


def test_out_must_be_a_folder_and_name_a_plain_stem(tmp_path, cls_runs, capsys):
    file = tmp_path / "table.md"
    file.write_text("mine\n")
    assert collect.main([str(cls_runs[0]), "--out", str(file)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --out {str(file)!r} is a file; expected a folder for the tables and plots (it is "
                   "made if missing)\n")
    assert file.read_text() == "mine\n"
    out = tmp_path / "a" / "b" / "out"
    before = sorted(os.listdir(tmp_path))
    for name in ("../../x", "..", "sub/x"):
        assert collect.main([str(cls_runs[0]), "--out", str(out), "--name", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --name {name!r} is not accepted") and len(err.splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == before and not out.exists()
