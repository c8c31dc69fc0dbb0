#!/usr/bin/env bash
# Compressing a trained network on Digits (README, "Compressing a trained network"): a dense ResNet-20
# trained for 10 epochs, then ResNet_Basis --k_size2 1 started from it (--basis_init) at several numbers
# of basis filters: test error before fine-tuning (BatchNorm statistics of the dense model, and
# re-estimated on 10 training batches), after 3 fine-tuning epochs, and of the same model trained from
# random initialisation for the same 3 epochs.  Prints the table in Markdown.
#
#   scripts/digits_basis_init.sh [OUT]          (experiment folders under OUT, default experiment/)
#   ROWS="16,32,64 target0.3" scripts/digits_basis_init.sh     (the rows: n_basis1,2,3 or targetR)
#   FINETUNE_ROWS="16,32,64" ...                                (rows that get the fine-tuning run)
#   RANDOM_ROWS="16,32,64" ...                                   (rows that also get the random-init run)
#   TABLE_ONLY=1 ...                                    (only print the table of runs already made)
#   FIT="--basis_fit weights --rank_select energy" ...  (how --basis_init fits and chooses; default: the
#                                                        data fit and sensitivity selection)
# Runs on the CPU; on a 2-core machine the dense model takes ~20 min, each 3-epoch run ~6 min.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-experiment}
ROWS=${ROWS:-"144,288,576 24,48,96 16,32,64 target0.3 8,16,32 4,8,16"}
FINETUNE_ROWS=${FINETUNE_ROWS:-"24,48,96 16,32,64 target0.3"}
RANDOM_ROWS=${RANDOM_ROWS:-$FINETUNE_ROWS}
COMMON=(--depth 20 --data_train Digits --data_test Digits --cpu --n_threads 0 --dir_save "$OUT")
# shellcheck disable=SC2206
BASIS=("${COMMON[@]}" --model ResNet_Basis --k_size2 1 ${FIT:-})
THREE=(--epochs 3 --decay step-2)  # two epochs at --lr, the last at --lr / 10

[ -f "$OUT/digits_dense/model/model_latest.pt" ] ||
    $PY image_classification/main.py "${COMMON[@]}" --model ResNet --epochs 10 --decay step-6-9 \
        --save digits_dense --reset
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
    $PY image_classification/main.py "${BASIS[@]}" $(counts "$row") --basis_init "$DENSE" --test_only \
        --save "digits_before_$name" --reset
    # shellcheck disable=SC2046
    $PY image_classification/main.py "${BASIS[@]}" $(counts "$row") --basis_init "$DENSE" --test_only \
        --bn_batches 0 --save "digits_nobn_$name" --reset
    [[ " $FINETUNE_ROWS " == *" $row "* ]] || continue
    # shellcheck disable=SC2046
    $PY image_classification/main.py "${BASIS[@]}" $(counts "$row") --basis_init "$DENSE" "${THREE[@]}" \
        --lr 0.01 --save "digits_finetune_$name" --reset
    if [[ " $RANDOM_ROWS " == *" $row "* ]]; then
        # the counts --target_compression chose, read back from the fine-tuning run's args.json
        opts=$($PY -c "import json,sys; a=json.load(open(sys.argv[1]));
print(' '.join(f'--n_basis{i} {a[f\"n_basis{i}\"]}' for i in (1, 2, 3)))" "$OUT/digits_finetune_$name/args.json")
        # shellcheck disable=SC2086
        $PY image_classification/main.py "${BASIS[@]}" $opts "${THREE[@]}" --lr 0.1 \
            --save "digits_random_$name" --reset
    fi
done
$PY - "$OUT" $ROWS <<'PYEOF'
import json, sys
from pathlib import Path
out, rows = Path(sys.argv[1]), sys.argv[2:]
def last(folder, key="top1_error"):
    path = out / folder / "results.json"
    return json.loads(path.read_text())[-1]["metrics"][key] if path.is_file() else None
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
    args = json.loads((done / "args.json").read_text())
    summary = json.loads((done / "summary.json").read_text())
    counts = "/".join(str(args[f"n_basis{i}"]) for i in (1, 2, 3))
    label = f"{counts} (--target_compression {row[6:]})" if row.startswith("target") else counts
    fit = json.loads((out / f"digits_before_{name}" / "basis_init.json").read_text())
    print(f"| {label} | {summary['weight_params']:,} ({summary['compression_pct']:.1f}%) | "
          f"{cell(fit.get('total_relative_error'), 3)} | {cell(last(f'digits_nobn_{name}'))} | "
          f"{cell(last(f'digits_before_{name}'))} | {cell(last(f'digits_finetune_{name}'))} | "
          f"{cell(last(f'digits_random_{name}'))} |")
PYEOF
