#!/usr/bin/env bash
# Compiles TribesPeer.java against the Debian Tomcat 10 Tribes jars into
# <repo>/target/interop/tribes-peer/tribes-peer.jar. Works from any cwd; idempotent
# (skips when the jar is newer than the source); safe to run concurrently (atomic rename).
# Override the jar locations with TRIBES_JAR / JULI_JAR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="$here/src/TribesPeer.java"
out="$root/target/interop/tribes-peer"
jar_out="$out/tribes-peer.jar"
tribes_jar="${TRIBES_JAR:-/usr/share/java/tomcat10-tribes.jar}"
juli_jar="${JULI_JAR:-/usr/share/java/tomcat10-juli.jar}"

die() { echo "tribes-peer/build.sh: error: $*" >&2; exit 1; }

for j in "$tribes_jar" "$juli_jar"; do
    [ -f "$j" ] || die "missing $j (install the Debian package libtomcat10-java, or set TRIBES_JAR/JULI_JAR)"
done
command -v javac >/dev/null 2>&1 || die "javac not found (install a JDK >= 17, e.g. openjdk-17-jdk-headless)"
command -v jar >/dev/null 2>&1 || die "jar tool not found (install a JDK >= 17)"

if [ -f "$jar_out" ] && [ "$jar_out" -nt "$src" ] && [ "$jar_out" -nt "$here/build.sh" ] \
    && [ "$jar_out" -nt "$(readlink -f "$tribes_jar")" ]; then
    exit 0
fi

mkdir -p "$out"
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# sun.misc.Signal (jdk.unsupported) is used for a clean exit 0 on SIGTERM; javac warns about it,
# so its output is shown only when compilation fails.
if ! javac -encoding UTF-8 -cp "$tribes_jar:$juli_jar" -d "$tmp/classes" "$src" >"$tmp/javac.log" 2>&1; then
    cat "$tmp/javac.log" >&2
    die "javac failed"
fi
jar cf "$tmp/tribes-peer.jar" -C "$tmp/classes" .
mv -f "$tmp/tribes-peer.jar" "$jar_out"
echo "tribes-peer/build.sh: built $jar_out" >&2
