#!/usr/bin/env bash
# Compiles JGroupsPerfMember.java against the Debian JGroups 2.12 jar into
# <repo>/target/interop/jgroups-perf/jgroups-perf.jar. Works from any cwd; idempotent
# (skips when the jar is newer than the source); safe to run concurrently (atomic rename).
# Override the jar location with JGROUPS_JAR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="$here/src/JGroupsPerfMember.java"
out="$root/target/interop/jgroups-perf"
jar_out="$out/jgroups-perf.jar"
jgroups_jar="${JGROUPS_JAR:-/usr/share/java/jgroups.jar}"

die() { echo "jgroups-perf/build.sh: error: $*" >&2; exit 1; }

[ -f "$jgroups_jar" ] || die "missing $jgroups_jar (install the Debian package libjgroups-java, or set JGROUPS_JAR)"
command -v javac >/dev/null 2>&1 || die "javac not found (install a JDK >= 17)"
command -v jar >/dev/null 2>&1 || die "jar tool not found (install a JDK >= 17)"

if [ -f "$jar_out" ] && [ "$jar_out" -nt "$src" ] && [ "$jar_out" -nt "$here/build.sh" ]; then
    exit 0
fi

mkdir -p "$out"
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if ! javac -encoding UTF-8 -cp "$jgroups_jar" -d "$tmp/classes" "$src" >"$tmp/javac.log" 2>&1; then
    cat "$tmp/javac.log" >&2
    die "javac failed"
fi
jar cf "$tmp/jgroups-perf.jar" -C "$tmp/classes" .
mv -f "$tmp/jgroups-perf.jar" "$jar_out"
echo "jgroups-perf/build.sh: built $jar_out" >&2
