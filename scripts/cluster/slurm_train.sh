#!/usr/bin/env bash
# One training run as a SLURM batch job that survives preemption, time limits and requeues
# (docs/cluster.md).  Submit it from the repository root with the main.py command line of the run:
#
#   sbatch --nodes 2 --gpus-per-node 4 scripts/cluster/slurm_train.sh \
#       image_classification/main.py --template ResNet --model ResNet_Basis --depth 56 --k_size2 1 \
#       --batch_size 64 --epochs 400 --decay step-250-325 --save resnet56_basis
#
# One torchrun agent per node (srun --ntasks-per-node 1) starts one process per GPU and joins the others
# through the c10d rendezvous on the first node; --auto_resume makes the same command line start the run
# or continue it.  SLURM sends SIGTERM to every process of the job step 120 s before the time limit
# (--signal=TERM@120); torchrun forwards it to its workers, which finish the current step, save a
# mid-epoch training state, record "preempted" in run.json and exit with status 75.  The agents' own
# exit status is torchrun's, so this script reads run.json and requeues the job when it says
# "preempted"; a requeued job runs this script, and so the same command line, again.
#
# Settings (environment variables): NPROC_PER_NODE (default: SLURM_GPUS_ON_NODE, else 1), MASTER_PORT
# (default: 29500 + SLURM_JOB_ID % 1000), MAX_RESTARTS (torchrun --max-restarts, default 3: a worker
# that crashes is relaunched and continues from the last state), TORCH_ELASTIC_SHUTDOWN_TIMEOUT (seconds
# torchrun lets its workers save before it kills them, default 100), PYTHON and TORCHRUN (the commands).
#
#SBATCH --job-name=filter-basis
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -uo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: sbatch scripts/cluster/slurm_train.sh TREE/main.py OPTIONS... --save NAME" >&2
    exit 2
fi
root="${SLURM_SUBMIT_DIR:-$(pwd)}"  # sbatch runs a copy of this file: the tree is found from where it was submitted
program="$1"
shift
[[ "$program" == /* ]] || program="$root/$program"
python="${PYTHON:-python}"
nproc="${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}"
master="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
port="${MASTER_PORT:-$((29500 + SLURM_JOB_ID % 1000))}"
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-100}"
# a fresh worker store every rendezvous round (torchrun_nodes.sh says why)
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE="${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}"

# The notice also reaches this script when the whole job is signalled: note it and keep waiting for the
# training processes, which save their state and stop.
trap 'echo "slurm_train.sh: notice received; waiting for the run to save its state"' TERM USR1
srun --kill-on-bad-exit=1 --ntasks-per-node=1 \
    "${TORCHRUN:-torchrun}" --nnodes="$SLURM_NNODES" --nproc_per_node="$nproc" \
    --rdzv-backend=c10d --rdzv-endpoint="$master:$port" --rdzv-id="$SLURM_JOB_ID" \
    --max-restarts="${MAX_RESTARTS:-3}" \
    "$program" "$@" --auto_resume &
pid=$!
while :; do
    wait "$pid"
    code=$?
    kill -0 "$pid" 2>/dev/null || break  # still running: the wait was cut short by the trapped notice
done

status="$("$python" "$root/scripts/cluster/run_status.py" "$@")"
echo "slurm_train.sh: srun exit status $code, run status: $status"
if [[ "$status" == preempted ]]; then
    echo "slurm_train.sh: requeueing job $SLURM_JOB_ID (the same command line continues the run)"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
exit "$code"
