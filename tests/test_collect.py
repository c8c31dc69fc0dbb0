"""filter_basis.collect on small fake experiment folders written here."""

import csv
import io
import json

import pytest

from filter_basis import collect


def write_run(folder, args, summary, results):
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps(args))
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def cls_record(epoch, top1, time_s=2.0):
    return {"epoch": epoch, "metrics": {"loss": 0.1, "top1_error": top1, "top5_error": 0.0},
            "train_loss": 0.2, "lr": 0.1, "time_s": time_s, "data_time_s": 0.1, "samples_per_s": 100.0}


def sr_record(epoch, psnr5, psnr_photos, time_s=None):
    record = {"epoch": epoch, "metrics": {"Photos_x2": {"psnr": psnr_photos, "ssim": 0.8},
                                          "Set5_x2": {"psnr": psnr5, "ssim": 0.9 + epoch / 100}}}
    if time_s is not None:
        record["time_s"] = time_s
    return record


BASE_ARGS = {"model": "ResNet", "depth": 20, "n_basis": 16, "seed": 1, "save": "x", "dir_save": "/a",
             "n_threads": 2, "scale": [2]}


@pytest.fixture
def cls_runs(tmp_path):
    summary = {"model": "ResNet", "params": 100, "weight_params": 1000, "baseline": "ResNet",
               "baseline_weight_params": 1000, "compression_pct": 100.0}
    a = write_run(tmp_path / "dense", {**BASE_ARGS, "save": "dense"}, summary,
                  [cls_record(1, 9.0), cls_record(2, 4.5), cls_record(3, 5.0)])
    basis_summary = {**summary, "model": "ResNet_Basis", "weight_params": 400, "compression_pct": 40.0}
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


def test_sr_table_best_by_first_test_set_and_block_counts(tmp_path):
    summary = {"model": "EDSR_Basis", "params": 10, "weight_params": 5000, "baseline": "EDSR",
               "baseline_weight_params": 9000, "compression_pct": 55.5, "block_weight_params": 2560,
               "baseline_block_weight_params": 4608, "block_compression_pct": 55.6}
    # Photos_x2 comes first in the metrics: epoch 1 is best on it, although Set5 is better at epoch 2
    run = write_run(tmp_path / "sr", {"model": "EDSR_Basis", "scale": [2]}, summary,
                    [sr_record(1, 30.0, 29.0, 5.0), sr_record(2, 31.0, 28.0, 7.0)])
    bicubic = write_run(tmp_path / "bic", {"model": "Bicubic", "scale": [2], "test_only": True},
                        {"model": "Bicubic", "params": 0, "weight_params": 0}, [sr_record(0, 28.0, 27.0)])
    table = collect.collect([run, bicubic], tmp_path / "out", name="sr")[collect.SUPER_RESOLUTION]
    sr, bic = table.rows
    assert sr["best epoch"] == 1
    assert sr["Photos_x2 PSNR (best)"] == 29.0 and sr["Set5_x2 PSNR (best)"] == 30.0
    assert sr["Set5_x2 SSIM (best)"] == pytest.approx(0.91) and sr["Set5_x2 PSNR (last)"] == 31.0
    assert sr["block weight params"] == 2560 and sr["block compression %"] == 55.6
    assert sr["train time s"] == 12.0
    assert bic["run"] == "Bicubic" and bic["block weight params"] is None and bic["train time s"] is None
    assert table.x_column == "block weight params"
    assert table.y_columns == ["Photos_x2 PSNR (best)", "Set5_x2 PSNR (best)"]
    assert (tmp_path / "out" / "sr.md").is_file() and (tmp_path / "out" / "sr.png").is_file()
    assert "| Bicubic |  |  | 0 | 0 | 27.00 |" in (tmp_path / "out" / "sr.md").read_text()


def test_mixed_tasks_give_one_file_set_each(tmp_path, cls_runs):
    sr = write_run(tmp_path / "sr", {"model": "EDSR"}, {"model": "EDSR", "weight_params": 9},
                   [sr_record(1, 30.0, 29.0)])
    tables = collect.collect([cls_runs[0], sr], tmp_path / "out", name="all")
    assert set(tables) == {collect.CLASSIFICATION, collect.SUPER_RESOLUTION}
    for stem in ("all_classification", "all_super_resolution"):
        for ext in ("md", "csv", "png"):
            assert (tmp_path / "out" / f"{stem}.{ext}").is_file()


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
    assert str(empty) in warnings[0] and "no args.json, summary.json, results.json" in warnings[0]
    assert str(started) in warnings[1] and "no evaluation" in warnings[1]
    assert str(broken) in warnings[2] and "results.json" in warnings[2]
    assert str(tmp_path / "gone") in warnings[3]


def test_identical_options_are_told_apart_by_folder(tmp_path):
    summary = {"model": "ResNet", "weight_params": 1}
    runs = [write_run(tmp_path / name, {"model": "ResNet", "save": name}, summary, [cls_record(1, 1.0)])
            for name in ("one", "two")]
    table = collect.build_table(collect.read_runs(runs)[0])
    assert [row["run"] for row in table.rows] == ["ResNet [one]", "ResNet [two]"]


def test_label_options_are_formatted_like_the_command_line(tmp_path):
    summary = {"model": "EDSR", "weight_params": 1}
    runs = [write_run(tmp_path / "a", {"model": "EDSR", "scale": [2, 3], "chop": True,
                                       "pre_train": "/x/y/model.pt"}, summary, [sr_record(1, 1, 1)]),
            write_run(tmp_path / "b", {"model": "EDSR", "scale": [4], "chop": False, "pre_train": "."},
                      summary, [sr_record(1, 1, 1)])]
    assert collect.labels(collect.read_runs(runs)[0]) == ["EDSR --chop --pre_train model.pt --scale 2+3",
                                                          "EDSR --chop False --pre_train . --scale 4"]


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


def test_main_prints_tables_and_refuses_no_experiment(tmp_path, cls_runs, capsys):
    assert collect.main([str(f) for f in cls_runs] + ["--out", str(tmp_path / "o")]) == 0
    assert "| ResNet_Basis --n_basis 8 |" in capsys.readouterr().out
    assert collect.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skipped ") and err.splitlines()[-1].startswith("error: no experiment folder")
    assert len(err.splitlines()) == 2 and not (tmp_path / "o2").exists()
