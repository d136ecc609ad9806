#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the thread-store tests and print its URL; `stop DIR` stops it.
#   url=$(bash scripts/postgres.sh start /tmp/vqagraph-pg)   ...   bash scripts/postgres.sh stop /tmp/vqagraph-pg
# Installs Debian's postgresql when it is missing. initdb refuses to run as root, so the server runs as the
# `postgres` user when this script runs as root.
set -euo pipefail
action=${1:?start|stop}
dir=${2:-/tmp/vqagraph-pg}
# A free port unless one is given (another Postgres may already hold the usual ones).
port=${PGPORT_VQAGRAPH:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] && [ "$action" = start ]; then
  echo "installing postgresql (Debian)…" >&2
  sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
  $sudo_ apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq postgresql >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir/data" -U vqagraph --auth=trust >/dev/null
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    echo "postgresql://vqagraph@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -f "$dir/data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null || true
    ;;
  *) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
