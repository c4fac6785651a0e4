#!/usr/bin/env bash
# Start a worker for the `default` queue (verification, webhooks, housekeeping).
set -euo pipefail
: "${DJANGO_SETTINGS_MODULE:=config.settings.production}"
export DJANGO_SETTINGS_MODULE
exec celery -A config worker -Q default --concurrency "${CONCURRENCY:-4}" \
  -n "cpu@%h" --loglevel "${LOG_LEVEL:-INFO}"
