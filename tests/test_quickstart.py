"""The quickstart's logic without its long runs: the plan parses, runs are reused/continued/redone as they
should, the time left follows the measured speed, the report writes tables and the comparison picture."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from image_classification.option import parse_args as cls_args
from super_resolution.metrics import calc_psnr
from super_resolution.option import parse_args as sr_args

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


quickstart = load("quickstart")
figure = load("quickstart_figure")


@pytest.mark.parametrize("smoke", [False, True])
def test_every_planned_command_is_accepted_by_its_tree(smoke, tmp_path):
    runs = quickstart.plan(smoke)
    assert [r.name for r in runs] == ["ResNet", "ResNet_Basis", "ResNet_Factor", "ResNet_Group",
                                      "Bicubic", "EDSR", "EDSR_Basis", "EDSR_Factor"]
    for run in runs:
        argv = quickstart.command(run, tmp_path, quickstart.reuse.REPLACE)[2:]
        flags = [token for token in argv if token.startswith("--")]
        assert len(flags) == len(set(flags)), f"an option given twice: {argv}"
        args = (cls_args if run.task == quickstart.CLASSIFICATION else sr_args)(argv)
        assert (args.model, args.save, args.reset, args.made_by) == (run.name, run.name, True, "quickstart")
        assert run.test_only == args.test_only
        if not run.test_only:
            assert args.epochs == run.epochs
            assert args.print_every == 1000  # no template overrides the quickstart's own value
        if smoke and run.task == quickstart.SUPER_RESOLUTION:
            assert args.data_test == "Set5"
            assert run.test_only or (args.batch_size, args.patch_size) == (4, 48)
    edsr = sr_args(quickstart.command(runs[5], tmp_path, quickstart.reuse.CONTINUE)[2:])
    assert edsr.auto_resume and edsr.scale == [2] and edsr.save_results and not edsr.reset


def test_merged_options_replace_in_place():
    parts = ["--a", "1", "--b", "--c", "x", "y"], ["--c", "z", "--d", "2"], ["--a", "3"]
    assert quickstart.merged(*parts) == ["--a", "3", "--b", "--c", "z", "--d", "2"]


def test_smoke_runs_have_their_own_folder_a_short_eta_and_unjudged_checks(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(quickstart, "run_all", lambda runs, out, reset: seen.append(out))
    monkeypatch.setattr(quickstart, "report", lambda runs, out, smoke=False: seen.append(smoke))
    assert quickstart.main(["--smoke"]) == 0 and quickstart.main([]) == 0
    assert seen == [quickstart.ROOT / "experiment" / "quickstart_smoke", True,
                    quickstart.ROOT / "experiment" / "quickstart", False]
    monkeypatch.chdir(tmp_path)  # a relative --out is taken from the current folder
    assert quickstart.main(["--smoke", "--out", "mine"]) == 0 and seen[-2] == tmp_path / "mine"
    assert "cd " not in (SCRIPTS / "quickstart.sh").read_text()  # the wrapper keeps the caller's folder

    smoke, real = quickstart.Progress(quickstart.plan(True)), quickstart.Progress(quickstart.plan(False))
    assert smoke.left() <= 120 and real.left() >= 600  # the first ETA of a smoke run is not the real one's

    tables = {"classification": collect_table([{"model": "ResNet", "top-1 error % (last)": 80.0}]),
              "super_resolution": collect_table([{"model": "EDSR_Basis", "Set5_x2 PSNR (last)": 20.0},
                                                 {"model": "Bicubic", "Set5_x2 PSNR (last)": 25.0}])}
    lines = quickstart.checks(tables, smoke=True)
    assert lines[0] == quickstart.SMOKE_NOTE and "numbers mean nothing" in lines[0]
    assert lines[1:] == ["check: Digits ResNet top-1 error 80.00% (target <= 3%): not judged (smoke run)",
                         "check: Set5 x2 EDSR_Basis 20.00 dB vs Bicubic 25.00 dB, -5.00 dB "
                         "(target >= +0.5 dB): not judged (smoke run)"]
    assert all("NOT reached" not in line for line in lines)
    assert quickstart.checks(tables)[0].endswith("NOT reached")


def collect_table(rows):
    return quickstart.collect.Table("x", [], rows)


def fake_runner(calls, fail=None, stop_at_epoch=None):
    """Stands in for main.py: writes the experiment folder (with its run.json record) a finished or
    interrupted run leaves, continuing a folder with a training state under --auto_resume."""
    def runner(cmd, log):
        argv = cmd[2:]
        calls.append(argv)
        get = lambda flag: argv[argv.index(flag) + 1] if flag in argv else None  # noqa: E731
        name = get("--save")
        if name == fail:
            return 3
        folder = Path(get("--dir_save")) / name
        if "--reset" in argv and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        classification = "ResNet" in name
        args = (cls_args if classification else sr_args)(argv)
        epochs = 0 if args.test_only else args.epochs
        last = stop_at_epoch if stop_at_epoch is not None and epochs else epochs
        metrics = {"top1_error": 1.0} if classification else {"Set5_x2": {"psnr": 30.0, "ssim": 0.9}}
        results = [{"epoch": e, "metrics": metrics, "train_loss": 0.1, "time_s": 1.0}
                   for e in range(1, last + 1)] or [{"epoch": 0, "metrics": metrics}]
        record = {"format": 1, "tree": "image_classification" if classification else "super_resolution",
                  "kind": "test" if args.test_only else "training", "made_by": args.made_by,
                  "epochs_planned": epochs, "epochs_done": last, "best": None, "basis_counts": None,
                  "status": "finished" if last == epochs else "training"}
        files = {"args.json": json.loads(json.dumps(vars(args), default=str)), "results.json": results,
                 "summary.json": {"weight_params": 0 if args.model == "Bicubic" else 5}, "run.json": record}
        for file, content in files.items():
            (folder / file).write_text(json.dumps(content))
        if not args.test_only:
            (folder / "training_state.pt").write_bytes(b"")
        return 0
    return runner


def _models(calls):
    return [argv[argv.index("--model") + 1] for argv in calls]


def test_runs_are_reused_continued_or_redone(tmp_path):
    runs = quickstart.plan(smoke=True)[:2] + quickstart.plan(smoke=True)[4:5]
    lines, calls = [], []
    quickstart.run_all(runs, tmp_path, reset=False, runner=fake_runner(calls), write=lines.append)
    assert len(calls) == 3 and not any("--reset" in argv for argv in calls)
    assert ["--auto_resume" in argv for argv in calls] == [True, True, False]  # Bicubic: a test
    assert all(argv[argv.index("--made_by") + 1] == "quickstart" for argv in calls)
    assert json.loads((tmp_path / "classification" / "ResNet" / "run.json").read_text())["made_by"] == \
        "quickstart"

    calls.clear()
    quickstart.run_all(runs, tmp_path, reset=False, runner=fake_runner(calls), write=lines.append)
    assert calls == [] and sum("reusing" in line for line in lines) == 3

    runs[1].options = runs[1].options + ["--lr", "0.05"]  # other settings: that run only is redone
    quickstart.run_all(runs, tmp_path, reset=False, runner=fake_runner(calls), write=lines.append)
    assert _models(calls) == ["ResNet_Basis"] and "--reset" in calls[0]
    assert "redoing classification ResNet_Basis" in "\n".join(lines)

    calls.clear()
    quickstart.run_all(runs, tmp_path, reset=True, runner=fake_runner(calls), write=lines.append)
    assert len(calls) == 3 and all("--reset" in argv for argv in calls)


def test_an_interrupted_run_continues_and_a_failed_one_stops(tmp_path):
    runs = quickstart.plan(smoke=True)[:1]
    runs[0].options = quickstart.merged(runs[0].options, ["--epochs", "3"])
    runs[0].epochs = 3
    calls, lines = [], []
    quickstart.run_all(runs, tmp_path, reset=False, runner=fake_runner(calls, stop_at_epoch=2), write=print)
    calls.clear()
    quickstart.run_all(runs, tmp_path, reset=False, runner=fake_runner(calls), write=lines.append)
    assert "--auto_resume" in calls[0] and "--reset" not in calls[0]
    assert lines[0].startswith("[quickstart 1/1] continuing classification ResNet")
    with pytest.raises(SystemExit) as stop:
        quickstart.run_all(runs, tmp_path, reset=True, runner=fake_runner([], fail="ResNet"),
                           write=lines.append)
    assert stop.value.code == 3 and "failed (exit status 3)" in lines[-1]


def test_folders_the_quickstart_did_not_make_are_refused_untouched(tmp_path, monkeypatch, capsys):
    out = tmp_path / "quick"
    mine = out / "classification" / "ResNet"
    mine.mkdir(parents=True)
    (mine / "precious.txt").write_text("keep me\n")
    (out / "classification.md").write_text("my table\n")
    calls = []
    monkeypatch.setattr(quickstart, "execute", fake_runner(calls))
    assert quickstart.main(["--smoke", "--only", "ResNet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {mine} is not an experiment folder") and len(err.splitlines()) == 1
    assert calls == [] and (mine / "precious.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in mine.iterdir()) == ["precious.txt"]
    assert (out / "classification.md").read_text() == "my table\n"
    assert quickstart.main(["--smoke", "--only", "ResNet", "--out", str(out), "--reset"]) == 2  # even asked
    assert (mine / "precious.txt").is_file() and calls == []

    # a run of the user's (no made_by) with other options: refused, naming the option and both values
    runs = quickstart.plan(smoke=True)[1:2]
    user_run = quickstart.command(runs[0], out, quickstart.reuse.START)
    user_run = [t for t in user_run if t not in ("--made_by", "quickstart")] + ["--lr", "0.5"]
    fake_runner([])(user_run, None)
    with pytest.raises(quickstart.reuse.Drifted, match=r"--lr 0\.1 \(saved 0\.5\); quickstart neither uses"):
        quickstart.run_all(runs, out, reset=False, runner=fake_runner(calls), write=lambda line: None)
    assert calls == []
    quickstart.run_all(runs, out, reset=True, runner=fake_runner(calls), write=lambda line: None)
    assert len(calls) == 1 and "--reset" in calls[0]  # the user asked the quickstart to redo its runs


def test_time_left_follows_the_measured_speed():
    runs = quickstart.plan()
    progress = quickstart.Progress(runs, write=lambda line: None)
    total = sum(r.estimate_s for r in runs)
    assert progress.left() == total
    progress.finished(runs[0], 2 * runs[0].estimate_s)  # this machine is twice as slow as estimated
    assert progress.left() == pytest.approx(2 * (total - runs[0].estimate_s))
    progress.finished(runs[1], 999.0, reused=True)  # a reused run tells nothing about the speed
    assert progress.left() == pytest.approx(2 * (total - runs[0].estimate_s - runs[1].estimate_s))
    lines = []
    quickstart.Progress(runs, write=lines.append).starting(runs[0], "running")
    assert lines[0].startswith("[quickstart 1/8] running classification ResNet | elapsed 0s, about ")


def fake_sr_results(tmp_path, hr):
    """Bicubic output: HR with a noisy 40x40 patch at (60, 20); EDSR: smaller noise everywhere."""
    rng = np.random.default_rng(0)
    outputs = {}
    for label, pixels in (("Bicubic", hr.copy()), ("EDSR", hr.copy())):
        if label == "Bicubic":
            pixels[60:100, 20:60] = rng.integers(0, 256, (40, 40, 3))
        else:
            pixels = np.clip(pixels.astype(int) + rng.integers(-3, 4, pixels.shape), 0, 255).astype(np.uint8)
        folder = tmp_path / label / "results" / "Set5_x2"
        folder.mkdir(parents=True)
        iio.imwrite(folder / "bird_SR.png", pixels)
        outputs[label] = tmp_path / label / "results"
    return outputs


def test_comparison_figure_finds_the_worst_crop_and_measures_like_the_tests(tmp_path):
    hr = np.random.default_rng(1).integers(0, 256, (128, 130, 3)).astype(np.uint8)
    hr_folder = tmp_path / "data" / "benchmark" / "Set5" / "HR"
    hr_folder.mkdir(parents=True)
    iio.imwrite(hr_folder / "bird.png", np.pad(hr, ((0, 1), (0, 1), (0, 0))))  # cut to the SR size
    outputs = fake_sr_results(tmp_path, hr)
    assert figure.worst_crop(iio.imread(outputs["Bicubic"] / "Set5_x2" / "bird_SR.png").astype(float),
                             hr.astype(float), 40) == (60, 20)
    psnr = figure.comparison_figure(tmp_path / "data", outputs, tmp_path / "fig.png", scale=2,
                                    set_name="Set5", image="bird", crop=48)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()  # noqa: E731
    for label in outputs:
        sr = iio.imread(outputs[label] / "Set5_x2" / "bird_SR.png")
        assert psnr[label] == pytest.approx(calc_psnr(as_tensor(sr), as_tensor(hr), 2, 255, True), abs=1e-6)
    assert psnr["EDSR"] > psnr["Bicubic"]
    assert iio.imread(tmp_path / "fig.png").shape[1] > 600
    with pytest.raises(FileNotFoundError, match="save_results"):
        figure.comparison_figure(tmp_path / "data", {"x": tmp_path}, tmp_path / "f.png", scale=2,
                                 set_name="Set5", image="bird")
    assert figure.main([str(tmp_path / "g.png"), f"Bicubic={outputs['Bicubic']}", "--dir_data",
                        str(tmp_path / "data"), "--image", "bird"]) == 0


def test_report_prints_tables_and_checks(tmp_path):
    runs = quickstart.plan(smoke=True)
    quickstart.run_all(runs, tmp_path, reset=False, runner=fake_runner([]), write=lambda line: None)
    hr = iio.imread(Path(quickstart.ROOT) / "datasets" / "benchmark" / "Set5" / "HR" / "butterfly.png")
    for name in ("Bicubic", "EDSR", "EDSR_Basis"):
        folder = tmp_path / "super_resolution" / name / "results" / "Set5_x2"
        folder.mkdir(parents=True)
        iio.imwrite(folder / "butterfly_SR.png", hr)
    lines = []
    tables = quickstart.report(runs, tmp_path, write=lines.append)
    assert set(tables) == {"classification", "super_resolution"}
    for name in ("classification.md", "classification.csv", "classification.png", "super_resolution.md",
                 "super_resolution.csv", "super_resolution.png", "sr_comparison.png"):
        assert (tmp_path / name).is_file(), name
    text = "\n".join(lines)
    assert "| ResNet_Basis |" in text and "| EDSR_Factor |" in text
    assert "check: Digits ResNet top-1 error 1.00% (target <= 3%): ok" in text
    assert ("check: Set5 x2 EDSR_Basis 30.00 dB vs Bicubic 30.00 dB, +0.00 dB (target >= +0.5 dB): "
            "NOT reached") in text


def test_shell_scripts_share_one_environment_setup():
    for script in ("test.sh", "quickstart.sh", "digits_basis_init.sh"):
        text = (SCRIPTS / script).read_text()
        assert 'source "$(dirname "${BASH_SOURCE[0]}")/env.sh"' in text and "pip install" not in text
    for script in sorted((SCRIPTS / "paper").glob("*.sh")):  # the five paper wrappers
        text = script.read_text()
        assert 'source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"' in text, script.name
        # no interpreter search of its own: env.sh decides
        assert "python3" not in text and "-x " not in text and 'exec "$py"' in text, script.name


def test_env_sh_uses_a_given_python_as_it_is(tmp_path):
    """PYTHON=/path: that interpreter, and no environment is created or installed into."""
    import subprocess

    fake = tmp_path / "venv" / "bin" / "python"  # an environment whose python only notes that it ran
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\necho called >> {tmp_path}/called\n")
    fake.chmod(0o755)
    out = subprocess.run(["bash", "-c", f'VENV={tmp_path}/venv PYTHON=/some/python; '
                          f'source "{SCRIPTS}/env.sh"; echo "$py|$root"'],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == f"/some/python|{Path(quickstart.ROOT)}"
    assert not (tmp_path / "called").exists() and not (tmp_path / "venv" / ".requirements.sha256").exists()


def test_figure_script_reports_a_missing_output_in_one_line(tmp_path, capsys):
    assert figure.main([str(tmp_path / "g.png"), f"EDSR={tmp_path / 'none'}", "--dir_data",
                        str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1

