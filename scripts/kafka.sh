#!/usr/bin/env bash
# Start/stop a single-node Apache Kafka 4.x broker (KRaft, broker+controller
# in one JVM) for development and tests. The jars come from Maven Central via
# `mvn` and are cached outside the repo; no docker, no Kafka tarball.
#
#   BOOTSTRAP=$(scripts/kafka.sh start --port 0)   # last stdout line = address
#   scripts/kafka.sh stop
#
# See docs/kafka.md and `scripts/kafka.sh --help`.
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
SCALA_VERSION="${SCALA_VERSION:-2.13}"
LOG4J_VERSION="${LOG4J_VERSION:-2.25.5}"
SLF4J_VERSION="${SLF4J_VERSION:-2.0.17}"
CACHE_ROOT="${TWEETOSCOPE_CACHE:-$HOME/.cache/tweetoscope}"
KAFKA_HOME_DIR="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIB="$KAFKA_HOME_DIR/lib"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"
KAFKA_OPTS="${KAFKA_OPTS:-}"
KAFKA_LOG_LEVEL="${KAFKA_LOG_LEVEL:-WARN}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_SASL_USERS="${KAFKA_SASL_USERS:-tweetoscope:tweetoscope-secret}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
TMP_ROOT="${TMPDIR:-/tmp}"
TMP_ROOT="${TMP_ROOT%/}"
DEFAULT_PORT=9092
HOST=127.0.0.1
# Fast-starting, small JVM for the short-lived tool invocations (readiness probe).
TOOL_JVM_OPTS=(-Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto)

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    cat <<EOF
Usage: scripts/kafka.sh COMMAND [OPTIONS]

Single-node Apache Kafka $KAFKA_VERSION (KRaft, combined broker+controller) for dev/tests.

Commands:
  start [--port P] [--controller-port P2] [--sasl-port P3] [--dir DIR]
        Fetch the jars if needed, format storage, start the broker in the
        background and wait until it answers a real admin request. Prints the
        bootstrap address (127.0.0.1:P) as the LAST line of stdout; everything
        else goes to stderr:  BOOTSTRAP=\$(scripts/kafka.sh start --port 0)
        --port 0 picks a free port. Default port $DEFAULT_PORT; controller port
        defaults to P+1 (or a free one). Without --dir a fresh temp dir under
        \${TMPDIR:-/tmp} is used and removed by 'stop'. If a broker started by
        this script already runs on that port/dir, says so and prints its address.
        --sasl-port P3 also opens a SASL_PLAINTEXT listener (mechanism PLAIN) on
        P3 (0: a free port, logged on stderr) for the users of \$KAFKA_SASL_USERS.
  stop [--port P] [--dir DIR]
        SIGTERM, wait up to \$KAFKA_STOP_TIMEOUT s ($KAFKA_STOP_TIMEOUT), then SIGKILL.
        Removes the state dir if 'start' created it. Without options: the broker
        on port $DEFAULT_PORT, or the only broker this script knows about.
  status [--port P] [--dir DIR]
        Prints whether it runs and its address; exit 0 if running, 1 if not.
  fetch
        Only download the jars into the cache (e.g. to warm a CI cache).
  -h, --help
        This help.

Environment:
  TWEETOSCOPE_CACHE    cache root (default \$HOME/.cache/tweetoscope); jars go to
                       \$TWEETOSCOPE_CACHE/kafka-<version>/lib  (now: $LIB)
  KAFKA_VERSION        org.apache.kafka:kafka_$SCALA_VERSION version (default $KAFKA_VERSION)
  KAFKA_HEAP_OPTS      JVM heap flags (default "-Xmx512m -Xms256m")
  KAFKA_OPTS           extra JVM flags for the broker
  KAFKA_LOG_LEVEL      root log level of DIR/server.log (default WARN)
  KAFKA_EXTRA_CONFIG   extra server.properties lines (newline separated), appended last
  KAFKA_SASL_USERS     users of the SASL listener, "name:password,..." (default
                       tweetoscope:tweetoscope-secret)
  KAFKA_START_TIMEOUT  seconds to wait for readiness (default 90)
  KAFKA_STOP_TIMEOUT   seconds to wait after SIGTERM before SIGKILL (default 30)

Files: DIR/server.properties, DIR/server.log (broker log), DIR/kafka.out (JVM
stdout/stderr), DIR/kafka.pid, DIR/kafka.env; and \${TMPDIR:-/tmp}/tweetoscope-kafka-<port>.env
EOF
}

# ---------------------------------------------------------------- jars ----
have_jars() { [[ -f "$LIB/.complete" ]]; }

fetch_jars() {
    have_jars && return 0
    command -v mvn >/dev/null || die "mvn not found (needed once to fetch the Kafka jars)"
    command -v java >/dev/null || die "java not found (Kafka $KAFKA_VERSION needs Java 17+)"
    mkdir -p "$KAFKA_HOME_DIR"
    # Serialize concurrent fetches (e.g. parallel test workers). The lock fd is
    # only open inside this subshell, so the broker JVM never inherits it.
    (
        if command -v flock >/dev/null; then flock 9; fi
        have_jars && exit 0
        log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIB"
        local_tmp="$(mktemp -d "$KAFKA_HOME_DIR/fetch.XXXXXX")"
        trap 'rm -rf "$local_tmp"' EXIT
        cat >"$local_tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tweetoscope</groupId><artifactId>kafka-dev-broker</artifactId>
  <version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_$SCALA_VERSION</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- TopicCommand etc. (readiness probe, handy CLI); Connect is not needed -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion></exclusions>
    </dependency>
    <!-- kafka_2.13's pom resolves slf4j-api 1.7 (via scala-logging) and ships no
         binding; Kafka 4 logs through log4j2, so pin SLF4J 2 + the log4j2 binding. -->
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
        if ! mvn -q -B -f "$local_tmp/pom.xml" dependency:copy-dependencies \
                -DincludeScope=runtime -DoutputDirectory="$local_tmp/lib" \
                >"$local_tmp/mvn.log" 2>&1; then
            tail -n 40 "$local_tmp/mvn.log" >&2
            die "mvn could not fetch org.apache.kafka:kafka_$SCALA_VERSION:$KAFKA_VERSION"
        fi
        ls "$local_tmp/lib"/kafka_"$SCALA_VERSION"-*.jar >/dev/null 2>&1 \
            || die "fetched jars lack kafka_$SCALA_VERSION"
        rm -rf "$LIB"
        mv "$local_tmp/lib" "$LIB"
        cp "$local_tmp/pom.xml" "$KAFKA_HOME_DIR/pom.xml"
        touch "$LIB/.complete"
        log "cached $(find "$LIB" -name '*.jar' | wc -l) jars ($(du -sh "$LIB" | cut -f1)) in $LIB"
    ) 9>"$KAFKA_HOME_DIR/.fetch.lock"
}

# --------------------------------------------------------------- ports ----
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# A port nothing listens on, other than $1, with the next one free too (the controller's when the
# broker's port is chosen), below the kernel's ephemeral range: a port the kernel hands out (bind to
# port 0) can be taken by some client's outgoing connection before the broker binds it (seen: the
# controller's port, in a test session beside a busy Dask cluster). tests/helpers.reusable_ports
# picks the test servers' ports the same way.
free_port() {
    local p low
    low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)"
    [[ "$low" =~ ^[0-9]+$ ]] || low=32768
    local first=$(( low > 13024 ? low - 12000 : 1024 ))
    local span=$(( low - 2 - first ))
    (( span > 0 )) || die "no ports below the ephemeral range ($low)"
    for _ in $(seq 200); do
        p=$(( first + RANDOM % span ))
        [[ "$p" == "${1:-}" || "$(( p + 1 ))" == "${1:-}" ]] && continue
        port_open "$p" || port_open "$(( p + 1 ))" || { echo "$p"; return; }
    done
    die "could not find a free port"
}

# --------------------------------------------------------------- state ----
state_file_for_port() { echo "$TMP_ROOT/tweetoscope-kafka-$1.env"; }

S_PORT="" S_CONTROLLER_PORT="" S_DIR="" S_TEMP=0 S_PID="" S_VERSION="" STATE_FILE=""
# Sets S_PORT S_CONTROLLER_PORT S_DIR S_TEMP S_PID S_VERSION from an env file.
load_state() {
    S_PORT="" S_CONTROLLER_PORT="" S_DIR="" S_TEMP=0 S_PID="" S_VERSION=""
    [[ -f "$1" ]] || return 1
    # shellcheck disable=SC1090
    source "$1"
    S_PORT="${PORT:-}" S_CONTROLLER_PORT="${CONTROLLER_PORT:-}" S_DIR="${DIR:-}"
    S_TEMP="${TEMP_DIR:-0}" S_VERSION="${VERSION:-}"
    S_PID=""
    [[ -n "$S_DIR" && -f "$S_DIR/kafka.pid" ]] && S_PID="$(cat "$S_DIR/kafka.pid" 2>/dev/null || true)"
    [[ -n "$S_PORT" ]]
}

write_state() {  # file
    {
        printf 'PORT=%q\n' "$PORT"
        printf 'CONTROLLER_PORT=%q\n' "$CONTROLLER_PORT"
        printf 'DIR=%q\n' "$DIR"
        printf 'TEMP_DIR=%q\n' "$TEMP_DIR"
        printf 'VERSION=%q\n' "$KAFKA_VERSION"
    } >"$1"
}

# Is PID a live broker JVM started by this script on DIR?
pid_is_ours() {  # pid dir
    local pid="$1" dir="$2"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 0  # no procfs: trust kill -0
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF "$dir/server.properties"
}

# Resolve which broker stop/status mean. Sets STATE_FILE (may be empty).
resolve_state() {  # port dir
    local port="$1" dir="$2"
    STATE_FILE=""
    if [[ -n "$dir" ]]; then
        STATE_FILE="$dir/kafka.env"
    elif [[ -n "$port" ]]; then
        STATE_FILE="$(state_file_for_port "$port")"
    elif [[ -f "$(state_file_for_port "$DEFAULT_PORT")" ]]; then
        STATE_FILE="$(state_file_for_port "$DEFAULT_PORT")"
    else
        local files=()
        shopt -s nullglob
        files=("$TMP_ROOT"/tweetoscope-kafka-*.env)
        shopt -u nullglob
        if (( ${#files[@]} == 1 )); then
            STATE_FILE="${files[0]}"
        elif (( ${#files[@]} > 1 )); then
            log "several brokers known (${files[*]}); pass --port or --dir"
        fi
    fi
}

# -------------------------------------------------------------- config ----
write_configs() {
    mkdir -p "$DIR/data"
    cat >"$DIR/server.properties" <<EOF
# Written by scripts/kafka.sh: single-node KRaft dev broker (Kafka $KAFKA_VERSION).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT${SASL_PORT:+,SASL_PLAINTEXT://$HOST:$SASL_PORT}
advertised.listeners=PLAINTEXT://$HOST:$PORT${SASL_PORT:+,SASL_PLAINTEXT://$HOST:$SASL_PORT}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# small machine (2 cores): fewer threads
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
EOF
    if [[ -n "${SASL_PORT:-}" ]]; then
        # SASL/PLAIN on its own listener; users "name:password,..." from KAFKA_SASL_USERS.
        local users="" pair
        local -a pairs
        IFS=',' read -ra pairs <<<"$KAFKA_SASL_USERS"
        for pair in "${pairs[@]}"; do
            [[ "$pair" == *:* ]] || die "KAFKA_SASL_USERS: '$pair' is not name:password"
            users+=" user_${pair%%:*}=\"${pair#*:}\""
        done
        printf '%s\n' "sasl.enabled.mechanisms=PLAIN" \
            "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$users;" \
            >>"$DIR/server.properties"
        chmod 600 "$DIR/server.properties"
    fi
    if [[ -n "${KAFKA_EXTRA_CONFIG:-}" ]]; then
        printf '# KAFKA_EXTRA_CONFIG\n%s\n' "$KAFKA_EXTRA_CONFIG" >>"$DIR/server.properties"
    fi
    # Kafka 4 logs via log4j2; without a config log4j2 prints a status warning and
    # only ERRORs to the console. Send everything to DIR/server.log instead.
    cat >"$DIR/log4j2.properties" <<EOF
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $DIR/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $KAFKA_LOG_LEVEL
rootLogger.appenderRef.file.ref = FILE
# lifecycle lines ("Kafka Server started", shutdown) stay visible at WARN
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
logger.kafka.name = kafka.Kafka\$
logger.kafka.level = INFO
EOF
    cat >"$DIR/tools-log4j2.properties" <<EOF
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
    cat >"$DIR/admin.properties" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

run_tool() {  # main-class args...
    java "${TOOL_JVM_OPTS[@]}" -Dlog4j2.configurationFile="$DIR/tools-log4j2.properties" \
        -cp "$LIB/*" "$@"
}

format_storage() {
    if [[ -f "$DIR/data/meta.properties" ]]; then
        log "storage in $DIR/data already formatted; reusing it"
        return
    fi
    local cluster_id
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding; one that starts with '-' would be
    # read as an option by kafka-storage (1 start in 64 failed so), so draw again (as Kafka's Uuid does).
    cluster_id="-"
    while [[ "$cluster_id" == -* ]]; do
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    if ! run_tool kafka.tools.StorageTool format --cluster-id "$cluster_id" \
            --config "$DIR/server.properties" --ignore-formatted >"$DIR/format.log" 2>&1; then
        tail -n 30 "$DIR/format.log" >&2
        die "kafka.tools.StorageTool format failed (dir kept: $DIR)"
    fi
}

# ------------------------------------------------------------ commands ----
cmd_start() {
    local port="$DEFAULT_PORT" cport="" dir="" sport=""
    while (( $# )); do
        case "$1" in
            --sasl-port) sport="${2:?--sasl-port needs a value}"; shift 2 ;;
            --sasl-port=*) sport="${1#*=}"; shift ;;
            --port) port="${2:?--port needs a value}"; shift 2 ;;
            --port=*) port="${1#*=}"; shift ;;
            --controller-port) cport="${2:?--controller-port needs a value}"; shift 2 ;;
            --controller-port=*) cport="${1#*=}"; shift ;;
            --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
            --dir=*) dir="${1#*=}"; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "start: unknown option '$1' (see --help)" ;;
        esac
    done
    [[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number"
    [[ -z "$cport" || "$cport" =~ ^[0-9]+$ ]] || die "--controller-port must be a number"
    [[ -n "$dir" ]] && { mkdir -p "$dir"; dir="$(cd "$dir" && pwd -P)"; }

    # Already running (started by us) on that dir / port?
    local existing=""
    if [[ -n "$dir" ]]; then existing="$dir/kafka.env"
    elif [[ "$port" != 0 ]]; then existing="$(state_file_for_port "$port")"; fi
    if [[ -n "$existing" ]] && load_state "$existing" && pid_is_ours "$S_PID" "$S_DIR"; then
        log "already running: pid $S_PID, dir $S_DIR"
        echo "$HOST:$S_PORT"
        return 0
    fi
    # A stale temp dir from a broker that died without 'stop': drop it.
    if [[ -n "$existing" && "$S_TEMP" == 1 && "$S_DIR" == "$TMP_ROOT"/tweetoscope-kafka.* && -z "$dir" ]]; then
        log "removing stale state of a dead broker ($S_DIR)"
        rm -rf "$S_DIR" "$existing"
    fi

    fetch_jars

    if [[ "$port" == 0 ]]; then
        port="$(free_port)"
    elif port_open "$port"; then
        die "port $port is already in use by another process"
    fi
    if [[ -z "$cport" || "$cport" == 0 ]]; then
        cport=$(( port + 1 ))
        if (( cport > 65535 )) || port_open "$cport"; then cport="$(free_port "$port")"; fi
    fi
    [[ "$cport" != "$port" ]] || die "controller port must differ from port"
    port_open "$cport" && die "controller port $cport is already in use"
    if [[ -n "$sport" ]]; then
        [[ "$sport" =~ ^[0-9]+$ ]] || die "--sasl-port must be a number"
        [[ "$sport" == 0 ]] && sport="$(free_port "$cport")"
        port_open "$sport" && die "SASL port $sport is already in use"
        log "SASL_PLAINTEXT (PLAIN) listener on $HOST:$sport"
    fi
    SASL_PORT="$sport"

    PORT="$port" CONTROLLER_PORT="$cport" TEMP_DIR=0
    if [[ -z "$dir" ]]; then
        mkdir -p "$TMP_ROOT"
        dir="$(mktemp -d "$TMP_ROOT/tweetoscope-kafka.XXXXXX")"
        TEMP_DIR=1
    fi
    DIR="$dir"
    write_configs
    format_storage

    rm -f "$DIR/kafka.pid"
    local -a cmd=(java $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_OPTS
        -Dlog4j2.configurationFile="$DIR/log4j2.properties" -Dkafka.logs.dir="$DIR"
        -cp "$LIB/*" kafka.Kafka "$DIR/server.properties")
    # Detached: own session, stdin/stdout/stderr not inherited (so that
    # $(scripts/kafka.sh start) returns). The inner shell records its pid,
    # which stays the JVM's pid after exec.
    local launcher=(nohup)
    command -v setsid >/dev/null && launcher=(setsid)
    "${launcher[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$DIR/kafka.pid" "${cmd[@]}" \
        </dev/null >>"$DIR/kafka.out" 2>&1 &
    local started=$SECONDS pid=""
    for _ in $(seq 50); do
        [[ -s "$DIR/kafka.pid" ]] && { pid="$(cat "$DIR/kafka.pid")"; break; }
        sleep 0.1
    done
    [[ -n "$pid" ]] || die "broker did not start (no pid file); see $DIR/kafka.out"
    write_state "$DIR/kafka.env"
    write_state "$(state_file_for_port "$PORT")"
    log "starting Kafka $KAFKA_VERSION (pid $pid) on $HOST:$PORT, controller $HOST:$CONTROLLER_PORT, dir $DIR"

    # Wait: TCP listener first (cheap), then a real admin request (list topics).
    local deadline=$(( SECONDS + KAFKA_START_TIMEOUT ))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "broker process $pid exited during startup; last log lines:"
            tail -n 40 "$DIR/server.log" >&2 2>/dev/null || true
            tail -n 20 "$DIR/kafka.out" >&2 2>/dev/null || true
            TEMP_DIR=0 cleanup_state  # keep the dir (logs) for inspection
            log "logs kept in $DIR"
            exit 1
        fi
        local left=$(( deadline - SECONDS ))
        (( left < 5 )) && left=5
        (( left > 30 )) && left=30
        if port_open "$PORT" &&
            timeout "$left" java "${TOOL_JVM_OPTS[@]}" -Dlog4j2.configurationFile="$DIR/tools-log4j2.properties" \
                -cp "$LIB/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$PORT" \
                --command-config "$DIR/admin.properties" --list >"$DIR/probe.log" 2>&1; then
            break
        fi
        if (( SECONDS >= deadline )); then
            log "broker not ready after ${KAFKA_START_TIMEOUT}s; last log lines:"
            tail -n 40 "$DIR/server.log" >&2 2>/dev/null || true
            tail -n 20 "$DIR/kafka.out" >&2 2>/dev/null || true
            tail -n 10 "$DIR/probe.log" >&2 2>/dev/null || true
            log "leaving it running for inspection; stop it with: scripts/kafka.sh stop --dir $DIR"
            exit 1
        fi
        sleep 0.5
    done
    log "ready after $(( SECONDS - started ))s: $HOST:$PORT (logs: $DIR/server.log)"
    echo "$HOST:$PORT"
}

cleanup_state() {  # uses DIR, PORT (set by caller / load_state)
    local sf
    sf="$(state_file_for_port "$PORT")"
    # Only drop the per-port file if it points at this dir.
    if load_state "$sf" 2>/dev/null && [[ "$S_DIR" == "$DIR" ]]; then rm -f "$sf"; fi
    rm -f "$DIR/kafka.pid" "$DIR/kafka.env"
    if [[ "$TEMP_DIR" == 1 && "$DIR" == "$TMP_ROOT"/tweetoscope-kafka.* ]]; then
        rm -rf "$DIR"
    fi
}

parse_target() {  # sets T_PORT T_DIR
    T_PORT="" T_DIR=""
    while (( $# )); do
        case "$1" in
            --port) T_PORT="${2:?--port needs a value}"; shift 2 ;;
            --port=*) T_PORT="${1#*=}"; shift ;;
            --dir) T_DIR="${2:?--dir needs a value}"; shift 2 ;;
            --dir=*) T_DIR="${1#*=}"; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
    if [[ -n "$T_DIR" ]]; then
        [[ -d "$T_DIR" ]] || die "no such dir: $T_DIR"
        T_DIR="$(cd "$T_DIR" && pwd -P)"
    fi
}

cmd_stop() {
    parse_target "$@"
    resolve_state "$T_PORT" "$T_DIR"
    if [[ -z "$STATE_FILE" ]] || ! load_state "$STATE_FILE"; then
        log "no broker started by this script found${STATE_FILE:+ ($STATE_FILE)}"
        return 0
    fi
    PORT="$S_PORT" DIR="$S_DIR" TEMP_DIR="$S_TEMP"
    if pid_is_ours "$S_PID" "$DIR"; then
        log "stopping Kafka (pid $S_PID, $HOST:$PORT)"
        kill -TERM "$S_PID" 2>/dev/null || true
        local deadline=$(( SECONDS + KAFKA_STOP_TIMEOUT ))
        while kill -0 "$S_PID" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
        if kill -0 "$S_PID" 2>/dev/null; then
            log "still alive after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$S_PID" 2>/dev/null || true
            while kill -0 "$S_PID" 2>/dev/null; do sleep 0.1; done
        fi
        log "stopped"
    else
        log "broker on $HOST:$PORT (dir $DIR) is not running; cleaning up its state"
    fi
    cleanup_state
}

cmd_status() {
    parse_target "$@"
    resolve_state "$T_PORT" "$T_DIR"
    if [[ -n "$STATE_FILE" ]] && load_state "$STATE_FILE" && pid_is_ours "$S_PID" "$S_DIR"; then
        echo "running: Kafka ${S_VERSION:-?} pid $S_PID, dir $S_DIR"
        echo "$HOST:$S_PORT"
        return 0
    fi
    if [[ -n "$S_PORT" ]]; then
        echo "not running (last known: $HOST:$S_PORT, dir $S_DIR)"
    else
        echo "not running"
    fi
    return 1
}

main() {
    local cmd="${1:-}"
    (( $# )) && shift
    case "$cmd" in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        fetch) fetch_jars; log "jars for Kafka $KAFKA_VERSION in $LIB" ;;
        -h|--help|help) usage ;;
        "") usage >&2; exit 2 ;;
        *) log "unknown command '$cmd'"; usage >&2; exit 2 ;;
    esac
}

main "$@"
