#!/usr/bin/env bash
# Runs one JGroups 2.12 benchmark member (building it first if needed); all arguments are
# passed through. JGroups' own udp.xml (inside the jar) is used, bound to 127.0.0.1, on
# multicast group JGROUPS_MCAST_ADDR (default 228.46.2.11) and the port of --mcast-port.
# stdout carries the JSON lines (and JGroups' "GMS: address" line); logging goes to stderr.
# Heap: JGROUPS_PERF_HEAP (default 1g, as -Xms and -Xmx). Extra JVM options:
# JGROUPS_PERF_JAVA_OPTS (word-split).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
jgroups_jar="${JGROUPS_JAR:-/usr/share/java/jgroups.jar}"
jar_out="$root/target/interop/jgroups-perf/jgroups-perf.jar"

"$here/build.sh" >&2

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
    -Djgroups.udp.mcast_addr="${JGROUPS_MCAST_ADDR:-228.46.2.11}" -Djgroups.udp.mcast_port="$port" \
    ${JGROUPS_PERF_JAVA_OPTS:-} \
    -cp "$jar_out:$jgroups_jar" JGroupsPerfMember "$@"
