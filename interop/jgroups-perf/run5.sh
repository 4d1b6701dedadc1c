#!/usr/bin/env bash
# Runs one JGroups 5.6 benchmark member (building it first if needed); all arguments are
# passed through. The jar: JGROUPS5_JAR (default <repo>/../shared/jgroups5/jgroups-5.6.jar);
# exits with status 3 and a message when it is missing. The stack shipped inside the jar:
# udp.xml (default) or tcp.xml (--stack tcp.xml), bound to 127.0.0.1; UDP on multicast
# group JGROUPS_MCAST_ADDR (default 228.46.2.12) and the port of --mcast-port; TCP on
# ports 7800 and up, found by TCPPING (JGROUPS_TCP_PORT_RANGE, default 8).
# Heap: JGROUPS_PERF_HEAP (default 1g, as -Xms and -Xmx). Extra JVM options:
# JGROUPS_PERF_JAVA_OPTS (word-split).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
jgroups5_jar="${JGROUPS5_JAR:-$root/../shared/jgroups5/jgroups-5.6.jar}"
jar_out="$root/target/interop/jgroups-perf/jgroups5-perf.jar"

if [ ! -f "$jgroups5_jar" ]; then
    echo "jgroups-perf/run5.sh: no JGroups 5.6 jar at $jgroups5_jar (set JGROUPS5_JAR)" >&2
    exit 3
fi
JGROUPS5_JAR="$jgroups5_jar" "$here/build.sh" >&2

port=45588
prev=""
for a in "$@"; do
    [ "$prev" = "--mcast-port" ] && port="$a"
    prev="$a"
done
heap="${JGROUPS_PERF_HEAP:-1g}"

# shellcheck disable=SC2086
exec java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC \
    -Djava.net.preferIPv4Stack=true -Djgroups.bind_addr=127.0.0.1 \
    -Djgroups.udp.mcast_addr="${JGROUPS_MCAST_ADDR:-228.46.2.12}" -Djgroups.udp.mcast_port="$port" \
    -Djgroups.tcpping.initial_hosts="127.0.0.1[7800]" \
    -Djgroups.tcp.port_range="${JGROUPS_TCP_PORT_RANGE:-8}" \
    ${JGROUPS_PERF_JAVA_OPTS:-} \
    -cp "$jar_out:$jgroups5_jar" JGroups5PerfMember "$@"
