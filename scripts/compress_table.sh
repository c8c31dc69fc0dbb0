#!/usr/bin/env bash
# Compressing trained networks (docs/compressing.md): trains dense baselines on the embedded data, starts
# basis models from them with --basis_init at weight and FLOP budgets, with the weights fit or the data
# fit and energy or sensitivity rank selection, and prints one Markdown table: model, budget, fit,
# selection, weights % and FLOPs % of the dense model (for super-resolution also the residual blocks'
# weights %, the paper's count), the metric right after the fit (epoch 0, BatchNorm re-estimated) and
# after 1 epoch of fine-tuning (rows marked for it; --lr 0.001 for Digits, 2e-4 for Photos).
#
#   scripts/compress_table.sh [OUT]   (experiment folders under OUT, default experiment/compress)
#   REDUCED=1 ...      the reduced table: Digits ResNet-8 only (DEPTH=8), dense model trained for 2 epochs,
#                      four rows at 20% of the weights and 50% of the FLOPs, no fine-tuning
#   ROWS="..." ...     the rows, one per word: FAMILY:MODEL_OPTIONS:BUDGET:FIT:SELECT[:tune]
#                      FAMILY digits_resnet|digits_vgg|digits_densenet|photos_edsr|photos_srresnet;
#                      MODEL_OPTIONS comma-separated (e.g. --k_size2,1); BUDGET w0.3 (weights of the whole
#                      model), b0.3 (weights of the residual blocks; super-resolution) or f0.5 (FLOPs)
#   FIT_BATCHES=N      calibration batches of every row (default per family: Digits ResNet 32, VGG and
#                      DenseNet 8, EDSR and SRResNet 4: the sensitivity curves cost one pass over them per
#                      candidate count and basis);  TABLE_ONLY=1: only print the table of runs already made
#   CLS_EPOCHS (ResNet), VGG_EPOCHS, DENSENET_EPOCHS, SR_EPOCHS (EDSR), SRRESNET_EPOCHS: the dense
#                      baselines' epochs (8, 12, 3, 3, 10; the learning rate falls tenfold for the last
#                      epochs: CLS_DECAY step-5-7, step-8-11 from 0.02 for VGG, step-2, and fivefold for
#                      the last SR epoch)
#   EXTRA="..." SR_EXTRA="..."   more options for every classification / super-resolution run
#                      (e.g. EXTRA="--n_train 64 --n_test 50" SR_EXTRA="--test_every 2 --data_test Set5")
#   JOBS=N             run N families at once (default 1: the rows in order, output to the terminal); each
#                      family's dense model and rows then run in order in a job of their own, its output
#                      appended to OUT/compress_table_FAMILY.log, OMP_NUM_THREADS = cores / N unless set
#   PYTHON=...         the interpreter (default: the .venv of scripts/env.sh)
# Runs on the CPU. Runs again pick up where they stopped: a dense model or fine-tuning run is used when
# finished with these options (an interrupted one is continued), a test-only row that ran is not redone;
# the script never removes a folder (docs/results.md, "The tools' rules").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"  # root, py: the .venv (made once), or $PYTHON
OUT=$(realpath -m "${1:-$root/experiment/compress}")  # a relative OUT is taken from the current folder
PY=$py
cd "$root"
TOOL=compress_table
if [ -n "${REDUCED:-}" ]; then  # what a loaded 2-core machine finishes in about half an hour
    CLS_EPOCHS=${CLS_EPOCHS:-2}; CLS_DECAY=${CLS_DECAY:-step-1}; DEPTH=${DEPTH:-8}
    DEFAULT_ROWS="digits_resnet:--k_size2,1:w0.2:weights:energy digits_resnet:--k_size2,1:w0.2:data:energy
digits_resnet:--k_size2,1:w0.2:data:sensitivity digits_resnet:--k_size2,1:f0.5:data:sensitivity"
else
    CLS_EPOCHS=${CLS_EPOCHS:-8}; CLS_DECAY=${CLS_DECAY:-step-5-7}; DEPTH=${DEPTH:-20}
    DEFAULT_ROWS="digits_resnet:--k_size2,1:w0.3:weights:energy digits_resnet:--k_size2,1:w0.3:data:energy
digits_resnet:--k_size2,1:w0.3:data:sensitivity digits_resnet:--k_size2,1:w0.15:weights:energy:tune
digits_resnet:--k_size2,1:w0.15:data:sensitivity:tune digits_resnet:--k_size2,1,--fit_rounds,2:w0.15:data:sensitivity
digits_resnet:--k_size2,1:f0.5:data:sensitivity
photos_edsr:--basis_size,32:b0.3:weights:energy photos_edsr:--basis_size,32:b0.3:data:energy
photos_edsr:--basis_size,32:b0.3:data:sensitivity photos_edsr:--basis_size,32:b0.15:weights:energy:tune
photos_edsr:--basis_size,32:b0.15:data:sensitivity:tune photos_edsr:--basis_size,32,--fit_rounds,2:b0.15:data:sensitivity
photos_edsr:--basis_size,32:f0.5:data:sensitivity
digits_resnet:--k_size2,3:w0.5:data:energy digits_resnet:--k_size2,3:w0.5:data:sensitivity
photos_srresnet:--basis_size,32:b0.5:data:energy photos_srresnet:--basis_size,32:b0.5:data:sensitivity
digits_vgg::w0.3:data:energy digits_vgg::w0.3:data:sensitivity:tune
digits_densenet:--n_basis,16:w0.8:data:energy digits_densenet:--n_basis,16:w0.8:data:sensitivity"
# (--basis_fit weights exists for the linear families only: ResNet --k_size2 1 and EDSR; the others are
# fitted by data from an SVD start, whose output error the table shows beside the fit's)
fi
ROWS=${ROWS:-$DEFAULT_ROWS}
VGG_EPOCHS=${VGG_EPOCHS:-12}
DENSENET_EPOCHS=${DENSENET_EPOCHS:-3}
SR_EPOCHS=${SR_EPOCHS:-3}
SRRESNET_EPOCHS=${SRRESNET_EPOCHS:-10}  # (no global skip: 3 epochs leave it below bicubic, 32.27 dB on Set5)
# shellcheck disable=SC2206
CLS=(--data_train Digits --data_test Digits --batch_size 32 --print_every 1000 --cpu --n_threads 0
     --dir_save "$OUT" ${EXTRA:-})
# shellcheck disable=SC2206
SR=(--scale 2 --data_train Photos --data_test Photos+Set5 --patch_size 64 --batch_size 16 --test_every 260
    --print_every 1000 --cpu --n_threads 0 --dir_save "$OUT" ${SR_EXTRA:-})
EDSR=(--n_resblocks 8 --n_feats 32 --res_scale 0.1)
SRRESNET=(--n_resblocks 4 --n_feats 32)

family() {  # FAMILY -> "tree|dense options|basis model|its options|calibration batches"
    case $1 in
        digits_resnet) echo "image_classification|--model ResNet --depth $DEPTH --epochs $CLS_EPOCHS \
--decay $CLS_DECAY|ResNet_Basis|--depth $DEPTH|${FIT_BATCHES:-32}" ;;
        digits_vgg) echo "image_classification|--model VGG --epochs $VGG_EPOCHS --decay \
step-$((VGG_EPOCHS * 2 / 3))-$((VGG_EPOCHS - 1)) --lr 0.02|VGG_Basis||${FIT_BATCHES:-8}" ;;
            # (no BatchNorm, as the official baseline: at lr 0.1 it stays at chance, at 0.05 it stalls)
        digits_densenet) echo "image_classification|--model DenseNet --depth 40 --k 12 --epochs $DENSENET_EPOCHS \
--decay step-$((DENSENET_EPOCHS - 1))|DenseNet_Basis|--depth 40 --k 12|${FIT_BATCHES:-8}" ;;
        photos_edsr) echo "super_resolution|--model EDSR ${EDSR[*]} --epochs $SR_EPOCHS --decay_type \
step_$((SR_EPOCHS - 1)) --lr 1e-3 --gamma 0.2|EDSR_Basis|${EDSR[*]}|${FIT_BATCHES:-4}" ;;
        photos_srresnet) echo "super_resolution|--model SRResNet ${SRRESNET[*]} --epochs $SRRESNET_EPOCHS \
--decay_type step_$((SRRESNET_EPOCHS - 1)) --lr 1e-3 --gamma 0.2|SRResNet_Basis|${SRRESNET[*]}|${FIT_BATCHES:-4}" ;;
        *) echo "error: unknown family $1 (digits_resnet, digits_vgg, digits_densenet, photos_edsr," \
                "photos_srresnet)" >&2; exit 2 ;;
    esac
}
common() { [ "$1" = image_classification ] && echo "${CLS[*]}" || echo "${SR[*]}"; }
decision() {  # decision TREE NAME OPTIONS...: start, continue or finished (refused: one line, exit 2)
    local tree=$1 name=$2
    shift 2
    "$PY" -m filter_basis.reuse "$TOOL" "$tree" "$OUT/$name" -- "$@" --save "$name"
}
declare -A DENSE_DONE=()
dense() {  # dense FAMILY: train (or continue) its dense baseline until finished (checked once per call)
    local tree dense_opts action
    [ -n "${DENSE_DONE[$1]:-}" ] && return
    DENSE_DONE[$1]=1
    IFS='|' read -r tree dense_opts _ _ _ <<< "$(family "$1")"
    # shellcheck disable=SC2046,SC2086
    action=$(decision "$tree" "$1_dense" $(common "$tree") $dense_opts)
    [ "$action" = finished ] && return
    # shellcheck disable=SC2046,SC2086
    "$PY" "$tree/main.py" $(common "$tree") $dense_opts --save "$1_dense" --auto_resume --made_by "$TOOL"
}
block_fraction() {  # block_fraction DENSE_CHECKPOINT N_RESBLOCKS R: the whole-model weight fraction that
    # leaves R of the residual blocks' weights (everything outside the blocks is not compressed)
    "$PY" - "$@" <<'PYEOF'
import sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
n, r = int(sys.argv[2]), float(sys.argv[3])
weights = {k: v.numel() for k, v in state.items() if v.dim() > 1}
blocks = sum(v for k, v in weights.items() if k.startswith("body.") and int(k.split(".")[1]) < n)
whole = sum(weights.values())
print(f"{(whole - blocks + r * blocks) / whole:.6f}")
PYEOF
}

run_row() {  # run_row FAMILY:MODEL_OPTIONS:BUDGET:FIT:SELECT[:tune]
    local fam opts budget fit select tune tree model model_opts fit_batches checkpoint target n lr run name
    local options action resume
    IFS=: read -r fam opts budget fit select tune <<< "$1"
    IFS='|' read -r tree _ model model_opts fit_batches <<< "$(family "$fam")"
    dense "$fam"
    checkpoint="$OUT/${fam}_dense/model/model_latest.pt"
    case ${budget:0:1} in
        w) target=(--target_compression "${budget:1}") ;;
        f) target=(--target_flops "${budget:1}") ;;
        b) n=$(sed -n 's/.*--n_resblocks \([0-9]*\).*/\1/p' <<< "$model_opts")
           target=(--target_compression "$(block_fraction "$checkpoint" "$n" "${budget:1}")") ;;
        *) echo "error: budget $budget: w<R> (weights), b<R> (block weights) or f<R> (FLOPs)" >&2; exit 2 ;;
    esac
    if [ "$tune" = tune ]; then
        # the learning rate the dense ResNet and EDSR end with
        lr=$([ "$tree" = image_classification ] && echo 0.001 || echo 2e-4)
        run=(--epochs 1 --lr "$lr")
    else
        run=(--test_only)
    fi
    name="${fam}_${model}${opts//[-,]/_}_${budget}_${fit}_${select}"
    # shellcheck disable=SC2046,SC2086
    options=($(common "$tree") --model "$model" $model_opts ${opts//,/ } "${target[@]}" --basis_fit "$fit"
             --rank_select "$select" --fit_batches "$fit_batches" --basis_init "$checkpoint" "${run[@]}")
    action=$(decision "$tree" "$name" "${options[@]}")
    [ "$action" = finished ] && { echo "$name: done with these options, used as it is"; return 0; }
    resume=()
    [ "$tune" = tune ] && resume=(--auto_resume)
    "$PY" "$tree/main.py" "${options[@]}" --save "$name" "${resume[@]}" --made_by "$TOOL" ||
        echo "$name: failed (exit $?); the table shows it as not run" >&2
}
run_family() {  # run_family FAMILY: its rows in the order given (its dense model first)
    local row
    for row in $ROWS; do
        [ "${row%%:*}" = "$1" ] || continue
        run_row "$row"  # (a plain command: a refusal inside stops the family, set -e)
    done
    return 0
}

JOBS=${JOBS:-1}
if [ -n "${TABLE_ONLY:-}" ]; then
    :
elif [ "$JOBS" -le 1 ]; then
    for row in $ROWS; do run_row "$row"; done
else  # one job per family (its dense model, then its rows), at most JOBS at once, the cores split among them
    cores=$(nproc)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / JOBS > 0 ? cores / JOBS : 1 ))}
    mkdir -p "$OUT"
    rcs=$(mktemp -d)
    families=()
    for row in $ROWS; do
        [[ " ${families[*]} " == *" ${row%%:*} "* ]] || families+=("${row%%:*}")
    done
    for fam in "${families[@]}"; do
        family "$fam" > /dev/null  # (an unknown family: refused before anything starts)
    done
    for fam in "${families[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
        log="$OUT/compress_table_$fam.log"
        echo "$fam: started $(date +%H:%M:%S), output appended to $log"
        ( set +e; ( set -e; run_family "$fam" ); echo $? > "$rcs/$fam" ) >> "$log" 2>&1 &
    done
    wait
    status=0
    for fam in "${families[@]}"; do
        rc=$(cat "$rcs/$fam" 2>/dev/null || echo 1)
        echo "$fam: finished $(date +%H:%M:%S), exit $rc"
        if [ "$rc" != 0 ]; then
            tail -n 1 "$OUT/compress_table_$fam.log" >&2
            [ "$status" = 2 ] || status=$rc
        fi
    done
    rm -r "$rcs"
    [ "$status" = 0 ] || exit "$status"
fi

"$PY" - "$OUT" $ROWS <<'PYEOF'
import json, sys
from pathlib import Path
import torch
from filter_basis.engine.record import NotAnExperiment, read_run
out, rows = Path(sys.argv[1]), sys.argv[2:]

def record(folder):
    try:
        return read_run(folder)
    except NotAnExperiment:
        return None

def metrics(result):
    m = result["metrics"]
    if "top1_error" in m:  # (360 test digits: one digit is 0.28%; the loss shows smaller differences)
        return f"{m['top1_error']:.2f}% err, loss {m['loss']:.4f}"
    return " / ".join(f"{v['psnr']:.2f}" for v in m.values() if isinstance(v, dict) and "psnr" in v) + " dB"

def block_weights(run):
    """Weights of the residual blocks (body.0 .. body.N-1) in the run's checkpoint."""
    state = torch.load(run.folder / "model" / "model_latest.pt", map_location="cpu", weights_only=True)
    n = int(run.options["n_resblocks"])
    return sum(v.numel() for k, v in state.items()
               if v.dim() > 1 and k.startswith("body.") and int(k.split(".")[1]) < n)

def output_error(run):
    """Mean relative output error of the fitted layers: SVD/weights start -> data fit (basis_init.json)."""
    try:
        units = json.loads((run.folder / "basis_init.json").read_text()).get("units") or []
    except (OSError, ValueError):
        return "—"
    if not units:
        return "—"
    mean = lambda key: sum(u[key] for u in units) / len(units)
    return f"{mean('error_start'):.3f} → {mean('error_fit'):.3f}"

print("| model | budget | fit | selection | weights % | block weights % | FLOPs % | layer output error "
      "(start → fit) | right after the fit | after 1 epoch |")
print("|---|---|---|---|---|---|---|---|---|---|")
dense_done = set()
for row in rows:
    fam, opts, budget, fit, select, *tune = row.split(":")
    dense = record(out / f"{fam}_dense")
    if dense is None or not dense.results:
        print(f"| {fam} (dense model not trained) | | | | | | | | | |")
        continue
    sr = "n_resblocks" in dense.options
    if fam not in dense_done:
        dense_done.add(fam)
        print(f"| {dense.options['model']} (dense, {dense.epochs_done} epochs) | — | — | — | 100 | "
              f"{'100' if sr else '—'} | 100 | — | {metrics(dense.results[-1])} | — |")
    name = f"{fam}_{'*'}{opts.replace('-', '_').replace(',', '_')}_{budget}_{fit}_{select}"
    found = sorted(out.glob(name))
    run = record(found[0]) if found else None
    kind = {"w": "weights", "b": "block weights", "f": "FLOPs"}[budget[0]]
    if run is None or not any(r["epoch"] == 0 for r in run.results):
        print(f"| {fam} {opts} | {kind} {budget[1:]} | {fit} | {select} | — | — | — | — | (not run) | — |")
        continue
    s, d = (json.loads((r.folder / "summary.json").read_text()) for r in (run, dense))
    first = next(r for r in run.results if r["epoch"] == 0)
    tuned = next((r for r in run.results if r["epoch"] == 1), None)
    blocks = f"{100 * block_weights(run) / block_weights(dense):.1f}" if sr else "—"
    label = f"{run.options['model']} {opts.replace(',', ' ')}".strip()
    print(f"| {label} | {kind} {budget[1:]} | {fit} | {select} | {100 * s['weight_params'] / d['weight_params']:.1f} "
          f"| {blocks} | {100 * s['flops'] / d['flops']:.1f} | {output_error(run)} | {metrics(first)} | "
          f"{metrics(tuned) if tuned else '—'} |")
PYEOF
