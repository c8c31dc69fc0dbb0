"""scripts/paper/*.sh end to end on tiny stand-in data in the official layouts, with shrunken models.

The data are written here: CIFAR-10 in torchvision's pickle format, DIV2K / DIV2KSUB / benchmark folders
in the official ``super_resolution/`` layout.  Every main.py run is a real process started by the scripts.
"""

import csv
import importlib.util
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from filter_basis.engine.checkpoint import read_state_dict

SCRIPTS = "scripts/paper"
SR_SIZE = 48  # HR side: divisible by 2, 3 and 4
SR_EXTRA = ("--n_resblocks 1 --n_feats 16 --basis_size 16 --n_basis 4 --n_train 4 --patch_size 24 "
            "--batch_size 2 --test_every 2 --n_val 1 --n_threads 0 --ext img")


def _write_cifar(root, n_train_batch=40, n_test=16):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(path, n, label):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        entry = {"batch_label": label, "labels": [int(i % 10) for i in range(n)], "data": data,
                 "filenames": [f"img_{i}.png" for i in range(n)]}
        with open(path, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    for i in range(1, 6):
        batch(folder / f"data_batch_{i}", n_train_batch, f"training batch {i} of 5")
    batch(folder / "test_batch", n_test, "testing batch 1 of 1")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f, protocol=2)


def _smooth_image(rng, size):
    small = rng.integers(0, 256, size=(size // 8, size // 8, 3)).astype(np.float32)
    return np.kron(small, np.ones((8, 8, 1), np.float32)).astype(np.uint8)


def _lr(image, scale):
    h, w, c = image.shape
    return image.reshape(h // scale, scale, w // scale, scale, c).mean(axis=(1, 3)).astype(np.uint8)


def _write_sr(root):
    """The official layout: DIR_DATA/super_resolution/{DIV2K,benchmark}/..."""
    rng = np.random.default_rng(1)
    sr = root / "super_resolution"
    for i in range(4):  # DIV2KSUB: GT_sub and GT_sub_bicLRx<s>
        image = _smooth_image(rng, SR_SIZE)
        iio.imwrite(_mkdir(sr / "DIV2K" / "GT_sub") / f"0001_s{i:03d}.png", image)
        for s in (2, 3, 4):
            iio.imwrite(_mkdir(sr / "DIV2K" / f"GT_sub_bicLRx{s}") / f"0001_s{i:03d}.png", _lr(image, s))
    image = _smooth_image(rng, SR_SIZE)  # DIV2K validation image 0801
    iio.imwrite(_mkdir(sr / "DIV2K" / "DIV2K_valid_HR") / "0801.png", image)
    for s in (2, 3, 4):
        lr_dir = _mkdir(sr / "DIV2K" / "DIV2K_valid_LR_bicubic" / f"X{s}")
        iio.imwrite(lr_dir / f"0801x{s}.png", _lr(image, s))
    for name in ("Set5", "Set14", "B100", "Urban100"):
        image = _smooth_image(rng, SR_SIZE)
        iio.imwrite(_mkdir(sr / "benchmark" / name / "HR") / "img.png", image)
        for s in (2, 3, 4):
            lr_dir = _mkdir(sr / "benchmark" / name / "LR_bicubic" / f"X{s}")
            iio.imwrite(lr_dir / f"imgx{s}.png", _lr(image, s))


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def dir_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_data")
    _write_cifar(root)
    _write_sr(root)
    return root


def _env(dir_data, dir_save, **settings):
    env = {k: v for k, v in os.environ.items() if k not in ("ONLY", "EXTRA", "EPOCHS", "GPUS", "DISTRIBUTED")}
    env.update(PYTHON=sys.executable, DIR_DATA=str(dir_data), DIR_SAVE=str(dir_save), GPUS="",
               OMP_NUM_THREADS="1", **settings)
    return env


def _script(repo_root, name, env, *args, check=True):
    result = subprocess.run(["bash", str(repo_root / SCRIPTS / name), *args], cwd=repo_root, env=env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def driver(repo_root):
    """scripts/paper/run.py as a module: reruns are driven in-process (their main.py runs stay processes)."""
    spec = importlib.util.spec_from_file_location("paper_run", repo_root / SCRIPTS / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _drive(driver, monkeypatch, capfd, env, *argv):
    """run.py ARGV in this process with the settings of ``env``: (exit status, stdout, stderr)."""
    for name in ("ONLY", "EXTRA", "EPOCHS", "GPUS", "DISTRIBUTED", "DIR_DATA", "DIR_SAVE", "OMP_NUM_THREADS"):
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    capfd.readouterr()
    code = driver.main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def _epochs(folder):
    return [r["epoch"] for r in json.loads((folder / "results.json").read_text()) if "train_loss" in r]


def _cells(row):
    return [cell.strip() for cell in row.strip("|").split("|")]


def _table_rows(stdout):
    return [line for line in stdout.splitlines() if line.startswith("| ")]


def test_table5_killed_run_continues_finished_run_is_skipped_and_table_printed(repo_root, dir_data, tmp_path,
                                                                               driver, monkeypatch, capfd):
    env = _env(dir_data, tmp_path / "save", ONLY="ResNet56_Basis", EPOCHS="3",
               EXTRA="--depth 8 --batch_size 16 --n_threads 0 --print_every 1")
    folder = tmp_path / "save" / "ResNet56_Basis"
    process = subprocess.Popen(["bash", str(repo_root / SCRIPTS / "table5_cifar10.sh")], cwd=repo_root,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while not (folder / "training_state.pt").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the script and its main.py, mid-run
    process.wait()
    done_before = _epochs(folder)
    assert 1 <= len(done_before) < 3, "the run finished before it could be killed"
    first_record = json.loads((folder / "results.json").read_text())[0]
    recorded = json.loads((folder / "run.json").read_text())["epochs_done"]  # may lag the state by one

    code, out, _ = _drive(driver, monkeypatch, capfd, env, "table5")
    assert code == 0
    assert f"ResNet56_Basis: continuing ({recorded} of 3 epochs recorded)" in out
    train_line = next(line for line in out.splitlines() if "ResNet56_Basis train on cpu" in line)
    assert train_line.endswith("--save ResNet56_Basis --auto_resume --made_by paper")
    assert "--reset" not in train_line and "--load" not in train_line
    assert _epochs(folder) == [1, 2, 3]
    assert json.loads((folder / "results.json").read_text())[0] == first_record  # not restarted
    assert json.loads((folder / "run.json").read_text())["made_by"] == "paper"
    test_args = json.loads((tmp_path / "save" / "test" / "ResNet56_Basis" / "args.json").read_text())
    assert test_args["test_only"] and test_args["pretrained"] == str(folder / "model" / "model_best.pt")
    assert test_args["made_by"] == "paper"
    rows = _table_rows(out)
    assert "top-1 error % paper" in rows[0] and "train time s" in rows[0]
    assert rows[1].startswith("| ResNet56_Basis |") and "| 6.60 |" in rows[1]
    cells = dict(zip(_cells(rows[0]), _cells(rows[1])))
    epoch_times = [r["time_s"] for r in json.loads((folder / "results.json").read_text())]
    assert float(cells["train time s"]) == pytest.approx(sum(epoch_times), abs=0.5)  # of the training run
    assert (tmp_path / "save" / "test" / "table5.md").is_file()

    # finished with these options: skipped, even without its training state and with a user's file in it
    (folder / "training_state.pt").unlink()
    (folder / "NOTES.txt").write_text("mine\n")
    kept = sorted(p.name for p in folder.rglob("*"))
    code, again, _ = _drive(driver, monkeypatch, capfd, env, "table5")
    assert code == 0
    assert "ResNet56_Basis: finished (3 of 3 epochs" in again and "test results up to date" in again
    assert " train on " not in again and " test on " not in again  # no main.py started
    assert _table_rows(again) == rows
    assert sorted(p.name for p in folder.rglob("*")) == kept
    assert (folder / "NOTES.txt").read_text() == "mine\n"

    # other options (EXTRA): refused in one line naming the option and both values; nothing started
    other = dict(env, EXTRA=env["EXTRA"].replace("--batch_size 16", "--batch_size 8"))
    code, out, err = _drive(driver, monkeypatch, capfd, other, "table5")
    assert code == 2 and " on cpu" not in out and len(err.splitlines()) == 1
    assert err.startswith(f"error: {folder} holds a run made with other options: --batch_size 8 (saved 16); "
                          "paper neither uses nor replaces it")
    assert sorted(p.name for p in folder.rglob("*")) == kept


def test_table2_runs_a_configuration_end_to_end(dir_data, tmp_path, driver, monkeypatch, capfd):
    env = _env(dir_data, tmp_path / "save", ONLY="EDSR_Basis_X4_L8_B128+27", EPOCHS="1", EXTRA=SR_EXTRA)
    code, out, err = _drive(driver, monkeypatch, capfd, env, "table2")
    assert code == 0, err
    test = tmp_path / "save" / "test" / "EDSR_Basis_X4_L8_B128+27"
    metrics = json.loads((test / "results.json").read_text())[0]["metrics"]
    assert set(metrics) == {f"{name}_x4" for name in ("Set5", "Set14", "B100", "Urban100", "DIV2K")}
    rows = _table_rows(out)
    assert "Urban100_x4 PSNR paper" in rows[0]
    assert rows[1].startswith("| EDSR_Basis_X4_L8_B128+27 |") and "| 25.76 |" in rows[1]


def test_table3_x4_alone_trains_its_x2_first_and_starts_from_it(dir_data, tmp_path, driver, monkeypatch,
                                                                 capfd):
    save = tmp_path / "save"
    env = _env(dir_data, save, ONLY="EDSR_Basis_X4_L32", EPOCHS="1", EXTRA=SR_EXTRA)
    code, out, err = _drive(driver, monkeypatch, capfd, env, "table3")
    assert code == 0, err
    assert "EDSR_Basis_X4_L32 starts from EDSR_Basis_X2_L32, which is not trained yet" in out
    assert out.index("EDSR_Basis_X2_L32 train on") < out.index("partial load: EDSR_Basis_X4_L32") \
        < out.index("EDSR_Basis_X4_L32 train on")
    assert "upsampler tail.0" in out
    x2 = read_state_dict(save / "EDSR_Basis_X2_L32" / "model" / "model_best.pt")
    x4_args = json.loads((save / "EDSR_Basis_X4_L32" / "args.json").read_text())
    init = read_state_dict(x4_args["pre_train"])
    note = (save / "init" / "EDSR_Basis_X4_L32.txt").read_text()
    assert note.startswith("partial load: EDSR_Basis_X4_L32 starts from") and note in out
    assert x4_args["scale"] == [4] and x4_args["patch_size"] == 24
    body = [k for k in x2 if not k.startswith("tail.0.")]
    assert body and all(torch.equal(init[k], x2[k]) for k in body)
    assert {k for k in init if k.startswith("tail.0.")} != {k for k in x2 if k.startswith("tail.0.")}
    metrics = json.loads((save / "test" / "EDSR_Basis_X4_L32" / "results.json").read_text())[0]["metrics"]
    assert set(metrics) == {f"{name}_x4" for name in ("Set5", "Set14", "B100", "Urban100", "DIV2K")}
    assert not (save / "test" / "EDSR_Basis_X2_L32").exists()  # trained for x4, not asked for
    rows = _table_rows(out)
    assert len(rows) == 2 and rows[1].startswith("| EDSR_Basis_X4_L32 |") and "| 32.39 |" in rows[1]


def _official_cls_file(reference_dir, config, path):
    """A random-weight checkpoint in the official key layout (official_state_dicts/<config>.tsv)."""
    from image_classification.model import OFFICIAL_KEYS, build_model
    from image_classification.model.checkpoint import key_renamer
    from image_classification.option import parse_args

    line = {r["config"]: r["command_line"] for r in csv.DictReader(
        open(reference_dir / "official_models.tsv"), delimiter="\t")}[config]
    args = parse_args(line.split())
    ours = build_model(args).state_dict()
    rename = key_renamer(OFFICIAL_KEYS.get(args.model, ()))
    with open(reference_dir / "official_state_dicts" / f"{config}.tsv") as f:
        keys = [row["key"] for row in csv.DictReader(f, delimiter="\t")]
    torch.save({key: ours[rename(key)].clone() for key in keys}, path)
    return ours


def _official_sr_file(config_line, path):
    from super_resolution.model import build_model, official_key_map
    from super_resolution.option import parse_args

    model = build_model(parse_args(config_line.split()))
    state = model.state_dict()
    torch.save({official: state[ours].clone() for ours, official in official_key_map(model).items()}, path)


def test_evaluate_tests_official_layout_checkpoints_of_both_trees(dir_data, tmp_path, reference_dir, driver,
                                                                  monkeypatch, capfd):
    models = tmp_path / "released"
    models.mkdir()
    _official_cls_file(reference_dir, "ResNet56_Basis", models / "ResNet_Basis.pt")
    _official_cls_file(reference_dir, "ResNet56_Group8", models / "ResNet_Group.pt")
    _official_sr_file("--model SRResNet_Basis --scale 4 --basis_size 64 --n_basis 14 --bn_every "
                      "--n_resblocks 16 --n_feats 64", models / "SRResNet_Basis_X4_L16_B64+14.pt")
    _official_sr_file("--model EDSR_Factor --scale 4 --sic_layer 2 --n_resblocks 8 --n_feats 128 "
                      "--res_scale 1", models / "EDSR_Factor_X4_L8_SIC2.pt")
    save = tmp_path / "save"
    # EXTRA goes to every line, so options of one tree (--n_val) mean one call per tree
    env = _env(dir_data, save, ONLY="ResNet56_Basis,ResNet56_Group8,VGG16", EXTRA="--n_threads 0")
    code, cls, err = _drive(driver, monkeypatch, capfd, env, "evaluate", str(models))
    assert code == 0, err
    env = _env(dir_data, save, ONLY="SRResNet_Basis_X4_B64+14,EDSR_Factor_X4_L8_SIC2",
               EXTRA="--n_val 1 --n_threads 0")
    code, sr, err = _drive(driver, monkeypatch, capfd, env, "evaluate", str(models))
    assert code == 0, err
    assert re.search(r"no checkpoint in .* for 1 configuration\(s\), not tested: VGG16", cls)
    evaluated = save / "evaluate"
    for name, option, file in (("ResNet56_Basis", "pretrained", "ResNet_Basis.pt"),
                               ("EDSR_Factor_X4_L8_SIC2", "pre_train", "EDSR_Factor_X4_L8_SIC2.pt")):
        assert json.loads((evaluated / name / "args.json").read_text())[option] == str(models / file)
    results = json.loads((evaluated / "ResNet56_Group8" / "results.json").read_text())
    assert 0 <= results[0]["metrics"]["top1_error"] <= 100
    assert "Table 5" in cls and any(r.startswith("| ResNet56_Group8 |") for r in _table_rows(cls))
    assert "Table 2" in sr
    assert any(r.startswith("| SRResNet_Basis_X4_B64+14 |") and "| 31.84 |" in r for r in _table_rows(sr))


def test_missing_data_set_stops_before_any_training(tmp_path, driver, monkeypatch, capfd):
    env = _env(tmp_path / "nothing", tmp_path / "save", ONLY="SRResNet_X4", EPOCHS="1")
    code, out, err = _drive(driver, monkeypatch, capfd, env, "table2")
    assert code == 2 and " on cpu" not in out
    assert err.startswith("error: dataset folder not found:") and "GT_sub" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "save" / "SRResNet_X4").exists()


def test_help_lists_variables_and_configurations_and_bad_settings_are_refused(repo_root, tmp_path, driver,
                                                                               monkeypatch, capfd):
    names = ("table5_cifar10.sh", "table2_sr_light.sh", "table3_edsr.sh", "evaluate.sh", "params.sh")
    helps = {name: _script(repo_root, name, _env(tmp_path, tmp_path), "--help").stdout for name in names}
    for name, text in helps.items():
        assert text.startswith(f"usage: [VARIABLE=value ...] scripts/paper/{name}")
    out = helps["table3_edsr.sh"]
    for variable in ("DIR_DATA", "DIR_SAVE", "GPUS", "DISTRIBUTED", "EPOCHS", "ONLY", "EXTRA"):
        assert f"  {variable} " in out
    assert "experiment/paper/" in out and "EDSR_Basis_X4_L32U" in out and "ResNet56" not in out
    assert "ResNet56_Basis" in helps["table5_cifar10.sh"] and "SRResNet_X4" in helps["table2_sr_light.sh"]
    assert "VGG16_Kmeans" not in helps["evaluate.sh"] and "EDSR_X3_L32" in helps["evaluate.sh"]
    code, _, err = _drive(driver, monkeypatch, capfd, _env(tmp_path, tmp_path, ONLY="ResNet57"), "table5")
    assert code == 2 and "unknown configuration 'ResNet57'" in err and "ResNet56_Basis" in err
    code, _, err = _drive(driver, monkeypatch, capfd, _env(tmp_path, tmp_path, EPOCHS="ten"), "table2")
    assert code == 2 and err == "error: EPOCHS='ten' is not accepted; expected an integer >= 1 (or empty)\n"


def test_params_prints_every_row_with_exact_counts_beside_the_paper(repo_root, tmp_path, reference_dir):
    out = _script(repo_root, "params.sh", _env(tmp_path, tmp_path)).stdout
    with open(reference_dir / "official_models.tsv", newline="") as f:
        official = {r["config"]: r for r in csv.DictReader(f, delimiter="\t")}
    lines = {line.split()[0]: line for line in out.splitlines() if line and line.split()[0] in official}
    assert set(lines) == set(official)  # every configuration of Tables 2, 3 and 5
    for name, row in official.items():
        exact = row["weights_per_residual_block"] or row["weight_params(dim>1)"]
        assert f" {int(exact):,} " in lines[name], name
    assert lines["ResNet56_Basis"].endswith("DIFFERS: #params 195k vs 186k, compression 23.0 vs 21.9")
    assert lines["ResNet56_Factor"].endswith("DIFFERS: #params 224k vs 212k, compression 26.3 vs 24.9")
    assert lines["VGG16_Group64"].endswith("DIFFERS: compression 25.8 vs 25.9 (last digit)")
    assert lines["VGG16_Basis"].endswith("agrees") and lines["EDSR_Basis_X4_L32U"].endswith("agrees")
    for quoted in ("VGG16_Kmeans", "DenseNet40_KSE", "DenseNet40_SimpleSVD", "ResNet56_KSE"):
        assert re.search(rf"^{quoted} +quoted +\S+", out, re.M)


def test_configs_use_the_official_training_lines_with_the_issue_corrections(driver, reference_dir):
    configs = {c.name: c for c in driver.load_configs()}
    with open(reference_dir / "official_models.tsv", newline="") as f:
        official = {r["config"]: r["command_line"].split() for r in csv.DictReader(f, delimiter="\t")}
    runnable = [c for c in configs.values() if c.runnable]
    assert sorted(c.name for c in runnable) == sorted(official)
    assert [len([c for c in runnable if c.table == t]) for t in "523"] == [12, 10, 12]
    for config in runnable:  # the model options of the official listing, in the training and test lines
        model_options = " ".join(official[config.name])
        assert model_options in " ".join(config.train)\
            or all(t in config.train for t in official[config.name])
        assert all(t in config.test for t in official[config.name]), config.name
        assert "--reset" not in config.train and "--save" not in config.train
    with open(reference_dir / "official_commands.tsv", newline="") as f:
        lines = [r["command"].split()[2:] for r in csv.DictReader(f, delimiter="\t")
                 if r["script"] != "demo.sh"]
    trains = [" ".join(c.train) for c in runnable if c.source == "official"]
    for line in lines:
        kept = [t for i, t in enumerate(line) if t != "--reset" and "--save" not in line[max(i - 1, 0):i + 1]]
        text = " ".join(kept).replace("--group_size 128", "--group_size 64")
        assert text in trains, text
    group = configs["VGG16_Group64"]
    assert group.source == "official" and "--group_size 64" in " ".join(group.train)
    assert {c.name for c in runnable if c.source == "ours"} == {
        "VGG16", "ResNet56", "DenseNet40", *(n for n in official if n.endswith(("_L32", "_L32U")))}
    assert configs["EDSR_Factor_X3_L32"].init_from == "EDSR_Factor_X2_L32"
    assert driver.option_value(configs["EDSR_Basis_X4_L32U"].train, "--patch_size") == "192"
    assert driver.option_value(configs["EDSR_X3_L32"].train, "--patch_size") == "144"
    assert [c.source for c in configs.values()].count("quoted") == 6


def test_x4_starts_from_x2_except_the_upsampler_and_the_load_stays_strict():
    from filter_basis.errors import CheckpointError
    from super_resolution.model import build_model
    from super_resolution.model.checkpoint import load_except_upsampler
    from super_resolution.option import parse_args

    options = "--model EDSR_Basis --n_resblocks 2 --n_feats 16 --basis_size 16 --n_basis 4 --scale".split()
    x2, x4 = build_model(parse_args([*options, "2"])), build_model(parse_args([*options, "4"]))
    before = {k: v.clone() for k, v in x4.state_dict().items()}
    kept = load_except_upsampler(x4, x2.state_dict(), "x2")
    assert kept and all(k.startswith("tail.0.") for k in kept)
    after = x4.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in kept)
    assert all(torch.equal(after[k], v) for k, v in x2.state_dict().items() if not k.startswith("tail.0."))
    wider = build_model(parse_args([*options[:5], "32", *options[6:], "2"]))
    with pytest.raises(CheckpointError, match="shape"):
        load_except_upsampler(x4, wider.state_dict(), "x2")


def test_collect_puts_the_paper_beside_tested_runs_with_their_training_time(tmp_path, driver):
    from filter_basis import collect

    def folder(path, args, results):
        path.mkdir(parents=True)
        (path / "args.json").write_text(json.dumps({"model": "ResNet_Basis", **args}))
        (path / "summary.json").write_text(json.dumps({"weight_params": 10, "compression_pct": 50.0}))
        (path / "results.json").write_text(json.dumps(results))

    trained = tmp_path / "ResNet56_Basis"
    folder(trained, {}, [{"epoch": e, "metrics": {"top1_error": 9.0}, "train_loss": 1.0, "time_s": 30.0}
                         for e in (1, 2)])
    folder(tmp_path / "test" / "ResNet56_Basis", {"test_only": True,
                                                 "pretrained": str(trained / "model" / "model_best.pt")},
           [{"epoch": 0, "metrics": {"top1_error": 7.0}}])
    tables = collect.collect([tmp_path / "test" / "ResNet56_Basis"], tmp_path / "out",
                             paper=collect.read_paper(driver.CONFIGS))
    row = tables["classification_evaluations"].rows[0]
    assert row["run"] == "ResNet56_Basis" and row["train time s"] == 60.0
    assert row["top-1 error % paper"] == 6.60
    assert row["top-1 error % diff"] == pytest.approx(0.4)


def test_gpu_slots_one_run_per_device_or_torchrun_over_all(driver, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run = driver.Run("X train", "super_resolution", ["--model", "EDSR"])
    command, env = driver.main_command(run, "cpu")
    assert command[1].endswith("super_resolution/main.py") and command[2:] == ["--cpu", "--model", "EDSR"]
    command, env = driver.main_command(run, "1")
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and "--cpu" not in command
    command, env = driver.main_command(run, "0,1")
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # GPUS counts the devices the script was given
    assert driver.main_command(run, "1")[1]["CUDA_VISIBLE_DEVICES"] == "5"
    assert driver.main_command(run, "0,1")[1]["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_parallel_slots_start_runs_when_a_device_is_free_and_what_they_wait_for_is_done(
        driver, tmp_path, monkeypatch, capfd):
    """Three runs on two devices: B waits for A; C starts beside A. Each run records start and end."""
    log = tmp_path / "events.txt"

    def fake_command(run, slot):
        code = (f"import time; open({str(log)!r}, 'a').write('start {run.label}\\n'); time.sleep(0.5); "
                f"open({str(log)!r}, 'a').write('end {run.label}\\n')")
        return [sys.executable, "-c", code], dict(os.environ)

    monkeypatch.setattr(driver, "main_command", fake_command)
    settings = driver.Settings(tmp_path, tmp_path / "save", ["0", "1"], False, None, [], [], slots=["0", "1"])
    runs = [driver.Run("A", "t", []), driver.Run("B", "t", [], after=["A"]), driver.Run("C", "t", [])]
    driver.execute(runs, settings)
    events = log.read_text().split("\n")[:-1]
    assert events.index("start C") < events.index("end A") < events.index("start B")
    assert sorted(events) == sorted(f"{e} {r}" for e in ("start", "end") for r in "ABC")
    assert (tmp_path / "save" / "logs" / "A.txt").is_file()  # parallel runs write their output to logs/


def test_evaluate_finds_released_files_first_then_our_experiment_folders(driver, tmp_path):
    configs = {c.name: c for c in driver.load_configs()}
    (tmp_path / "ResNet56" / "model").mkdir(parents=True)
    (tmp_path / "ResNet56" / "model" / "model_best.pt").touch()
    (tmp_path / "ResNet56_Basis" / "model").mkdir(parents=True)
    (tmp_path / "ResNet56_Basis" / "model" / "model_best.pt").touch()
    (tmp_path / "ResNet_Basis.pt").touch()
    assert driver.find_checkpoint(configs["ResNet56"], tmp_path) == tmp_path / "ResNet56/model/model_best.pt"
    assert driver.find_checkpoint(configs["ResNet56_Basis"], tmp_path) == tmp_path / "ResNet_Basis.pt"
    assert driver.find_checkpoint(configs["ResNet56_Factor"], tmp_path) is None
    assert configs["EDSR_X2_L32"].official_file == "EDSR_X2_L32.pt"
    assert configs["SRResNet_X4"].official_file == "SRResNet_X4_L16.pt" and not configs["VGG16"].official_file


def test_evaluate_with_nothing_to_evaluate_names_what_it_looked_for(tmp_path, driver, monkeypatch, capfd):
    empty = tmp_path / "released"
    empty.mkdir()
    env = _env(tmp_path, tmp_path / "save", ONLY="ResNet56_Basis,VGG16")
    code, out, err = _drive(driver, monkeypatch, capfd, env, "evaluate", str(empty))
    assert code == 2 and len(err.splitlines()) == 1
    assert err == (f"error: nothing to evaluate in {empty}: looked for the released files ResNet_Basis.pt "
                   "and <configuration>/model/model_best.pt of 2 configuration(s) (VGG16, ResNet56_Basis)\n")
    assert not (tmp_path / "save").exists()


def test_a_configuration_is_finished_exactly_at_its_epochs(driver, tmp_path):
    """Finished means epochs done >= the --epochs asked for (2 of 3 continues), with or without run.json."""
    from filter_basis import reuse
    from filter_basis.engine.resume import plain_options

    config = {c.name: c for c in driver.load_configs()}["ResNet56_Basis"]
    settings = driver.Settings(tmp_path, tmp_path / "save", [], False, 3, [], ["--depth", "8"])
    options = plain_options(driver._tree_parse(config.tree, driver.train_argv(config, settings)
                                               + ["--save", config.name]))
    folder = settings.dir_save / config.name
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps(options))
    for record in (False, True):
        for done, state, expected in ((2, True, reuse.CONTINUE), (3, True, reuse.FINISHED),
                                      (3, False, reuse.FINISHED), (4, False, reuse.FINISHED)):
            results = [{"epoch": e, "metrics": {"top1_error": 5.0}, "train_loss": 1.0, "time_s": 1.0}
                       for e in range(1, done + 1)]
            (folder / "results.json").write_text(json.dumps(results))
            (folder / "log.txt").write_text("")
            if record:
                (folder / "run.json").write_text(json.dumps({
                    "format": 1, "tree": config.tree, "kind": "training", "made_by": "paper",
                    "epochs_planned": 3, "epochs_done": done, "status": "training", "best": None}))
            (folder / "training_state.pt").unlink(missing_ok=True)
            if state:
                (folder / "training_state.pt").write_bytes(b"state")
            assert driver.training_decision(config, settings).action == expected, (record, done, state)
    (folder / "training_state.pt").unlink(missing_ok=True)
    (folder / "results.json").write_text(json.dumps(results[:2]))
    (folder / "run.json").write_text(json.dumps({"format": 1, "tree": config.tree, "made_by": "paper",
                                                 "epochs_planned": 3, "epochs_done": 2, "status": "stopped"}))
    with pytest.raises(reuse.Refused, match="holds 2 trained epoch.s. but no training_state.pt"):
        driver.training_decision(config, settings)  # neither finished nor continuable: never reset
