#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: installs sslx on every worker and starts the same
# command on all of them; jax.distributed discovers the pod by itself.
#
#   launch/tpu_pod.sh NAME ZONE configs/dino_vitb.py gs://BUCKET/dino_vitb [--config.x=y ...]
#
# Re-running the same line after a preemption resumes from the latest checkpoint.
set -euo pipefail
name=$1 zone=$2 config=$3 workdir=$4
shift 4
gcloud compute tpus tpu-vm scp --recurse --zone="$zone" --worker=all . "$name":~/sslx
gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="
  cd ~/sslx && pip install -q -e . 'jax[tpu]' &&
  python -m sslx.main --distributed=on --config=$config --workdir=$workdir $*"
