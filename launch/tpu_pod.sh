#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (one host or a pod slice): create or reuse the
# slice, install sslx on every worker, start the same command on all of them
# (jax.distributed discovers the slice by itself), and optionally watch it,
# re-creating a preempted spot slice and resuming from the latest checkpoint.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: launch/tpu_pod.sh COMMAND NAME [CONFIG WORKDIR [--config.a.b=v ...]]

commands:
  create  NAME                    create the slice, or reuse it when READY (a
                                  PREEMPTED/TERMINATED one is deleted and re-created)
  install NAME                    copy this checkout to every worker and install it
                                  into ~/sslx_venv (Python 3.11 via uv; the TPU VM
                                  images ship 3.10)
  run     NAME CONFIG WORKDIR ... start training on every worker, detached: it
                                  outlives the ssh session
  up      NAME CONFIG WORKDIR ... create + install + run
  watch   NAME CONFIG WORKDIR ... up, then poll the slice every POLL_SECONDS; after
                                  a preemption re-create, reinstall and re-run the
                                  same command (training resumes from WORKDIR's
                                  latest checkpoint); ends when training ends
  logs    NAME [WORKER]           follow a worker's log (default worker 0)
  stop    NAME                    stop training on every worker
  delete  NAME                    delete the slice (and its queued resource)

settings (environment):
  ZONE              required, e.g. us-central2-b
  ACCELERATOR_TYPE  e.g. v4-32, v5litepod-16, v6e-64 (create only; default v4-8)
  RUNTIME_VERSION   TPU VM image; default picked from ACCELERATOR_TYPE
  PROJECT           gcloud project (default: gcloud's configured one)
  SPOT=1            spot capacity (default 1; 0 for on-demand/reserved)
  QUEUED=1          create through `gcloud compute tpus queued-resources` (default 0)
  PYTHON_VERSION    Python of the workers' venv (default 3.11)
  POLL_SECONDS      watch's poll interval (default 300)
  TFDS_DATA_DIR     passed on to the workers, e.g. gs://BUCKET/tensorflow_datasets
  DRY_RUN=1         print the gcloud commands instead of running them

example:
  ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 TFDS_DATA_DIR=gs://BUCKET/tensorflow_datasets \
    launch/tpu_pod.sh watch dino-pod configs/dino_vitb.py gs://BUCKET/runs/dino_vitb \
    --config.evals.knn.ks='(20,)'

WORKDIR should be gs:// (every worker reads and writes the same checkpoints). Each
worker logs to ~/sslx_logs/NAME.log; with a gs:// WORKDIR the log is also copied to
WORKDIR/logs/HOSTNAME.log every 2 minutes and when training ends.

Data: workers read what their config names, so put it in a bucket in the slice's
region: TFDS_DATA_DIR=gs://BUCKET/tensorflow_datasets for data.source=tfds (build
ImageNet once, anywhere: `tfds build imagenet2012 --manual_dir=DIR_WITH_THE_TARS
--data_dir=gs://BUCKET/tensorflow_datasets`), or --config.data.path=gs://... for
the folder and arrays sources.
EOF
  exit 2
}

ZONE=${ZONE:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
PROJECT=${PROJECT:-}
SPOT=${SPOT:-1}
QUEUED=${QUEUED:-0}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
POLL_SECONDS=${POLL_SECONDS:-300}
DRY_RUN=${DRY_RUN:-0}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLAGS=()    # what every gcloud call of this slice takes; set by main
ARCHIVE=""  # the checkout's archive while install copies it

# ---------------------------------------------------------------- local helpers

# gcloud, or under DRY_RUN=1 the command printed as one line of shell input (so it
# can be copied, or replayed by a test).
gc() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' gcloud "$@"
    printf '\n'
  else
    gcloud "$@"
  fi
}

# Arguments quoted for a remote shell: each reaches the remote command as one
# word, unchanged ('(20,)', spaces, $ and quotes included).
quote() {
  printf '%q ' "$@"
}

default_runtime_version() {
  case $ACCELERATOR_TYPE in
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

# Runs the bash function $2 on workers $3 (all, or a number) of slice $1 with the
# remaining arguments: its definition travels inside the ssh command, its
# arguments quoted.
on_workers() {
  local name=$1 fn=$2 workers=$3
  shift 3
  gc compute tpus tpu-vm ssh "$name" "${FLAGS[@]}" --worker="$workers" \
    --command="$(declare -f "$fn"); $fn $(quote "$@")"
}

# This script as a new process with the same settings, so that set -e stops that
# step at its first failure even where the caller goes on after one.
self() {
  ZONE=$ZONE ACCELERATOR_TYPE=$ACCELERATOR_TYPE PROJECT=$PROJECT SPOT=$SPOT QUEUED=$QUEUED \
    PYTHON_VERSION=$PYTHON_VERSION DRY_RUN=$DRY_RUN "$BASH" "${BASH_SOURCE[0]}" "$@"
}

# ---------------------------------------------------------------- slice state

# READY, CREATING, ... as gcloud says; PREEMPTED for a suspended or failed queued
# resource; MISSING when there is no such slice.
slice_state() {
  local name=$1 state
  if [[ $DRY_RUN == 1 ]]; then
    echo MISSING
    return
  fi
  if [[ $QUEUED == 1 ]]; then
    state=$(gcloud compute tpus queued-resources describe "$name" "${FLAGS[@]}" \
      --format='value(state.state)' 2>/dev/null) || state=MISSING
    case $state in
      ACTIVE) ;;
      SUSPENDING | SUSPENDED | FAILED) echo PREEMPTED; return ;;
      *) echo "${state:-MISSING}"; return ;;
    esac
  fi
  state=$(gcloud compute tpus tpu-vm describe "$name" "${FLAGS[@]}" \
    --format='value(state)' 2>/dev/null) || state=MISSING
  echo "${state:-MISSING}"
}

# Waits while the slice is being created or queued; fails when it is gone.
wait_until_ready() {
  local name=$1 state
  while state=$(slice_state "$name"); [[ $state != READY ]]; do
    case $state in
      PREEMPTED | TERMINATED | STOPPED | MISSING)
        echo "tpu_pod.sh: $name is $state" >&2
        return 1 ;;
    esac
    echo "tpu_pod.sh: $name is $state; waiting" >&2
    sleep 60
  done
}

# ---------------------------------------------------------------- commands

# Reuses a READY slice, waits for one being created, and replaces a preempted,
# terminated or stopped one (its disks hold nothing: the workdir is in a bucket).
cmd_create() {
  local name=$1 state version
  while true; do
    state=$(slice_state "$name")
    case $state in
      READY) echo "tpu_pod.sh: reusing $name" >&2; return ;;
      MISSING) break ;;
      PREEMPTED | TERMINATED | STOPPED) cmd_delete "$name"; break ;;
      *) echo "tpu_pod.sh: $name is $state; waiting" >&2; sleep 60 ;;
    esac
  done
  version=${RUNTIME_VERSION:-$(default_runtime_version)}
  local create=(--accelerator-type="$ACCELERATOR_TYPE")
  [[ $SPOT != 1 ]] || create+=(--spot)
  if [[ $QUEUED == 1 ]]; then
    gc compute tpus queued-resources create "$name" --node-id="$name" "${FLAGS[@]}" \
      --runtime-version="$version" "${create[@]}"
  else
    gc compute tpus tpu-vm create "$name" "${FLAGS[@]}" --version="$version" "${create[@]}"
  fi
  [[ $DRY_RUN == 1 ]] || wait_until_ready "$name"
}

cmd_delete() {
  local name=$1
  if [[ $QUEUED == 1 ]]; then
    gc compute tpus queued-resources delete "$name" "${FLAGS[@]}" --force --quiet
  else
    gc compute tpus tpu-vm delete "$name" "${FLAGS[@]}" --quiet
  fi
}

# Copies this checkout (without .git and caches) to every worker, then installs it.
cmd_install() {
  local name=$1
  ARCHIVE=$(mktemp -t sslx-XXXXXX.tar.gz)
  trap 'rm -f "$ARCHIVE"' EXIT
  tar -czf "$ARCHIVE" -C "$REPO" --exclude=.git --exclude=__pycache__ --exclude='*.egg-info' \
    --exclude=.pytest_cache --exclude=.venv --exclude=venv .
  gc compute tpus tpu-vm scp "$ARCHIVE" "$name":sslx.tar.gz "${FLAGS[@]}" --worker=all
  on_workers "$name" remote_install all "$PYTHON_VERSION"
}

cmd_run() {
  local name=$1 config=$2 workdir=$3
  shift 3
  on_workers "$name" remote_start all "$name" "$workdir" "${TFDS_DATA_DIR:-}" \
    --config="$config" "$@"
}

cmd_up() {
  cmd_create "$1"
  cmd_install "$1"
  cmd_run "$@"
}

# up, then every POLL_SECONDS: a preempted or vanished slice is re-created and
# the same command re-run (it resumes from the latest checkpoint); a READY slice
# whose training died without an exit status (host maintenance) is re-run; the
# loop ends with training's exit status. A failed step is tried again at the next
# poll.
cmd_watch() {
  local name=$1 state status
  cmd_up "$@"
  [[ $DRY_RUN != 1 ]] || return 0
  while sleep "$POLL_SECONDS"; do
    state=$(slice_state "$name")
    case $state in
      PREEMPTED | TERMINATED | STOPPED | MISSING)
        echo "tpu_pod.sh: $(date -u +%FT%TZ) $name is $state; re-creating" >&2
        self up "$@" || echo "tpu_pod.sh: re-creating $name failed; trying again" >&2
        ;;
      READY)
        status=$(on_workers "$name" remote_status 0 "$name" 2>/dev/null | tail -n 1) || continue
        case $status in
          stopped)
            echo "tpu_pod.sh: training is not running on $name; re-running" >&2
            self run "$@" || true
            ;;
          exited\ *)
            echo "tpu_pod.sh: training $status" >&2
            return "${status#exited }"
            ;;
        esac
        ;;
    esac
  done
}

cmd_logs() {
  local name=$1 worker=${2:-0}
  gc compute tpus tpu-vm ssh "$name" "${FLAGS[@]}" --worker="$worker" \
    --command="tail -n 200 -F ~/sslx_logs/$(quote "$name").log"
}

cmd_stop() {
  on_workers "$1" remote_stop all "$1"
}

# ---------------------------------------------------------------- on the workers
# These run on the TPU VMs: on_workers sends their definitions with the command.

# ~/sslx from the copied archive, and a venv of a supported Python made by uv
# (installed with the image's pip; uv fetches the Python itself).
remote_install() {
  local python_version=$1
  set -e
  rm -rf ~/sslx && mkdir -p ~/sslx && tar -xzf ~/sslx.tar.gz -C ~/sslx
  python3 -m pip install --quiet --user --upgrade uv ||
    python3 -m pip install --quiet --user --upgrade --break-system-packages uv
  ~/.local/bin/uv venv --quiet --allow-existing --python "$python_version" ~/sslx_venv
  ~/.local/bin/uv pip install --quiet --python ~/sslx_venv/bin/python -e ~/sslx 'jax[tpu]'
}

# Starts training detached (nohup, input and output redirected: it outlives the
# ssh session), unless it is already running; records its exit status beside the
# log, and for a gs:// workdir copies the log there every 2 minutes.
remote_start() {
  local name=$1 workdir=$2 tfds_data_dir=$3
  shift 3
  local logs=~/sslx_logs
  mkdir -p "$logs"
  if [[ -f $logs/$name.pid ]] && kill -0 "$(cat "$logs/$name.pid")" 2>/dev/null; then
    echo "$(hostname): $name is already running"
    return 0
  fi
  rm -f "$logs/$name.status"
  [[ -z $tfds_data_dir ]] || export TFDS_DATA_DIR=$tfds_data_dir
  cd ~/sslx
  # shellcheck disable=SC2016  # $0 and $@ belong to the inner shell
  nohup bash -c '"$@"; echo $? > "$0"' "$logs/$name.status" \
    ~/sslx_venv/bin/python -m sslx.main --distributed=on --workdir="$workdir" "$@" \
    > "$logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$logs/$name.pid"
  if [[ $workdir == gs://* ]]; then
    # shellcheck disable=SC2016  # $0, $1 and $2 belong to the inner shell
    nohup bash -c 'while kill -0 "$0" 2>/dev/null; do sleep 120; gcloud storage cp -q "$1" "$2"; done
      gcloud storage cp -q "$1" "$2"' "$!" "$logs/$name.log" "$workdir/logs/$(hostname).log" \
      > /dev/null 2>&1 < /dev/null &
  fi
  echo "$(hostname): started; log: $logs/$name.log"
}

# running, exited STATUS, or stopped (no process and no exit status).
remote_status() {
  local logs=~/sslx_logs name=$1
  if [[ -f $logs/$name.status ]]; then
    echo "exited $(cat "$logs/$name.status")"
  elif [[ -f $logs/$name.pid ]] && kill -0 "$(cat "$logs/$name.pid")" 2>/dev/null; then
    echo running
  else
    echo stopped
  fi
}

remote_stop() {
  local pid_file=~/sslx_logs/$1.pid
  [[ ! -f $pid_file ]] || pkill -TERM -P "$(cat "$pid_file")" || true
}

# ---------------------------------------------------------------- main

main() {
  [[ $# -ge 2 ]] || usage
  local command=$1
  shift
  [[ -n $ZONE ]] || { echo "tpu_pod.sh: set ZONE, e.g. ZONE=us-central2-b" >&2; exit 2; }
  FLAGS=(--zone="$ZONE")
  [[ -z $PROJECT ]] || FLAGS+=(--project="$PROJECT")
  case $command in
    create | install | delete | stop) [[ $# -eq 1 ]] || usage ;;
    logs) [[ $# -le 2 ]] || usage ;;
    run | up | watch) [[ $# -ge 3 ]] || usage ;;
    *) usage ;;
  esac
  "cmd_$command" "$@"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
