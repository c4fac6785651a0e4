#!/usr/bin/env bash
# Start the web tier: migrations are a separate release step (see platform/README.md).
set -euo pipefail
: "${DJANGO_SETTINGS_MODULE:=config.settings.production}"
export DJANGO_SETTINGS_MODULE
exec gunicorn config.wsgi:application \
  --bind "${WEB_BIND:-0.0.0.0:8000}" \
  --workers "${WEB_WORKERS:-4}" \
  --timeout "${WEB_TIMEOUT:-120}" \
  --access-logfile - \
  --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}"
