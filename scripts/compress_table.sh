#!/usr/bin/env bash
# Compressing trained networks (docs/compressing.md): trains dense baselines on the embedded data, starts
# basis models from them with --basis_init at weight and FLOP budgets, with the weights fit or the data
# fit and energy or sensitivity rank selection, and prints one Markdown table: model, budget, fit,
# selection, weights % and FLOPs % of the dense model, the metric right after the fit (epoch 0, BatchNorm
# re-estimated) and after 1 epoch of fine-tuning (rows marked for it).
#
#   scripts/compress_table.sh [OUT]           (experiment folders under OUT, default experiment/compress)
#   REDUCED=1 ...      the reduced table: Digits ResNet-8 only (DEPTH=8), dense model trained for 2 epochs,
#                      four rows at 20% of the weights and 50% of the FLOPs, no fine-tuning
#   ROWS="..." ...     the rows, one per word: FAMILY:MODEL_OPTIONS:BUDGET:FIT:SELECT[:tune]
#                      FAMILY digits_resnet|digits_vgg|digits_densenet|photos_edsr|photos_srresnet;
#                      MODEL_OPTIONS comma-separated (e.g. --k_size2,1); BUDGET w0.3 (weights) or f0.5 (FLOPs)
#   FIT_BATCHES=32     calibration batches;  TABLE_ONLY=1: only print the table of runs already made
# Runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-experiment/compress}
FIT=${FIT_BATCHES:-32}
if [ -n "${REDUCED:-}" ]; then  # what a loaded 2-core machine finishes in about half an hour
    CLS_EPOCHS=${CLS_EPOCHS:-2}; CLS_DECAY=${CLS_DECAY:-step-1}; DEPTH=${DEPTH:-8}
    DEFAULT_ROWS="digits_resnet:--k_size2,1:w0.2:weights:energy digits_resnet:--k_size2,1:w0.2:data:energy
digits_resnet:--k_size2,1:w0.2:data:sensitivity digits_resnet:--k_size2,1:f0.5:data:sensitivity"
else
    CLS_EPOCHS=${CLS_EPOCHS:-8}; CLS_DECAY=${CLS_DECAY:-step-5-7}; DEPTH=${DEPTH:-20}
    DEFAULT_ROWS="digits_resnet:--k_size2,1:w0.3:weights:energy digits_resnet:--k_size2,1:w0.3:data:energy
digits_resnet:--k_size2,1:w0.3:data:sensitivity digits_resnet:--k_size2,1:w0.15:weights:energy:tune
digits_resnet:--k_size2,1:w0.15:data:sensitivity:tune digits_resnet:--k_size2,1:f0.5:data:sensitivity
digits_resnet:--k_size2,3:w0.5:data:sensitivity digits_vgg::w0.3:data:sensitivity:tune
digits_densenet:--n_basis,16:w0.8:data:sensitivity photos_edsr:--basis_size,32:w0.3:weights:energy
photos_edsr:--basis_size,32:w0.3:data:sensitivity photos_edsr:--basis_size,32:w0.15:weights:energy:tune
photos_edsr:--basis_size,32:w0.15:data:sensitivity:tune photos_edsr:--basis_size,32:f0.5:data:sensitivity
photos_srresnet:--basis_size,32:w0.5:data:sensitivity"
fi
ROWS=${ROWS:-$DEFAULT_ROWS}
CLS=(--data_train Digits --data_test Digits --batch_size 32 --print_every 1000 --cpu --n_threads 0
     --dir_save "$OUT")
SR=(--scale 2 --data_train Photos --data_test Photos+Set5 --patch_size 64 --batch_size 16 --print_every 1000
    --cpu --n_threads 0 --dir_save "$OUT")
EDSR=(--n_resblocks 8 --n_feats 32 --res_scale 0.1)
SRRESNET=(--n_resblocks 4 --n_feats 32)

family() {  # FAMILY -> "tree|dense options|basis model|its options"
    case $1 in
        digits_resnet) echo "image_classification|--model ResNet --depth $DEPTH|ResNet_Basis|--depth $DEPTH" ;;
        digits_vgg) echo "image_classification|--model VGG|VGG_Basis|" ;;
        digits_densenet) echo "image_classification|--model DenseNet --depth 40 --k 12|DenseNet_Basis|--depth 40 --k 12" ;;
        photos_edsr) echo "super_resolution|--model EDSR ${EDSR[*]}|EDSR_Basis|${EDSR[*]}" ;;
        photos_srresnet) echo "super_resolution|--model SRResNet ${SRRESNET[*]}|SRResNet_Basis|${SRRESNET[*]}" ;;
        *) echo "unknown family $1" >&2; exit 2 ;;
    esac
}
common() { [ "$1" = image_classification ] && echo "${CLS[*]}" || echo "${SR[*]}"; }

dense() {  # train the dense baseline of FAMILY once
    IFS='|' read -r tree dense_opts _ _ <<< "$(family "$1")"
    [ -f "$OUT/$1_dense/model/model_latest.pt" ] && return
    if [ "$tree" = image_classification ]; then
        # shellcheck disable=SC2046,SC2086
        $PY $tree/main.py $(common $tree) $dense_opts --epochs "$CLS_EPOCHS" --decay "$CLS_DECAY" \
            --save "$1_dense" --reset
    else
        # shellcheck disable=SC2046,SC2086
        $PY $tree/main.py $(common $tree) $dense_opts --epochs 3 --decay_type step_2 --lr 1e-3 --gamma 0.2 \
            --save "$1_dense" --reset
    fi
}

for row in $ROWS; do
    [ -z "${TABLE_ONLY:-}" ] || break
    IFS=: read -r fam opts budget fit select tune <<< "$row"
    dense "$fam"
    IFS='|' read -r tree _ model model_opts <<< "$(family "$fam")"
    target=$([ "${budget:0:1}" = w ] && echo "--target_compression ${budget:1}" || echo "--target_flops ${budget:1}")
    name="${fam}_${model}${opts//[-,]/_}_${budget}_${fit}_${select}"
    [ -f "$OUT/$name/results.json" ] && continue
    if [ "$tune" = tune ]; then
        lr=$([ "$tree" = image_classification ] && echo 0.01 || echo 1e-4)
        run=(--epochs 1 --lr "$lr")
    else
        run=(--test_only)
    fi
    # shellcheck disable=SC2046,SC2086
    $PY $tree/main.py $(common $tree) --model $model $model_opts ${opts//,/ } $target --basis_fit "$fit" \
        --rank_select "$select" --fit_batches "$FIT" --basis_init "$OUT/${fam}_dense/model/model_latest.pt" \
        "${run[@]}" --save "$name" --reset
done

$PY - "$OUT" $ROWS <<'PYEOF'
import json, sys
from pathlib import Path
out, rows = Path(sys.argv[1]), sys.argv[2:]

def metrics(record):
    m = record["metrics"]
    if "top1_error" in m:
        return f"{m['top1_error']:.2f}% err"
    return " / ".join(f"{v['psnr']:.2f}" for v in m.values() if isinstance(v, dict) and "psnr" in v) + " dB"

print("| model | budget | fit | selection | weights % | FLOPs % | right after the fit | after 1 epoch |")
print("|---|---|---|---|---|---|---|---|")
dense_done = set()
for row in rows:
    fam, opts, budget, fit, select, *tune = row.split(":")
    folders = sorted(out.glob(f"{fam}_*{opts.replace('-', '_').replace(',', '_')}_{budget}_{fit}_{select}"))
    dense = out / f"{fam}_dense"
    if fam not in dense_done and (dense / "results.json").is_file():
        dense_done.add(fam)
        last = json.loads((dense / "results.json").read_text())[-1]
        print(f"| {fam} dense | — | — | — | 100 | 100 | {metrics(last)} | — |")
    if not folders or not (folders[0] / "results.json").is_file():
        print(f"| {fam} {opts} | {budget} | {fit} | {select} | — | — | (not run) | — |")
        continue
    run = folders[0]
    s, d = (json.loads((f / "summary.json").read_text()) for f in (run, dense))
    results = json.loads((run / "results.json").read_text())
    first = next(r for r in results if r["epoch"] == 0)
    tuned = next((r for r in results if r["epoch"] == 1), None)
    label = f"{json.loads((run / 'args.json').read_text())['model']} {opts.replace(',', ' ')}".strip()
    b = ("weights " if budget[0] == "w" else "FLOPs ") + budget[1:]
    print(f"| {label} | {b} | {fit} | {select} | {100 * s['weight_params'] / d['weight_params']:.1f} | "
          f"{100 * s['flops'] / d['flops']:.1f} | {metrics(first)} | {metrics(tuned) if tuned else '—'} |")
PYEOF
