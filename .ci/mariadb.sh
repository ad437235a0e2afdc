#!/usr/bin/env bash
# Start a private MariaDB server on loopback for Keel's test-suite and print
# the SQLAlchemy URL to use:
#
#     url=$(bash .ci/mariadb.sh)
#
# What it does (every step is idempotent, so it is safe to run repeatedly):
#   1. Installs Debian's mariadb-server with apt-get if it is not installed yet
#      (output goes to ${TMPDIR:-/tmp}/keel-mariadb-apt.log).
#   2. Runs mariadbd directly (no systemd / init scripts) with its own config,
#      datadir, socket and logs under $KEEL_MARIADB_DIR, listening only on
#      127.0.0.1:$KEEL_MARIADB_PORT. An instance started earlier by this script
#      is reused if it answers.
#   3. Creates database keel_test (utf8mb4) and user keel/keel at 127.0.0.1 and
#      localhost with ALL PRIVILEGES on every database named keel_test*
#      (so tests may CREATE/DROP per-run databases such as keel_test_1234).
#
# The SQLAlchemy URL is the only line written to stdout; everything else goes
# to stderr.
#
# Environment:
#   KEEL_MARIADB_PORT     TCP port on 127.0.0.1           (default: 3306)
#   KEEL_MARIADB_DIR      base dir for data/socket/logs   (default: /tmp/keel-mariadb)
#   KEEL_MARIADB_TIMEOUT  seconds to wait for readiness   (default: 60)
#
# Stop the server:
#   mariadb-admin --defaults-file=/tmp/keel-mariadb/my.cnf -uroot shutdown
set -euo pipefail

# Keep stdout clean for the caller: fd 3 is the real stdout (used once, for the
# URL at the very end); everything else the script or its tools print goes to
# stderr.
exec 3>&1 1>&2

PORT="${KEEL_MARIADB_PORT:-3306}"
BASE="${KEEL_MARIADB_DIR:-/tmp/keel-mariadb}"
TIMEOUT="${KEEL_MARIADB_TIMEOUT:-60}"
APT_LOG="${TMPDIR:-/tmp}/keel-mariadb-apt.log"

DB_NAME=keel_test
DB_USER=keel
DB_PASS=keel

DATADIR="$BASE/data"
SOCKET="$BASE/mysqld.sock"
PIDFILE="$BASE/mysqld.pid"
CNF="$BASE/my.cnf"
ERROR_LOG="$BASE/error.log"
OUT_LOG="$BASE/mariadbd.out"
INIT_LOG="$BASE/install-db.log"
INIT_MARKER="$BASE/.initialised"

log() { printf '[mariadb.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if ! [[ $PORT =~ ^[0-9]{1,5}$ ]] || ((10#$PORT < 1 || 10#$PORT > 65535)); then
    die "KEEL_MARIADB_PORT must be a TCP port number, got '$PORT'"
fi
if ! [[ $TIMEOUT =~ ^[0-9]{1,6}$ ]] || ((10#$TIMEOUT < 1)); then
    die "KEEL_MARIADB_TIMEOUT must be a positive number of seconds, got '$TIMEOUT'"
fi
PORT=$((10#$PORT))
TIMEOUT=$((10#$TIMEOUT))

# ---------------------------------------------------------------------------
# 1. Install
# ---------------------------------------------------------------------------

# Print the path of the first of the given programs that exists. /usr/sbin is
# searched explicitly because it is not on a non-root user's PATH on Debian.
find_bin() {
    local name dir
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
        for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
            if [[ -x $dir/$name ]]; then
                printf '%s\n' "$dir/$name"
                return 0
            fi
        done
    done
    return 1
}

# MariaDB >= 10.5 names its binaries mariadb*; the mysql* names are fallbacks.
find_mariadb() {
    MARIADBD=$(find_bin mariadbd mysqld) &&
        INSTALL_DB=$(find_bin mariadb-install-db mysql_install_db) &&
        ADMIN=$(find_bin mariadb-admin mysqladmin) &&
        CLIENT=$(find_bin mariadb mysql)
}

POLICY_RC_D=/usr/sbin/policy-rc.d
ADDED_POLICY_RC_D=0
SUDO=()
cleanup() {
    if ((ADDED_POLICY_RC_D)); then
        "${SUDO[@]}" rm -f "$POLICY_RC_D" || true
    fi
}
trap cleanup EXIT

install_mariadb() {
    if ((EUID != 0)); then
        if ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
            die "mariadb-server is not installed and installing it needs root or passwordless sudo"
        fi
        SUDO=(sudo -n)
    fi
    log "mariadb-server not found; installing it with apt-get (log: $APT_LOG)"
    local start=$SECONDS rc=0
    # Stop the package's postinst from starting the distribution's own service
    # (which would grab port 3306 and /var/lib/mysql). Only if the machine has
    # no policy-rc.d already; the temporary one is removed again on exit.
    if [[ ! -e $POLICY_RC_D ]]; then
        ADDED_POLICY_RC_D=1
        printf '#!/bin/sh\n# temporary, added by keel .ci/mariadb.sh\nexit 101\n' |
            "${SUDO[@]}" tee "$POLICY_RC_D" >/dev/null
        "${SUDO[@]}" chmod 0755 "$POLICY_RC_D"
    fi
    local apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y
        -o DPkg::Lock::Timeout=300
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    {
        "${apt[@]}" update &&
            "${apt[@]}" install --no-install-recommends mariadb-server mariadb-client
    } >"$APT_LOG" 2>&1 || rc=$?
    cleanup
    ADDED_POLICY_RC_D=0
    if ((rc != 0)); then
        tail -n 30 "$APT_LOG" >&2 || true
        die "apt-get failed with exit code $rc (full log: $APT_LOG)"
    fi
    log "mariadb-server installed in $((SECONDS - start))s"
}

if find_mariadb; then
    log "MariaDB already installed ($MARIADBD), skipping apt-get"
else
    install_mariadb
    find_mariadb || die "mariadb-server was installed but mariadbd/mariadb-install-db/mariadb-admin/mariadb were not found"
fi
log "$("$MARIADBD" --version 2>&1 || true)"

# ---------------------------------------------------------------------------
# 2. Start (or reuse) the private server
# ---------------------------------------------------------------------------

# mariadbd refuses to run as root unless told to. As root we run it as the
# 'mysql' system user the package creates (falling back to --user=root), and
# administer it as root@localhost, which mariadb-install-db sets up with
# unix_socket authentication. As any other user, the server runs as that user
# and that user gets the socket-authenticated admin account instead.
if ((EUID == 0)); then
    if getent passwd mysql >/dev/null 2>&1; then SERVER_USER=mysql; else SERVER_USER=root; fi
    ADMIN_USER=root
    USER_OPT=(--user="$SERVER_USER")
else
    SERVER_USER=$(id -un)
    ADMIN_USER=$SERVER_USER
    USER_OPT=()
fi

mkdir -p "$BASE"
chmod 0755 "$BASE"
if ((EUID == 0)); then chown "$SERVER_USER": "$BASE"; fi

# Serialise concurrent runs (e.g. parallel CI jobs on one machine).
exec 9>>"$BASE/.lock"
if command -v flock >/dev/null 2>&1; then
    flock -w 300 9 || die "timed out waiting for the lock on $BASE/.lock"
fi

# The server reads only this file (--defaults-file), so whatever is in
# /etc/mysql does not matter. Rewritten on every run; the server reads it at
# start-up only. It must not be world-writable or mariadbd ignores it.
cnf_tmp=$(mktemp "$BASE/my.cnf.XXXXXX")
cat >"$cnf_tmp" <<CNF
# Generated by keel .ci/mariadb.sh -- changes are overwritten.
[client]
socket                         = $SOCKET
port                           = $PORT
default-character-set          = utf8mb4

[mysqld]
datadir                        = $DATADIR
socket                         = $SOCKET
pid-file                       = $PIDFILE
log-error                      = $ERROR_LOG
port                           = $PORT
bind-address                   = 127.0.0.1
skip-name-resolve
character-set-server           = utf8mb4
collation-server               = utf8mb4_unicode_ci
max_connections                = 300
# Test server: durability is not needed, speed is.
innodb_flush_log_at_trx_commit = 2
innodb_buffer_pool_size        = 256M
# Plain synchronous I/O: io_uring/libaio are often unavailable in containers.
innodb_use_native_aio          = 0
CNF
chmod 0644 "$cnf_tmp"
mv -f "$cnf_tmp" "$CNF"

admin() { "$ADMIN" --defaults-file="$CNF" -u "$ADMIN_USER" --connect-timeout=2 "$@"; }
sql() { "$CLIENT" --defaults-file="$CNF" -u "$ADMIN_USER" --protocol=socket -N -B "$@"; }
# 'ping' exits 0 as soon as the server answers, even if login is refused.
alive() { [[ -S $SOCKET ]] && admin ping >/dev/null 2>&1; }
port_in_use() { (: <>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
keel_login_works() {
    MYSQL_PWD="$DB_PASS" "$CLIENT" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$PORT" \
        -u "$DB_USER" --connect-timeout=5 -N -B -e 'SELECT 1' "$DB_NAME" >/dev/null 2>&1
}
print_url() {
    printf 'mysql+aiomysql://%s:%s@127.0.0.1:%s/%s\n' "$DB_USER" "$DB_PASS" "$PORT" "$DB_NAME" >&3
}
show_logs() {
    local f
    for f in "$ERROR_LOG" "$OUT_LOG"; do
        if [[ -s $f ]]; then
            log "---- last lines of $f ----"
            tail -n 40 "$f" >&2 || true
        fi
    done
}

if alive; then
    running_port=$(sql -e 'SELECT @@port') ||
        die "a server is running on $SOCKET but '$ADMIN_USER' cannot administer it (started by another OS user?)"
    if [[ $running_port == "$PORT" ]]; then
        log "reusing MariaDB already running on $SOCKET and 127.0.0.1:$PORT"
    else
        log "MariaDB is running on port $running_port but port $PORT was requested; restarting it"
        admin shutdown || die "could not shut down the running server"
    fi
fi

if ! alive; then
    if port_in_use; then
        # Someone else's server (or a leftover) owns the port. Fine if it
        # already has the keel account and database, otherwise we cannot go on.
        if keel_login_works; then
            log "127.0.0.1:$PORT is served by another MySQL/MariaDB where $DB_USER/$DB_PASS can use $DB_NAME; reusing it"
            print_url
            exit 0
        fi
        die "127.0.0.1:$PORT is already in use by another process; stop it or set KEEL_MARIADB_PORT to a free port"
    fi

    if [[ ! -f $INIT_MARKER || ! -d $DATADIR/mysql ]]; then
        log "initialising data directory $DATADIR"
        rm -rf "$DATADIR" # leftover of an interrupted initialisation, if any
        mkdir -p "$DATADIR"
        if ((EUID == 0)); then chown -R "$SERVER_USER": "$BASE"; fi
        # --defaults-file must come first.
        "$INSTALL_DB" --defaults-file="$CNF" "${USER_OPT[@]}" \
            --auth-root-authentication-method=socket \
            --auth-root-socket-user="$ADMIN_USER" \
            --skip-test-db >"$INIT_LOG" 2>&1 || {
            tail -n 40 "$INIT_LOG" >&2 || true
            die "mariadb-install-db failed (full log: $INIT_LOG)"
        }
        [[ -d $DATADIR/mysql ]] || die "mariadb-install-db did not create $DATADIR/mysql (log: $INIT_LOG)"
        touch "$INIT_MARKER"
    fi
    if ((EUID == 0)); then chown -R "$SERVER_USER": "$BASE"; fi

    log "starting mariadbd on 127.0.0.1:$PORT (datadir $DATADIR, error log $ERROR_LOG)"
    # Detach completely: own session, no terminal, and none of our extra file
    # descriptors -- in particular not fd 3, the caller's stdout, or
    # url=$(bash .ci/mariadb.sh) would wait for the server to exit.
    printf '\n==== %s starting mariadbd\n' "$(date '+%F %T')" >>"$OUT_LOG"
    setsid "$MARIADBD" --defaults-file="$CNF" "${USER_OPT[@]}" \
        </dev/null >>"$OUT_LOG" 2>&1 3>&- 9>&- &
    server_pid=$!

    # Millisecond clock ($EPOCHREALTIME is bash >= 5; fall back to date).
    now_ms() {
        local t=${EPOCHREALTIME:-}
        if [[ -n $t ]]; then t=${t/[.,]/}; echo $((10#${t:0:-3})); else date +%s%3N; fi
    }
    deadline=$(($(now_ms) + TIMEOUT * 1000))
    until alive; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            show_logs
            die "mariadbd exited during start-up (see $ERROR_LOG)"
        fi
        if (($(now_ms) >= deadline)); then
            show_logs
            kill "$server_pid" 2>/dev/null || true
            die "mariadbd did not answer 'mariadb-admin ping' within ${TIMEOUT}s (see $ERROR_LOG)"
        fi
        sleep 0.2
    done
    log "mariadbd is up (pid $server_pid)"
fi

# ---------------------------------------------------------------------------
# 3. Database and account (idempotent)
# ---------------------------------------------------------------------------

# In GRANT, '_' and '%' are wildcards: `keel\_test%` matches keel_test itself
# and every keel_test* database, so tests can create and drop per-run ones.
db_pattern="${DB_NAME//_/\\_}%"
sql <<SQL || die "could not create database $DB_NAME / user $DB_USER"
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
DROP USER IF EXISTS ''@'localhost';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON \`$db_pattern\`.* TO '$DB_USER'@'127.0.0.1', '$DB_USER'@'localhost';
SQL

keel_login_works || die "MariaDB is running but $DB_USER/$DB_PASS cannot log in to $DB_NAME over TCP 127.0.0.1:$PORT"
log "ready: database $DB_NAME, user $DB_USER on 127.0.0.1:$PORT (socket $SOCKET)"
print_url
