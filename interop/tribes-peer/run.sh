#!/usr/bin/env bash
# Runs the Java Tribes peer (building it first if needed); all arguments are passed through.
# stdout carries only JSON lines; Tribes' logging goes to stderr.
# Extra JVM options: TRIBES_PEER_JAVA_OPTS (word-split).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tribes_jar="${TRIBES_JAR:-/usr/share/java/tomcat10-tribes.jar}"
juli_jar="${JULI_JAR:-/usr/share/java/tomcat10-juli.jar}"
jar_out="$root/target/interop/tribes-peer/tribes-peer.jar"

"$here/build.sh" >&2

# shellcheck disable=SC2086
exec java -Djava.net.preferIPv4Stack=true ${TRIBES_PEER_JAVA_OPTS:-} \
    -cp "$jar_out:$tribes_jar:$juli_jar" TribesPeer "$@"
