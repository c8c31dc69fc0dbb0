#!/usr/bin/env bash
# One training run on several machines with plain torchrun (no scheduler): run this on every node with the
# same settings and the same main.py command line (docs/cluster.md).
#
#   NNODES=2 NPROC_PER_NODE=4 RDZV_ENDPOINT=node0.example.org:29500 RUN_ID=resnet56_basis \
#       scripts/cluster/torchrun_nodes.sh image_classification/main.py --template ResNet \
#       --model ResNet_Basis --depth 56 --batch_size 64 --dir_save /shared/experiments --save resnet56_basis
#
# --dir_save must be one folder on a file system every node shares (rank 0 alone writes it; a node that
# sees another folder is refused).  torchrun relaunches all workers when one fails (up to MAX_RESTARTS
# times, default 3) and --auto_resume (added here) continues the run from its last training state; the
# same line started again after everything stopped continues it too.  A SIGTERM to the agents saves a
# mid-epoch state and stops the run with "preempted" in run.json.
# Settings: NNODES, RDZV_ENDPOINT (host:port of the first node), RUN_ID (any name, the same on every
# node) are required; NPROC_PER_NODE (default 1), MAX_RESTARTS, TORCHRUN (the command) are optional.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ $# -lt 1 ]]; then
    echo "usage: NNODES=N RDZV_ENDPOINT=HOST:PORT RUN_ID=NAME $0 TREE/main.py OPTIONS... --save NAME" >&2
    exit 2
fi
program="$1"
shift
[[ "$program" == /* ]] || program="$root/$program"
# A fresh store for the workers of every rendezvous round: torchrun otherwise keeps one store server for
# all rounds, and relaunched workers can read their peers' Gloo addresses from the round before
# ("connectFullMesh ... Connection refused" until the restarts run out; docs/cluster.md).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE="${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}"
exec "${TORCHRUN:-torchrun}" --nnodes="${NNODES:?set NNODES}" --nproc_per_node="${NPROC_PER_NODE:-1}" \
    --rdzv-backend=c10d --rdzv-endpoint="${RDZV_ENDPOINT:?set RDZV_ENDPOINT to HOST:PORT of the first node}" \
    --rdzv-id="${RUN_ID:?set RUN_ID}" --max-restarts="${MAX_RESTARTS:-3}" \
    "$program" "$@" --auto_resume
