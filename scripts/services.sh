#!/usr/bin/env bash
# Make sure the Redis and PostgreSQL servers the store tests use are running.
# Starts the machine's own servers when they are installed but stopped; says how
# to start them otherwise. Tests skip (or, with CI=true, fail) when one is missing.
set -u
redis_up() { python3 - <<'PY'
import socket,sys
s=socket.socket(); s.settimeout(1)
try:
    s.connect(("127.0.0.1",6379)); s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError: sys.exit(1)
PY
}
pg_up() { python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(("127.0.0.1",5432)))'; }

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "services: starting redis-server on 127.0.0.1:6379"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do redis_up && break; sleep 0.5; done
  else
    echo "services: Redis is not running at 127.0.0.1:6379 and redis-server is not installed"
  fi
fi
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL on 127.0.0.1:5432"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 20); do pg_up && break; sleep 0.5; done
  else
    echo "services: PostgreSQL is not running at 127.0.0.1:5432 and no local cluster is installed"
  fi
fi
exit 0
