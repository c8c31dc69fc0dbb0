"""scripts/compress_table.sh on a few Digits and Photos images: every kind of row runs (weights and data
fit, a FLOP and a block-weight budget, a fine-tuned row), a second call reuses the finished runs, folders
the script did not make are refused untouched."""

import json
import os
import subprocess
import sys

ROWS = ("digits_resnet:--k_size2,1:w0.5:weights:energy digits_resnet:--k_size2,1:f0.8:data:sensitivity:tune "
        "photos_edsr:--basis_size,8:b0.3:data:sensitivity")
ROW_FOLDER = "digits_resnet_ResNet_Basis__k_size2_1_w0.5_weights_energy"


def test_the_table_runs_every_kind_of_row_reuses_them_and_refuses_foreign_folders(repo_root, tmp_path):
    out = tmp_path / "exp"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "DEPTH": "8", "CLS_EPOCHS": "1",
           "CLS_DECAY": "step-1", "SR_EPOCHS": "2", "FIT_BATCHES": "1", "ROWS": ROWS,
           "EXTRA": "--n_train 64 --n_test 50",
           "SR_EXTRA": "--test_every 2 --data_test Set5 --patch_size 48 --batch_size 4"}
    script = str(repo_root / "scripts" / "compress_table.sh")
    first = subprocess.run(["bash", script, str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    table = [line for line in first.stdout.splitlines() if line.startswith("| ")]  # (not the |---| rule)
    assert len(table) == 1 + 2 + 3  # header, two dense rows, three rows
    rows = [[c.strip() for c in line.split("|")] for line in table[1:]]
    cells = {f"{row[1]} {row[2]}": row for row in rows}
    flops = cells["ResNet_Basis --k_size2 1 FLOPs 0.8"]
    assert float(flops[7]) <= 80.0 and flops[10] != "—"  # the FLOP budget holds; fine-tuned one epoch
    blocks = cells["EDSR_Basis --basis_size 8 block weights 0.3"]
    assert 25.0 <= float(blocks[6]) <= 30.0 and "dB" in blocks[9]  # 30% of the residual blocks' weights
    assert "→" in blocks[8]  # the data fit's layer output errors
    for name in ("digits_resnet_dense", "photos_edsr_dense", ROW_FOLDER):
        assert json.loads((out / name / "run.json").read_text())["made_by"] == "compress_table"

    # a second call, two families at once (JOBS=2): every run is used as it is, nothing trained again, each
    # family's output in its own log, the same table
    tuned = out / "digits_resnet_ResNet_Basis__k_size2_1_f0.8_data_sensitivity" / "results.json"
    results = tuned.read_text()
    again = subprocess.run(["bash", script, str(out)], env={**env, "JOBS": "2"}, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    logs = {fam: (out / f"compress_table_{fam}.log").read_text() for fam in ("digits_resnet", "photos_edsr")}
    assert logs["digits_resnet"].count("done with these options, used as it is") == 2
    assert logs["photos_edsr"].count("done with these options, used as it is") == 1
    assert again.stdout.count(", exit 0") == 2
    assert [line for line in again.stdout.splitlines() if line.startswith("| ")] == table
    assert tuned.read_text() == results

    # a folder the script did not make, where a row's run would go: refused in one line, left alone
    foreign = out / "digits_resnet_ResNet_Basis__k_size2_1_w0.4_weights_energy"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("mine\n")
    row = "digits_resnet:--k_size2,1:w0.4:weights:energy"
    refused = subprocess.run(["bash", script, str(out)], env={**env, "ROWS": row}, capture_output=True,
                             text=True, timeout=900)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith(f"error: {foreign} is not an experiment folder")
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt"]
    # the same with JOBS=2: the family stops, the script exits 2 with the family's last line
    parallel = subprocess.run(["bash", script, str(out)], env={**env, "ROWS": f"{row} {ROWS.split()[-1]}",
                              "JOBS": "2"}, capture_output=True, text=True, timeout=900)
    assert parallel.returncode == 2, parallel.stdout[-2000:] + parallel.stderr[-2000:]
    assert parallel.stderr.splitlines()[-1].startswith(f"error: {foreign} is not an experiment folder")
    assert "photos_edsr: finished" in parallel.stdout and ", exit 0" in parallel.stdout
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt"]
