#!/usr/bin/env bash
# Train on several GPU machines under SLURM: one process per node, each seeing all
# its local GPUs; jax.distributed reads the SLURM environment by itself.
#
#   sbatch --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 \
#     launch/gpu_multinode.sh configs/dino_vitb.py /shared/runs/dino_vitb [--config.x=y ...]
#
# Install once per cluster: pip install -e . 'jax[cuda12]'
set -euo pipefail
config=$1 workdir=$2
shift 2
srun python -m sslx.main --distributed=on --config="$config" --workdir="$workdir" "$@"
