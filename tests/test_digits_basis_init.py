"""scripts/digits_basis_init.sh on a few Digits images: the dense run is used only when finished (an
interrupted one is continued), folders the script did not make are refused untouched."""

import json
import os
import subprocess
import sys

SMALL = "--n_train 64 --n_test 50 --batch_size 32"


def test_an_interrupted_dense_run_is_continued_and_foreign_folders_are_refused(repo_root, tmp_path):
    out = tmp_path / "exp"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "DENSE_EPOCHS": "2",
           "EXTRA": SMALL, "ROWS": "4,8,16", "FINETUNE_ROWS": ""}
    # an interrupted dense run: 1 epoch of the 2 asked for, with its training state
    common = ["--depth", "20", "--data_train", "Digits", "--data_test", "Digits", "--cpu", "--n_threads", "0",
              "--dir_save", str(out), *SMALL.split()]
    subprocess.run([sys.executable, str(repo_root / "image_classification" / "main.py"), *common, "--model",
                    "ResNet", "--epochs", "1", "--decay", "step-6-9", "--save", "digits_dense"], cwd=tmp_path,
                   env=env, check=True, capture_output=True)
    dense = out / "digits_dense"
    first = json.loads((dense / "results.json").read_text())[0]
    foreign = out / "digits_nobn_4_8_16"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("mine\n")

    script = repo_root / "scripts" / "digits_basis_init.sh"
    result = subprocess.run(["bash", str(script), "exp"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=1500)  # a relative OUT: from the current folder
    assert result.returncode == 2, result.stdout + result.stderr
    results = json.loads((dense / "results.json").read_text())
    assert [r["epoch"] for r in results] == [1, 2] and results[0] == first  # continued, not restarted
    assert json.loads((dense / "run.json").read_text())["epochs_done"] == 2
    before = out / "digits_before_4_8_16"
    assert json.loads((before / "run.json").read_text())["made_by"] == "digits_basis_init"
    assert json.loads((before / "args.json").read_text())["basis_init"] == str(dense / "model" /
                                                                                "model_latest.pt")
    assert result.stderr.splitlines()[-1] == (
        f"error: {foreign} is not an experiment folder (no run.json): digits_basis_init does not replace it; "
        "nothing was removed: rerun with another output folder, or remove the folder yourself")
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt"]

    table = subprocess.run(["bash", str(script), str(out)], cwd=repo_root, env={**env, "TABLE_ONLY": "1"},
                           capture_output=True, text=True, timeout=1500)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("| 4/8/16 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == "—" and float(cells[4]) == json.loads((before / "results.json").read_text())[-1][
        "metrics"]["top1_error"]
