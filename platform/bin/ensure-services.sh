#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer before the tests run.
# Starts them when installed but stopped; installs them from Debian packages when missing and
# running as root. Configures nothing on a server that already answers.
set -euo pipefail

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_PORT=6379

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do port_open "$port" && return 0; sleep 0.5; done
  echo "ensure-services: $name did not start listening on 127.0.0.1:$port" >&2
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-services: $* missing and not running as root; install it or set DATABASE_URL/CELERY_BROKER_URL" >&2
    exit 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if port_open $PG_PORT; then return 0; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "ensure-services: installing PostgreSQL"
    apt_install postgresql
    local version; version=$(ls /etc/postgresql | sort -V | tail -1)
    # A fresh throw-away test server: trust local TCP connections, as the CI machine does.
    sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/' \
      "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  local version; version=$(ls /etc/postgresql | sort -V | tail -1)
  echo "ensure-services: starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port $PG_PORT PostgreSQL
}

ensure_redis() {
  if port_open $REDIS_PORT; then return 0; fi
  command -v redis-server >/dev/null || { echo "ensure-services: installing Redis"; apt_install redis-server; }
  echo "ensure-services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port $REDIS_PORT --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port $REDIS_PORT Redis
}

# Only the local defaults are managed; an explicit DATABASE_URL / broker URL is the caller's.
[ -n "${DATABASE_URL:-}" ] || ensure_postgres
[ -n "${CELERY_BROKER_URL:-}" ] || ensure_redis
echo "ensure-services: PostgreSQL and Redis are reachable"
