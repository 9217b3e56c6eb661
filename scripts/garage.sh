#!/usr/bin/env bash
# Installs Garage (the reference S3-compatible object store of envelopefs) and runs real
# Garage clusters on loopback for tests and benchmarks. See docs/GARAGE.md.
#
#   scripts/garage.sh install [--background LOG]
#       Make sure garage $GARAGE_VERSION is available and print its path. Reuses $GARAGE_BIN,
#       a garage on PATH or in cargo's bin dir whose `garage --version` is that version;
#       otherwise builds it with `cargo install garage --version $GARAGE_VERSION --locked`
#       (about 24 minutes on 2 cores beside another build) and says how long that took. With --background LOG the
#       build runs detached, its output goes to LOG, its exit code to LOG.rc and the path of
#       the binary to LOG.bin; `wait-install LOG` waits for it.
#   scripts/garage.sh wait-install LOG
#       Wait for a background install; print the binary's path, or fail with the log's tail.
#       When no install was started with LOG, the same as `path`.
#   scripts/garage.sh cancel-install LOG
#       Stop a background install that has not finished (its own process group only).
#   scripts/garage.sh path
#       Print the path of garage $GARAGE_VERSION, or fail without building anything.
#   scripts/garage.sh start DIR [--nodes N] [--bucket NAME]
#       Start an N-node cluster (default 3, replication factor 3; 1 node: factor 1) with all
#       its files in DIR, one access key and one bucket (default envelopefs-test) the key may
#       read, write and own. Writes DIR/env (shell `export` lines: AWS_ENDPOINT_URL, the key,
#       AWS_REGION, AWS_DEFAULT_REGION, GARAGE_TEST_BUCKET; mode 0600) and DIR/endpoints (the
#       S3 endpoint of each node, one per line). On failure it stops what it started.
#   scripts/garage.sh stop DIR               stop every node of the cluster (idempotent)
#   scripts/garage.sh stop-node DIR I        stop node I (1-based), keeping its data; the
#                                            other nodes notice within about 10 s
#   scripts/garage.sh wait-up DIR N          wait until every running node sees N nodes up
#   scripts/garage.sh start-node DIR I       restart node I with its config and data; returns
#                                            when every running node sees it up
#   scripts/garage.sh bucket DIR NAME        create bucket NAME for the cluster's key
#   scripts/garage.sh status DIR             `garage status` as seen from a running node
#
# Secrets (the key's secret, rpc_secret, admin token) are written only into files of DIR,
# which is mode 0700; the secret key is never printed. All traffic stays on 127.0.0.1.
#
# Environment:
#   GARAGE_BIN       the garage binary to use (its version is checked all the same)
#   GARAGE_VERSION   the version to require and install (default 2.5.0)
#   GARAGE_FEATURES  the cargo features to build it with (default bundled-libs,lmdb)
#   GARAGE_BLOCK_SIZE  `start` only: the clusters' block_size, in bytes or with a K, M or G
#                    suffix (powers of 1024), e.g. 16M; unset: Garage's default, 1 MiB. A
#                    copy costs Garage one metadata entry per block (docs/BENCHMARKS.md,
#                    "Object store: bucket re-encrypt"); a block is held whole in memory.
#   CARGO_HOME, CARGO_INSTALL_ROOT  honoured as by cargo itself
set -euo pipefail

GARAGE_VERSION="${GARAGE_VERSION:-2.5.0}"
GARAGE_FEATURES="${GARAGE_FEATURES:-bundled-libs,lmdb}"
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
CARGO_BIN_DIR="${CARGO_INSTALL_ROOT:-$CARGO_HOME_DIR}/bin"
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
DEFAULT_BUCKET=envelopefs-test
REGION=garage
# Seconds a node may take to answer after it was started.
BOOT_TIMEOUT=30
# Seconds a freshly configured cluster may take to become healthy.
HEALTH_TIMEOUT=30

die() {
    echo "garage.sh: error: $*" >&2
    exit 1
}

note() {
    echo "garage.sh: $*" >&2
}

usage() {
    sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------------------
# Finding and installing the binary.
# ---------------------------------------------------------------------------

# Whether $1 is an executable garage of the pinned version. `garage --version` prints e.g.
# "garage cargo:2.5.0 [features: ...]" for a crates.io build, "garage v2.5.0 [...]" for a
# release build.
version_ok() {
    [ -x "$1" ] || return 1
    local v
    v="$("$1" --version 2>/dev/null | head -n 1)" || return 1
    [[ "$v" =~ ^garage[[:space:]]+([a-z]+:)?v?${GARAGE_VERSION//./\\.}([^0-9.]|$) ]]
}

# Path of a garage of the pinned version (GARAGE_BIN, PATH, cargo's bin dir), or nothing.
find_garage() {
    if [ -n "${GARAGE_BIN:-}" ]; then
        if version_ok "$GARAGE_BIN"; then
            echo "$GARAGE_BIN"
        fi
        return 0
    fi
    local c
    for c in "$(command -v garage 2>/dev/null || true)" "$CARGO_BIN_DIR/garage"; do
        if [ -n "$c" ] && version_ok "$c"; then
            echo "$c"
            return 0
        fi
    done
}

# Like find_garage, but fails with a message saying what to do.
require_garage() {
    local b
    b="$(find_garage)"
    if [ -z "$b" ]; then
        if [ -n "${GARAGE_BIN:-}" ]; then
            die "GARAGE_BIN=$GARAGE_BIN is not an executable garage $GARAGE_VERSION (it says: $("$GARAGE_BIN" --version 2>&1 | head -n 1 || true))"
        fi
        die "garage $GARAGE_VERSION not found on PATH nor in $CARGO_BIN_DIR; run scripts/garage.sh install (or set GARAGE_BIN)"
    fi
    echo "$b"
}

cmd_install() {
    if [ "${1:-}" = --background ]; then
        [ $# -eq 2 ] || usage
        install_background "$2"
        return
    fi
    [ $# -eq 0 ] || usage
    local b
    b="$(find_garage)"
    if [ -n "$b" ]; then
        echo "$b"
        return 0
    fi
    if [ -n "${GARAGE_BIN:-}" ]; then
        require_garage >/dev/null
    fi
    local cargo
    cargo="$(command -v cargo 2>/dev/null || true)"
    [ -n "$cargo" ] || cargo="$CARGO_HOME_DIR/bin/cargo"
    [ -x "$cargo" ] || die "cargo not found in PATH or $CARGO_HOME_DIR/bin (install Rust with rustup first)"
    note "building garage $GARAGE_VERSION with cargo install --locked (about 24 minutes on 2 cores beside another build)"
    local t0 t1 tdir rc=0
    t0="$(date +%s)"
    # A target dir of its own (not CARGO_TARGET_DIR or a configured one): a build of the
    # project running meanwhile must not wait for this one's lock on its target dir.
    tdir="$(mktemp -d "${TMPDIR:-/tmp}/garage-build.XXXXXX")"
    BUILD_DIR="$tdir"
    trap 'rm -rf "$BUILD_DIR"; exit 143' TERM INT HUP
    # cargo's output goes to stderr: stdout carries only the path.
    # Only the features the tests use (LMDB, from bundled sources): no SQLite, K2V or metrics
    # exporters, which are a large part of the default build.
    "$cargo" install garage --version "$GARAGE_VERSION" --locked --target-dir "$tdir" \
        --no-default-features --features "$GARAGE_FEATURES" >&2 || rc=$?
    rm -rf "$tdir"
    trap - TERM INT HUP
    [ "$rc" = 0 ] || die "cargo install garage --version $GARAGE_VERSION --locked failed (exit $rc)"
    t1="$(date +%s)"
    b="$(find_garage)"
    [ -n "$b" ] || die "garage $GARAGE_VERSION is still not found after cargo install (is $CARGO_BIN_DIR the install root?)"
    note "built garage $GARAGE_VERSION in $((t1 - t0)) s: $b"
    echo "$b"
}

# Starts `install` detached in its own process group. LOG gets the output, LOG.rc the exit
# code when done, LOG.bin the binary's path, LOG.pid the process (group) id.
install_background() {
    local log="$1"
    mkdir -p "$(dirname "$log")"
    rm -f "$log.rc" "$log.bin" "$log.pid"
    : >"$log"
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c '
        log="$1"; self="$2"
        rc=0
        "$self" install >"$log.bin.tmp" 2>>"$log" || rc=$?
        mv "$log.bin.tmp" "$log.bin"
        echo "$rc" >"$log.rc"
    ' garage-install "$log" "$SELF" </dev/null >/dev/null 2>&1 &
    echo "$!" >"$log.pid"
}

cmd_wait_install() {
    [ $# -eq 1 ] || usage
    local log="$1"
    if [ ! -e "$log.pid" ] && [ ! -e "$log.rc" ]; then
        # No build was started (garage was there already): the binary found now.
        require_garage
        return
    fi
    local t0 said=0
    t0="$(date +%s)"
    while [ ! -e "$log.rc" ]; do
        local pid
        pid="$(cat "$log.pid" 2>/dev/null || true)"
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && [ ! -e "$log.rc" ]; then
            sleep 1
            [ -e "$log.rc" ] || die "the background garage install (pid $pid) ended without an exit code; log: $log"
        fi
        if [ "$said" = 0 ]; then
            note "waiting for the background build of garage $GARAGE_VERSION (log: $log)"
            said=1
        fi
        sleep 2
    done
    local rc
    rc="$(cat "$log.rc")"
    if [ "$rc" != 0 ]; then
        echo "garage.sh: error: installing garage $GARAGE_VERSION failed (exit $rc); last lines of $log:" >&2
        tail -n 40 "$log" | sed 's/^/    /' >&2
        exit 1
    fi
    [ "$said" = 0 ] || note "waited $(($(date +%s) - t0)) s for the garage build"
    local b
    b="$(cat "$log.bin")"
    version_ok "$b" || die "the background install reported $b, which is not garage $GARAGE_VERSION"
    echo "$b"
}

cmd_cancel_install() {
    [ $# -eq 1 ] || usage
    local log="$1" pid
    [ -e "$log.rc" ] && return 0
    pid="$(cat "$log.pid" 2>/dev/null || true)"
    [ -n "$pid" ] || return 0
    # The group leader is the bash started by install_background (setsid): its group holds
    # only that install.
    if kill -0 "$pid" 2>/dev/null; then
        note "stopping the unfinished background garage install (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || true
    fi
}

# ---------------------------------------------------------------------------
# Clusters.
# ---------------------------------------------------------------------------

# Cluster layout in DIR:
#   nodeI/garage.toml  nodeI/meta  nodeI/data  nodeI/garage.log   (I = 1..N)
#   pids       "I PID" per running node        nodes    N
#   garage-bin the binary the cluster runs     key-id   the access key id (not secret)
#   env        AWS_* exports (0600)            endpoints  S3 endpoint per node
#   setup.log  output of the setup commands (no secrets)

cfg_of() { echo "$1/node$2/garage.toml"; }

cluster_bin() {
    local d="$1" b
    b="$(cat "$d/garage-bin" 2>/dev/null || true)"
    if [ -n "$b" ] && [ -x "$b" ]; then
        echo "$b"
    else
        require_garage
    fi
}

node_count() {
    local n
    n="$(cat "$1/nodes" 2>/dev/null || true)"
    [[ "$n" =~ ^[0-9]+$ ]] || die "$1 holds no cluster started by scripts/garage.sh start"
    echo "$n"
}

check_index() {
    local d="$1" i="$2" n
    n="$(node_count "$d")"
    if ! [[ "$i" =~ ^[0-9]+$ ]] || [ "$i" -lt 1 ] || [ "$i" -gt "$n" ]; then
        die "node index must be 1..$n, not $i"
    fi
}

# The recorded pid of node I, if that process is still a garage server of this node.
node_pid() {
    local d="$1" i="$2" pid cfg
    pid="$(awk -v i="$i" '$1 == i { p = $2 } END { print p }' "$d/pids" 2>/dev/null || true)"
    [ -n "$pid" ] || return 0
    cfg="$(cfg_of "$d" "$i")"
    # Guard against pid reuse: the process must be the server of this node's config.
    if [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$cfg"; then
        echo "$pid"
    fi
}

set_pid() {
    local d="$1" i="$2" pid="$3"
    {
        awk -v i="$i" '$1 != i' "$d/pids" 2>/dev/null || true
        [ -z "$pid" ] || echo "$i $pid"
    } | sort -n >"$d/pids.tmp"
    mv "$d/pids.tmp" "$d/pids"
}

# TERM the given pids, wait up to 10 s, then KILL those left.
kill_pids() {
    [ $# -gt 0 ] || return 0
    local p left
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 100); do
        left=0
        for p in "$@"; do
            if kill -0 "$p" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$p/status" 2>/dev/null; then
                left=1
            fi
        done
        [ "$left" = 1 ] || return 0
        sleep 0.1
    done
    for p in "$@"; do
        if kill -0 "$p" 2>/dev/null; then
            note "pid $p did not stop within 10 s of SIGTERM: sending SIGKILL"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
}

stop_cluster() {
    local d="$1" n i pid pids=()
    [ -e "$d/pids" ] || return 0
    n="$(cat "$d/nodes" 2>/dev/null || echo 0)"
    for i in $(seq "$n"); do
        pid="$(node_pid "$d" "$i")"
        [ -z "$pid" ] || pids+=("$pid")
    done
    kill_pids "${pids[@]}"
    : >"$d/pids"
}

# Tail of every node's log, for error messages.
log_tails() {
    local d="$1" f
    for f in "$d"/node*/garage.log; do
        [ -e "$f" ] || continue
        echo "--- last lines of $f ---" >&2
        tail -n 15 "$f" | sed 's/^/    /' >&2
    done
    if [ -s "$d/setup.log" ]; then
        echo "--- last lines of $d/setup.log ---" >&2
        tail -n 15 "$d/setup.log" | sed 's/^/    /' >&2
    fi
}

# N free TCP ports on 127.0.0.1, one per line. They are taken below the kernel's ephemeral
# range (so no outgoing connection grabs one meanwhile) and at random (so parallel clusters
# rarely pick the same); each is checked by binding it. A clash that happens anyway shows up
# as a node failing to bind, and `start` then retries with other ports.
free_ports() {
    local n="$1"
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$n" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
lo, hi = 20000, 32000
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph = int(f.read().split()[0])
    if eph - 1 > lo + 1000:
        hi = min(hi, eph - 1)
except OSError:
    pass
held, ports = [], []
while len(ports) < n:
    p = random.randint(lo, hi)
    if p in ports:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    held.append(s)
    ports.append(p)
for s in held:
    s.close()
print("\n".join(map(str, ports)))
EOF
    else
        # No python3: a port nobody answers on is taken as free.
        local got=() p
        while [ "${#got[@]}" -lt "$n" ]; do
            p=$((20000 + RANDOM % 12000))
            [[ " ${got[*]} " == *" $p "* ]] && continue
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
                got+=("$p")
            fi
        done
        printf '%s\n' "${got[@]}"
    fi
}

random_hex() {
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

# Who listens on 127.0.0.1:PORT as seen from process PID: "own" when PID holds the
# listening socket, "other" when another process does, "none" when nobody does. (A port a
# node failed to bind does not stop Garage: its S3 or admin server just is not there, and
# another process may answer on the port. Only this tells the two apart.)
port_owner() {
    local port="$1" pid="$2" hex inode
    hex="$(printf '0100007F:%04X' "$port")"
    inode="$(awk -v a="$hex" '$2 == a && $4 == "0A" { print $10; exit }' /proc/net/tcp 2>/dev/null)"
    if [ -z "$inode" ]; then
        echo none
    elif find "/proc/$pid/fd" -maxdepth 1 -lname "socket:\[$inode\]" 2>/dev/null | grep -q .; then
        echo own
    else
        echo other
    fi
}

# GARAGE_BLOCK_SIZE in bytes (empty when unset), or failure.
block_size_bytes() {
    local v="${GARAGE_BLOCK_SIZE:-}" num unit
    [ -n "$v" ] || return 0
    [[ "$v" =~ ^([1-9][0-9]*)([KMG]?)$ ]] ||
        die "GARAGE_BLOCK_SIZE must be a positive number of bytes, optionally with K, M or G, not $v"
    num="${BASH_REMATCH[1]}"
    unit="${BASH_REMATCH[2]}"
    case "$unit" in
        K) num=$((num << 10)) ;;
        M) num=$((num << 20)) ;;
        G) num=$((num << 30)) ;;
    esac
    echo "$num"
}

write_config() {
    local d="$1" i="$2" n="$3" rpc="$4" s3="$5" admin="$6" secret="$7" token="$8"
    local nd="$d/node$i" rf=3 block=""
    [ "$n" -ge 3 ] || rf="$n"
    mkdir -p "$nd/meta" "$nd/data"
    if [ -n "$BLOCK_SIZE" ]; then
        block="block_size = $BLOCK_SIZE"
    fi
    (
        umask 077
        cat >"$nd/garage.toml" <<EOF
# Node $i of a test cluster made by scripts/garage.sh.
metadata_dir = "$nd/meta"
data_dir = "$nd/data"
db_engine = "lmdb"
replication_factor = $rf

# Test clusters run without fsync (faster; a crash of the machine may lose their data).
metadata_fsync = false
data_fsync = false
$block

rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$token"
EOF
    )
}

# Starts node I's server in the background and records its pid.
spawn_node() {
    local d="$1" i="$2" bin="$3" cfg
    cfg="$(cfg_of "$d" "$i")"
    # The server must not keep the caller's stdout/stderr open (a test reading them would
    # wait for the cluster to stop): everything goes to the node's log.
    NO_COLOR=1 RUST_LOG="${GARAGE_LOG:-netapp=info,garage=info}" \
        "$bin" -c "$cfg" server </dev/null >>"$d/node$i/garage.log" 2>&1 &
    set_pid "$d" "$i" "$!"
}

# Runs garage against node I, output appended to setup.log; fails like the command.
g() {
    local d="$1" i="$2"
    shift 2
    "$BIN" -c "$(cfg_of "$d" "$i")" "$@" >>"$d/setup.log" 2>&1
}

# Waits until node I answers on RPC (and has its node key), S3 and admin ports. Returns 2
# when the process died (3 when its log says an address was in use), 1 on timeout.
wait_node_up() {
    local d="$1" i="$2" timeout="$3" cfg ports deadline pid p o mine
    cfg="$(cfg_of "$d" "$i")"
    # rpc, s3 and admin ports (every 127.0.0.1:PORT of the config).
    ports="$(sed -n 's/^[a-z_]*bind_addr = "127\.0\.0\.1:\([0-9]*\)"/\1/p' "$cfg" | sort -u)"
    deadline=$((SECONDS + timeout))
    while :; do
        pid="$(node_pid "$d" "$i")"
        if [ -z "$pid" ]; then
            if grep -qiE 'address already in use|AddrInUse' "$d/node$i/garage.log" 2>/dev/null; then
                return 3
            fi
            return 2
        fi
        mine=1
        for p in $ports; do
            o="$(port_owner "$p" "$pid")"
            if [ "$o" = other ]; then
                note "node $i: another process listens on its port $p"
                return 3
            fi
            [ "$o" = own ] || mine=0
        done
        if [ "$mine" = 1 ] && "$BIN" -c "$cfg" json-api GetClusterStatus >/dev/null 2>&1; then
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# The value of a JSON field "name": number|"string" in the text on stdin (first match).
json_field() {
    sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n 1
}

# Waits until node I sees the cluster healthy with `want` storage nodes up.
wait_healthy() {
    local d="$1" i="$2" want="$3" timeout="$4" deadline out
    deadline=$((SECONDS + timeout))
    while :; do
        out="$("$BIN" -c "$(cfg_of "$d" "$i")" json-api GetClusterHealth 2>/dev/null || true)"
        if [ "$(tr -d '\n' <<<"$out" | json_field status)" = healthy ] &&
            [ "$(tr -d '\n' <<<"$out" | json_field storageNodesUp)" = "$want" ]; then
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# Retries a garage command a few times (right after a layout change a node may still lack
# the new layout for a moment).
g_retry() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        if g "$@"; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# One attempt at starting the cluster. Returns 3 when a node could not bind its ports (the
# caller retries with other ports), 1 on other failures (message on stderr).
start_attempt() {
    local d="$1" n="$2" bucket="$3"
    local secret token ports i rpc s3 admin r
    secret="$(random_hex 32)"
    token="$(random_hex 32)"
    mapfile -t ports < <(free_ports $((3 * n)))
    [ "${#ports[@]}" -eq $((3 * n)) ] || { note "could not find $((3 * n)) free ports"; return 1; }
    rm -rf "$d"/node* "$d/pids" "$d/setup.log" "$d/env" "$d/endpoints" "$d/key-id"
    echo "$n" >"$d/nodes"
    echo "$BIN" >"$d/garage-bin"
    : >"$d/pids"
    : >"$d/endpoints"
    for i in $(seq "$n"); do
        rpc="${ports[$((3 * (i - 1)))]}"
        s3="${ports[$((3 * (i - 1) + 1))]}"
        admin="${ports[$((3 * (i - 1) + 2))]}"
        write_config "$d" "$i" "$n" "$rpc" "$s3" "$admin" "$secret" "$token"
        echo "http://127.0.0.1:$s3" >>"$d/endpoints"
    done
    for i in $(seq "$n"); do
        spawn_node "$d" "$i" "$BIN"
    done
    for i in $(seq "$n"); do
        r=0
        wait_node_up "$d" "$i" "$BOOT_TIMEOUT" || r=$?
        case "$r" in
            0) ;;
            3) note "node $i could not bind its ports; retrying with others"; return 3 ;;
            2) note "node $i exited while starting"; return 1 ;;
            *) note "node $i did not answer within $BOOT_TIMEOUT s"; return 1 ;;
        esac
    done

    # Node ids ("hex@127.0.0.1:port").
    local ids=() id
    for i in $(seq "$n"); do
        id="$("$BIN" -c "$(cfg_of "$d" "$i")" node id -q 2>>"$d/setup.log")" ||
            { note "cannot read the id of node $i"; return 1; }
        ids+=("$id")
    done
    for i in $(seq 2 "$n"); do
        g_retry "$d" 1 node connect "${ids[$((i - 1))]}" || { note "node 1 cannot connect to node $i"; return 1; }
    done
    # One zone per node: with 3 nodes and replication factor 3 every zone holds one copy.
    for i in $(seq "$n"); do
        g "$d" 1 layout assign -z "z$i" -c 1G "${ids[$((i - 1))]%%@*}" || { note "layout assign failed"; return 1; }
    done
    g "$d" 1 layout apply --version 1 || { note "layout apply failed"; return 1; }
    for i in $(seq "$n"); do
        wait_healthy "$d" "$i" "$n" "$HEALTH_TIMEOUT" ||
            { note "node $i does not see a healthy cluster of $n nodes within $HEALTH_TIMEOUT s"; return 1; }
    done

    # The access key: its secret goes only into DIR/env.
    local out key_id key_secret
    out="$("$BIN" -c "$(cfg_of "$d" 1)" json-api CreateKey '{"name":"envelopefs-test"}' 2>>"$d/setup.log")" ||
        { note "creating the access key failed"; return 1; }
    out="$(tr -d '\n' <<<"$out")"
    key_id="$(json_field accessKeyId <<<"$out")"
    key_secret="$(json_field secretAccessKey <<<"$out")"
    if [ -z "$key_id" ] || [ -z "$key_secret" ]; then
        note "no key id or secret in garage's reply to CreateKey"
        return 1
    fi
    echo "$key_id" >"$d/key-id"
    make_bucket "$d" 1 "$bucket" "$key_id" || return 1

    (
        umask 077
        cat >"$d/env" <<EOF
export AWS_ENDPOINT_URL='$(head -n 1 "$d/endpoints")'
export AWS_ACCESS_KEY_ID='$key_id'
export AWS_SECRET_ACCESS_KEY='$key_secret'
export AWS_REGION='$REGION'
export AWS_DEFAULT_REGION='$REGION'
export GARAGE_TEST_BUCKET='$bucket'
EOF
    )
    return 0
}

make_bucket() {
    local d="$1" i="$2" name="$3" key_id="$4"
    g_retry "$d" "$i" bucket create "$name" || { note "creating bucket $name failed"; return 1; }
    g_retry "$d" "$i" bucket allow --read --write --owner "$name" --key "$key_id" ||
        { note "allowing key $key_id on bucket $name failed"; return 1; }
}

cmd_start() {
    local d="" n=3 bucket="$DEFAULT_BUCKET"
    while [ $# -gt 0 ]; do
        case "$1" in
            --nodes) [ $# -ge 2 ] || usage; n="$2"; shift 2 ;;
            --bucket) [ $# -ge 2 ] || usage; bucket="$2"; shift 2 ;;
            -*) usage ;;
            *) [ -z "$d" ] || usage; d="$1"; shift ;;
        esac
    done
    [ -n "$d" ] || usage
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive number, not $n"
    BIN="$(require_garage)"
    BLOCK_SIZE="$(block_size_bytes)"
    mkdir -p "$d"
    chmod 700 "$d"
    d="$(cd "$d" && pwd -P)"
    if [ -e "$d/pids" ] && [ -e "$d/nodes" ]; then
        local i
        for i in $(seq "$(cat "$d/nodes")"); do
            [ -z "$(node_pid "$d" "$i")" ] || die "$d already has a running cluster (scripts/garage.sh stop $d first)"
        done
    fi
    local t0 attempt r
    t0="$(date +%s%N)"
    # Stop what this start started if it is interrupted or fails.
    STARTING="$d"
    trap 'stop_cluster "$STARTING"' EXIT
    trap 'exit 130' INT TERM HUP
    for attempt in 1 2 3 4 5; do
        r=0
        start_attempt "$d" "$n" "$bucket" || r=$?
        [ "$r" = 0 ] && break
        stop_cluster "$d"
        if [ "$r" != 3 ] || [ "$attempt" = 5 ]; then
            echo "garage.sh: error: starting a $n-node Garage cluster in $d failed" >&2
            log_tails "$d"
            exit 1
        fi
    done
    trap - EXIT INT TERM HUP
    note "$n-node cluster up in $((($(date +%s%N) - t0) / 1000000)) ms: $d (endpoint $(head -n 1 "$d/endpoints"), bucket $bucket)"
}

cmd_stop() {
    [ $# -eq 1 ] || usage
    [ -d "$1" ] || return 0
    stop_cluster "$(cd "$1" && pwd -P)"
}

cmd_stop_node() {
    [ $# -eq 2 ] || usage
    local d i="$2" pid
    d="$(cd "$1" && pwd -P)" || die "no directory $1"
    check_index "$d" "$i"
    pid="$(node_pid "$d" "$i")"
    if [ -n "$pid" ]; then
        kill_pids "$pid"
    fi
    set_pid "$d" "$i" ""
}

# Waits until every running node sees WANT storage nodes up (the others notice a stopped
# node only after several seconds).
cmd_wait_up() {
    [ $# -eq 2 ] || usage
    local d want="$2" j
    d="$(cd "$1" && pwd -P)" || die "no directory $1"
    [[ "$want" =~ ^[0-9]+$ ]] || die "not a node count: $want"
    BIN="$(cluster_bin "$d")"
    for j in $(seq "$(node_count "$d")"); do
        [ -n "$(node_pid "$d" "$j")" ] || continue
        wait_up_count "$d" "$j" "$want" ||
            die "node $j sees $(up_count "$d" "$j") storage nodes up, not $want, after $HEALTH_TIMEOUT s"
    done
}

# Storage nodes up as node I sees them (empty if it does not answer).
up_count() {
    "$BIN" -c "$(cfg_of "$1" "$2")" json-api GetClusterHealth 2>/dev/null | tr -d '\n' |
        json_field storageNodesUp || true
}

# Waits until node I sees WANT storage nodes up.
wait_up_count() {
    local d="$1" i="$2" want="$3" deadline=$((SECONDS + HEALTH_TIMEOUT))
    while [ "$(up_count "$d" "$i")" != "$want" ]; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

cmd_start_node() {
    [ $# -eq 2 ] || usage
    local d i="$2" n r up j
    d="$(cd "$1" && pwd -P)" || die "no directory $1"
    check_index "$d" "$i"
    n="$(node_count "$d")"
    if [ -n "$(node_pid "$d" "$i")" ]; then
        note "node $i is already running"
        return 0
    fi
    BIN="$(cluster_bin "$d")"
    echo "--- restarted by scripts/garage.sh start-node at $(date -u +%FT%TZ) ---" >>"$d/node$i/garage.log"
    spawn_node "$d" "$i" "$BIN"
    r=0
    wait_node_up "$d" "$i" "$BOOT_TIMEOUT" || r=$?
    if [ "$r" != 0 ]; then
        echo "garage.sh: error: node $i of $d did not come back (reason $r)" >&2
        log_tails "$d"
        local pid
        pid="$(node_pid "$d" "$i")"
        [ -z "$pid" ] || kill_pids "$pid"
        set_pid "$d" "$i" ""
        exit 1
    fi
    # Back in the cluster. The restarted node does not always call the others by itself,
    # and they retry with growing delays (30 s and more were seen): connect it to them.
    # Both ways: a node that saw node I fail counts it up again only once it has called it.
    local id id_i
    id_i="$("$BIN" -c "$(cfg_of "$d" "$i")" node id -q 2>>"$d/setup.log")" || die "cannot read the id of node $i"
    for j in $(seq "$n"); do
        if [ "$j" = "$i" ] || [ -z "$(node_pid "$d" "$j")" ]; then
            continue
        fi
        id="$("$BIN" -c "$(cfg_of "$d" "$j")" node id -q 2>>"$d/setup.log")" || continue
        g_retry "$d" "$i" node connect "$id" || note "node $i could not connect to node $j (yet)"
        g_retry "$d" "$j" node connect "$id_i" || note "node $j could not connect to node $i (yet)"
    done
    # Every running node sees every running node.
    up=0
    for j in $(seq "$n"); do
        [ -z "$(node_pid "$d" "$j")" ] || up=$((up + 1))
    done
    for j in $(seq "$n"); do
        [ -n "$(node_pid "$d" "$j")" ] || continue
        if ! wait_up_count "$d" "$j" "$up"; then
            echo "garage.sh: error: node $j of $d does not see the $up running nodes within $HEALTH_TIMEOUT s of restarting node $i" >&2
            log_tails "$d"
            exit 1
        fi
    done
}

# A running node of the cluster (the first), or failure.
live_node() {
    local d="$1" i
    for i in $(seq "$(node_count "$d")"); do
        if [ -n "$(node_pid "$d" "$i")" ]; then
            echo "$i"
            return 0
        fi
    done
    die "no node of $d is running"
}

cmd_bucket() {
    [ $# -eq 2 ] || usage
    local d i key_id
    d="$(cd "$1" && pwd -P)" || die "no directory $1"
    key_id="$(cat "$d/key-id" 2>/dev/null)" || die "$d holds no cluster started by scripts/garage.sh start"
    i="$(live_node "$d")"
    BIN="$(cluster_bin "$d")"
    if ! make_bucket "$d" "$i" "$2" "$key_id"; then
        tail -n 15 "$d/setup.log" | sed 's/^/    /' >&2
        exit 1
    fi
}

cmd_status() {
    [ $# -eq 1 ] || usage
    local d i
    d="$(cd "$1" && pwd -P)" || die "no directory $1"
    i="$(live_node "$d")"
    BIN="$(cluster_bin "$d")"
    "$BIN" -c "$(cfg_of "$d" "$i")" status
}

[ $# -ge 1 ] || usage
sub="$1"
shift
case "$sub" in
    install) cmd_install "$@" ;;
    wait-install) cmd_wait_install "$@" ;;
    cancel-install) cmd_cancel_install "$@" ;;
    path) [ $# -eq 0 ] || usage; require_garage ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    stop-node) cmd_stop_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    wait-up) cmd_wait_up "$@" ;;
    bucket) cmd_bucket "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
