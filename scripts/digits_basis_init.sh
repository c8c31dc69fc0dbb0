#!/usr/bin/env bash
# Compressing a trained network on Digits (docs/compressing.md): a dense ResNet-20 trained for 10 epochs,
# then ResNet_Basis --k_size2 1 started from it (--basis_init) at several numbers of basis filters: test
# error before fine-tuning (BatchNorm statistics of the dense model, and re-estimated on 10 training
# batches), after 3 fine-tuning epochs, and of the same model trained from random initialisation for the
# same 3 epochs.  Prints the table in Markdown.
#
#   scripts/digits_basis_init.sh [OUT]          (experiment folders under OUT, default experiment/)
#   ROWS="16,32,64 target0.3" scripts/digits_basis_init.sh     (the rows: n_basis1,2,3 or targetR)
#   FINETUNE_ROWS="16,32,64" ...                                (rows that get the fine-tuning run)
#   RANDOM_ROWS="16,32,64" ...                                   (rows that also get the random-init run)
#   TABLE_ONLY=1 ...                                    (only print the table of runs already made)
#   PYTHON=... ...                                      (the interpreter; default: the .venv of env.sh)
#   FIT="--basis_fit weights --rank_select energy" ...  (how --basis_init fits and chooses; default: the
#                                                        data fit and sensitivity selection)
# Runs on the CPU; on a 2-core machine the dense model takes ~20 min, each 3-epoch run ~6 min.
# Runs again pick up where they stopped: the dense model and the trained rows are used only when finished
# with these options (an interrupted one is continued), the test-only rows are redone; the script replaces
# only folders it made (docs/results.md, "The tools' rules").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"  # root, py: the .venv (made once), or $PYTHON
OUT=$(realpath -m "${1:-$root/experiment}")  # a relative OUT is taken from the current folder
PY=$py
cd "$root"
TOOL=digits_basis_init
ROWS=${ROWS:-"144,288,576 24,48,96 16,32,64 target0.3 8,16,32 4,8,16"}
FINETUNE_ROWS=${FINETUNE_ROWS:-"24,48,96 16,32,64 target0.3"}
RANDOM_ROWS=${RANDOM_ROWS:-$FINETUNE_ROWS}
DENSE_EPOCHS=${DENSE_EPOCHS:-10}
COMMON=(--depth 20 --data_train Digits --data_test Digits --cpu --n_threads 0 --dir_save "$OUT" ${EXTRA:-})
# shellcheck disable=SC2206
BASIS=("${COMMON[@]}" --model ResNet_Basis --k_size2 1 ${FIT:-})
THREE=(--epochs 3 --decay step-2)  # two epochs at --lr, the last at --lr / 10
DENSE_OPTIONS=("${COMMON[@]}" --model ResNet --epochs "$DENSE_EPOCHS" --decay step-6-9)

state() {  # state NAME OPTIONS...: start, continue or finished (refused: one line, the script stops)
    local name=$1
    shift
    "$PY" -m filter_basis.reuse "$TOOL" image_classification "$OUT/$name" -- "$@" --save "$name"
}
train() {  # train NAME OPTIONS...: start or continue the run NAME, unless it is finished with these options
    local name=$1 action
    shift
    action=$(state "$name" "$@")
    if [ "$action" = finished ]; then
        echo "$name: finished with these options, used as it is"
        return
    fi
    "$PY" image_classification/main.py "$@" --save "$name" --auto_resume --made_by "$TOOL"
}
evaluate() {  # evaluate NAME OPTIONS...: a test-only run, redone in a folder this script made
    local name=$1 action reset=()
    shift
    action=$("$PY" -m filter_basis.reuse "$TOOL" image_classification "$OUT/$name" --replace)
    if [ "$action" = replace ]; then
        reset=(--reset)
    fi
    "$PY" image_classification/main.py "$@" --save "$name" --made_by "$TOOL" "${reset[@]}"
}

if [ -z "${TABLE_ONLY:-}" ]; then
    train digits_dense "${DENSE_OPTIONS[@]}"
fi
dense_state=$(state digits_dense "${DENSE_OPTIONS[@]}")
if [ "$dense_state" != finished ]; then
    echo "error: the dense run $OUT/digits_dense has not finished its $DENSE_EPOCHS epochs; run this script" \
        "again to continue it" >&2
    exit 1
fi
DENSE="$OUT/digits_dense/model/model_latest.pt"

counts() {  # "16,32,64" -> the three --n_basis options; "target0.3" -> --target_compression 0.3
    case $1 in
        target*) echo "--target_compression ${1#target}" ;;
        *) IFS=, read -r a b c <<< "$1"; echo "--n_basis1 $a --n_basis2 $b --n_basis3 $c" ;;
    esac
}
for row in $ROWS; do
    [ -z "${TABLE_ONLY:-}" ] || break
    name=${row//,/_}
    # shellcheck disable=SC2046
    evaluate "digits_before_$name" "${BASIS[@]}" $(counts "$row") --basis_init "$DENSE" --test_only
    # shellcheck disable=SC2046
    evaluate "digits_nobn_$name" "${BASIS[@]}" $(counts "$row") --basis_init "$DENSE" --test_only \
        --bn_batches 0
    [[ " $FINETUNE_ROWS " == *" $row "* ]] || continue
    # shellcheck disable=SC2046
    train "digits_finetune_$name" "${BASIS[@]}" $(counts "$row") --basis_init "$DENSE" "${THREE[@]}" --lr 0.01
    if [[ " $RANDOM_ROWS " == *" $row "* ]]; then
        # the counts --target_compression chose, read back from the fine-tuning run's record
        opts=$("$PY" -c "import sys; from filter_basis.engine.record import read_run
a = read_run(sys.argv[1]).options
print(' '.join(f'--n_basis{i} {a[f\"n_basis{i}\"]}' for i in (1, 2, 3)))" "$OUT/digits_finetune_$name")
        # shellcheck disable=SC2086
        train "digits_random_$name" "${BASIS[@]}" $opts "${THREE[@]}" --lr 0.1
    fi
done
"$PY" - "$OUT" $ROWS <<'PYEOF'
import json, sys
from pathlib import Path
from filter_basis.engine.record import NotAnExperiment, read_run
out, rows = Path(sys.argv[1]), sys.argv[2:]
def record(folder):
    try:
        return read_run(out / folder)
    except NotAnExperiment:
        return None
def last(folder, key="top1_error"):
    found = record(folder)
    return found.results[-1]["metrics"][key] if found is not None and found.results else None
def cell(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}"
print(f"dense ResNet-20: {cell(last('digits_dense'))}% test error, "
      f"{json.loads((out / 'digits_dense' / 'summary.json').read_text())['weight_params']:,} weights")
print("| n_basis1/2/3 | weights (% of dense) | weight error | error before, dense BN | error before, "
      "BN re-estimated | after 3 epochs | random init, 3 epochs |")
print("|---|---|---|---|---|---|---|")
for row in rows:
    name = row.replace(",", "_")
    done = out / f"digits_before_{name}"
    before = record(f"digits_before_{name}")
    if before is None:
        print(f"| {row} | not run yet |  |  |  |  |  |")
        continue
    summary = json.loads((done / "summary.json").read_text())
    counts = "/".join(str(before.options[f"n_basis{i}"]) for i in (1, 2, 3))
    label = f"{counts} (--target_compression {row[6:]})" if row.startswith("target") else counts
    fit = json.loads((done / "basis_init.json").read_text())
    print(f"| {label} | {summary['weight_params']:,} ({summary['compression_pct']:.1f}%) | "
          f"{cell(fit.get('total_relative_error'), 3)} | {cell(last(f'digits_nobn_{name}'))} | "
          f"{cell(last(f'digits_before_{name}'))} | {cell(last(f'digits_finetune_{name}'))} | "
          f"{cell(last(f'digits_random_{name}'))} |")
PYEOF
