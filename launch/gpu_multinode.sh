#!/usr/bin/env bash
# Train on several GPU machines under SLURM, one process per GPU, so the mesh holds
# every GPU of every node. jax.distributed reads the SLURM environment: the first
# node coordinates, SLURM_PROCID is the process id, and task i of a node drives
# that node's GPU i (sslx.distributed also copes with --gpus-per-task=1 binding).
#
#   sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 \
#     launch/gpu_multinode.sh configs/dino_vitb.py /shared/runs/dino_vitb \
#     --config.train.batch_size=1024 --config.evals.knn.ks='(20,)'
#
# --ntasks-per-node must equal --gpus-per-node (the #SBATCH lines below are the
# defaults; options on the sbatch line replace them). Overrides after the workdir
# reach sslx unchanged. Re-submitting the same line resumes from the latest
# checkpoint in the workdir.
#
# Install once, on storage every node sees:
#   python3.11 -m venv /shared/sslx_venv && /shared/sslx_venv/bin/pip install -e . 'jax[cuda12]'
# and submit with PYTHON=/shared/sslx_venv/bin/python in the environment (sbatch
# passes the environment on), or activate the venv before sbatch.
#
# Data must be on storage every node sees: a prepared TFDS directory
# (export TFDS_DATA_DIR=/shared/tensorflow_datasets before sbatch, after
# `tfds build imagenet2012 --manual_dir=/shared/downloads/imagenet`), or
# --config.data.path=/shared/... for the folder, idx and arrays sources.
#
# Logs: WORKDIR/logs/slurm-JOBID.log for a local (shared) workdir, one file with
# each line prefixed by its task number; for a gs:// workdir, SLURM's own
# output file (sslx-JOBID.out in the directory sbatch ran in).
#
#SBATCH --job-name=sslx
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --output=sslx-%j.out
set -euo pipefail

usage() {
  echo "usage: sbatch [--nodes=N --ntasks-per-node=G --gpus-per-node=G] $0 CONFIG WORKDIR [--config.a.b=v ...]" >&2
  exit 2
}

# One process per GPU: fail early, with the fix, rather than train on a fraction
# of the GPUs.
check_tasks_match_gpus() {
  local gpus=${SLURM_GPUS_ON_NODE:-} tasks=${SLURM_NTASKS_PER_NODE:-}
  if [[ -n $gpus && -n $tasks && $gpus != "$tasks" ]]; then
    echo "gpu_multinode.sh: $tasks task(s) per node for $gpus GPUs per node;" \
      "submit with --ntasks-per-node=$gpus --gpus-per-node=$gpus" >&2
    exit 2
  fi
}

main() {
  [[ $# -ge 2 ]] || usage
  local config=$1 workdir=$2
  shift 2
  check_tasks_match_gpus
  local output=()
  if [[ $workdir != *://* ]]; then
    mkdir -p "$workdir/logs"
    output=(--output="$workdir/logs/slurm-${SLURM_JOB_ID:-local}.log")
  fi
  srun --label --kill-on-bad-exit=1 "${output[@]}" \
    "${PYTHON:-python}" -m sslx.main --distributed=on \
    --config="$config" --workdir="$workdir" "$@"
}

main "$@"
