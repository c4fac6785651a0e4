#!/usr/bin/env bash
# Start one Celery worker process per GPU on this host, each pinned to its GPU through
# CUDA_VISIBLE_DEVICES, consuming only the `gpu` queue with concurrency 1 (and prefetch 1, set in
# config/celery_app.py): a GPU runs one generation at a time, and an un-started job stays in the
# queue where another GPU can take it.
#
#   GPU_IDS="0 1 2 3" platform/bin/start-gpu-worker.sh     # default: every GPU nvidia-smi lists
set -euo pipefail
: "${DJANGO_SETTINGS_MODULE:=config.settings.production}"
export DJANGO_SETTINGS_MODULE

if [ -z "${GPU_IDS:-}" ]; then
  if ! command -v nvidia-smi >/dev/null; then
    echo "start-gpu-worker: nvidia-smi not found; set GPU_IDS or run on a GPU host" >&2
    exit 1
  fi
  GPU_IDS=$(nvidia-smi --query-gpu=index --format=csv,noheader | tr '\n' ' ')
fi

pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap stop INT TERM

for gpu in $GPU_IDS; do
  CUDA_VISIBLE_DEVICES="$gpu" celery -A config worker \
    -Q gpu --concurrency 1 --pool prefork \
    -n "gpu${gpu}@%h" --loglevel "${LOG_LEVEL:-INFO}" \
    --max-tasks-per-child "${MAX_TASKS_PER_CHILD:-50}" &
  pids+=("$!")
  echo "start-gpu-worker: GPU $gpu -> worker pid $!"
done

# Exit (and let the supervisor restart us) as soon as any worker dies.
wait -n "${pids[@]}"
status=$?
stop
wait
exit "$status"
