#!/usr/bin/env bash
# Compiles the JGroups members of `cohort perf-multicast`:
# - src/JGroupsPerfMember.java against the Debian JGroups 2.12 jar into
#   <repo>/target/interop/jgroups-perf/jgroups-perf.jar (required);
# - src5/JGroups5PerfMember.java against a JGroups 5.6 jar into
#   <repo>/target/interop/jgroups-perf/jgroups5-perf.jar, when such a jar is found
#   (JGROUPS5_JAR, default <repo>/../shared/jgroups5/jgroups-5.6.jar); without it this
#   step is skipped with a message, and `cohort perf-multicast` skips JGroups 5.6.
# Works from any cwd; idempotent (skips when a jar is newer than its source); safe to run
# concurrently (atomic rename). Override the 2.12 jar location with JGROUPS_JAR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/interop/jgroups-perf"
jgroups_jar="${JGROUPS_JAR:-/usr/share/java/jgroups.jar}"
jgroups5_jar="${JGROUPS5_JAR:-$root/../shared/jgroups5/jgroups-5.6.jar}"

die() { echo "jgroups-perf/build.sh: error: $*" >&2; exit 1; }

[ -f "$jgroups_jar" ] || die "missing $jgroups_jar (install the Debian package libjgroups-java, or set JGROUPS_JAR)"
command -v javac >/dev/null 2>&1 || die "javac not found (install a JDK >= 17)"
command -v jar >/dev/null 2>&1 || die "jar tool not found (install a JDK >= 17)"

# build SRC CLASSPATH JAR_OUT
build() {
    local src="$1" cp="$2" jar_out="$3"
    if [ -f "$jar_out" ] && [ "$jar_out" -nt "$src" ] && [ "$jar_out" -nt "$here/build.sh" ]; then
        return 0
    fi
    mkdir -p "$out"
    local tmp
    tmp="$(mktemp -d "$out/.build.XXXXXX")"
    if ! javac -encoding UTF-8 -cp "$cp" -d "$tmp/classes" "$src" >"$tmp/javac.log" 2>&1; then
        cat "$tmp/javac.log" >&2
        rm -rf "$tmp"
        die "javac $src failed"
    fi
    jar cf "$tmp/member.jar" -C "$tmp/classes" .
    mv -f "$tmp/member.jar" "$jar_out"
    rm -rf "$tmp"
    echo "jgroups-perf/build.sh: built $jar_out" >&2
}

build "$here/src/JGroupsPerfMember.java" "$jgroups_jar" "$out/jgroups-perf.jar"
if [ -f "$jgroups5_jar" ]; then
    build "$here/src5/JGroups5PerfMember.java" "$jgroups5_jar" "$out/jgroups5-perf.jar"
else
    echo "jgroups-perf/build.sh: no JGroups 5.6 jar at $jgroups5_jar (set JGROUPS5_JAR):" \
        "the JGroups 5.6 member is not built and perf-multicast skips JGroups 5.6" >&2
fi
