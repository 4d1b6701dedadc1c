/*
 * TribesPeer: a small peer around the real Apache Tomcat Tribes (default GroupChannel:
 * McastService + NioReceiver + PooledParallelSender), used to test cohort against Tribes.
 *
 * Output: one JSON object per line on stdout (same contract as `cohort node --json`).
 * Tribes' own logging (java.util.logging via JULI) goes to stderr.
 *
 * Build/run: interop/tribes-peer/build.sh, interop/tribes-peer/run.sh (see README.md).
 */

import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.Serializable;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;

import org.apache.catalina.tribes.ByteMessage;
import org.apache.catalina.tribes.Channel;
import org.apache.catalina.tribes.ChannelException;
import org.apache.catalina.tribes.ChannelListener;
import org.apache.catalina.tribes.ChannelMessage;
import org.apache.catalina.tribes.Member;
import org.apache.catalina.tribes.MembershipListener;
import org.apache.catalina.tribes.group.GroupChannel;
import org.apache.catalina.tribes.membership.McastService;
import org.apache.catalina.tribes.transport.ReceiverBase;

public final class TribesPeer {

    // ------------------------------------------------------------------ options

    static final class Opts {
        String domain = "";
        String bind = "127.0.0.1";
        /** McastService mcastBindAddress; null = same as --bind; "none" = leave unset. */
        String mcastBind = null;
        int port = 4000;
        String mcastGroup = "228.0.0.4";
        int mcastPort = 45564;
        String payload = null;
        boolean syncAck = false;
        String failOn = null;
        boolean json = false;
        boolean sink = false;
        boolean noStdin = false;
        boolean quiet = false;
        // bench
        int benchTo = 0;
        int benchSize = 1024;
        int benchThreads = 1;
        int benchCount = 10000;
        boolean benchSyncAck = false;
        int benchWaitSecs = 60;
        boolean benchServe = false;
    }

    static void usage(PrintStream out) {
        out.println("usage: TribesPeer [--json] [--domain D] [--bind ADDR] [--port P]\n"
                + "                  [--mcast-group G] [--mcast-port P] [--mcast-bind ADDR|none] [--payload STR]\n"
                + "                  [--sync-ack] [--fail-on TEXT] [--sink] [--no-stdin] [--quiet]\n"
                + "                  [--bench-to N [--bench-size BYTES] [--bench-threads T]\n"
                + "                   [--bench-count C] [--bench-sync-ack] [--bench-wait SECS]]\n"
                + "                  [--bench-serve]   (benches read from stdin: \"bench N SIZE THREADS COUNT\")");
    }

    static Opts parse(String[] args) {
        Opts o = new Opts();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            switch (a) {
                case "--domain": o.domain = need(args, ++i, a); break;
                case "--bind": o.bind = need(args, ++i, a); break;
                case "--port": o.port = Integer.parseInt(need(args, ++i, a)); break;
                case "--mcast-bind": o.mcastBind = need(args, ++i, a); break;
                case "--mcast-group": o.mcastGroup = need(args, ++i, a); break;
                case "--mcast-port": o.mcastPort = Integer.parseInt(need(args, ++i, a)); break;
                case "--payload": o.payload = need(args, ++i, a); break;
                case "--sync-ack": o.syncAck = true; break;
                case "--fail-on": o.failOn = need(args, ++i, a); break;
                case "--json": o.json = true; break;
                case "--sink": o.sink = true; break;
                case "--no-stdin": o.noStdin = true; break;
                case "--quiet": o.quiet = true; break;
                case "--bench-to": o.benchTo = Integer.parseInt(need(args, ++i, a)); break;
                case "--bench-size": o.benchSize = Integer.parseInt(need(args, ++i, a)); break;
                case "--bench-threads": o.benchThreads = Integer.parseInt(need(args, ++i, a)); break;
                case "--bench-count": o.benchCount = Integer.parseInt(need(args, ++i, a)); break;
                case "--bench-sync-ack": o.benchSyncAck = true; break;
                case "--bench-wait": o.benchWaitSecs = Integer.parseInt(need(args, ++i, a)); break;
                case "--bench-serve": o.benchServe = true; break;
                case "-h":
                case "--help":
                    usage(System.err);
                    System.exit(0);
                    break;
                default:
                    System.err.println("TribesPeer: unknown argument: " + a);
                    usage(System.err);
                    System.exit(2);
            }
        }
        if (o.benchThreads < 1 || o.benchCount < 1 || o.benchSize < 0) {
            System.err.println("TribesPeer: --bench-threads/--bench-count must be >= 1, --bench-size >= 0");
            System.exit(2);
        }
        return o;
    }

    static String need(String[] args, int i, String flag) {
        if (i >= args.length) {
            System.err.println("TribesPeer: " + flag + " needs a value");
            usage(System.err);
            System.exit(2);
        }
        return args[i];
    }

    // ------------------------------------------------------------------ JSON output

    /** stdout, opened on the raw file descriptor so nothing else can write JSON lines into it. */
    static PrintStream OUT;
    static final Object OUT_LOCK = new Object();
    static boolean startedPrinted = false;
    static final List<String> pending = new ArrayList<>();

    /** Prints one JSON line (flushed). Lines produced before "started" are held back until then. */
    static void emit(String line) {
        synchronized (OUT_LOCK) {
            if (!startedPrinted) {
                pending.add(line);
                return;
            }
            OUT.print(line);
            OUT.print('\n');
            OUT.flush();
        }
    }

    static void emitStarted(String line) {
        synchronized (OUT_LOCK) {
            OUT.print(line);
            OUT.print('\n');
            for (String p : pending) {
                OUT.print(p);
                OUT.print('\n');
            }
            pending.clear();
            startedPrinted = true;
            OUT.flush();
        }
    }

    /** Always printed immediately (used for "stopped" and errors, even before "started"). */
    static void emitNow(String line) {
        synchronized (OUT_LOCK) {
            for (String p : pending) {
                OUT.print(p);
                OUT.print('\n');
            }
            pending.clear();
            OUT.print(line);
            OUT.print('\n');
            OUT.flush();
        }
    }

    static String q(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2);
        b.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                case '\b': b.append("\\b"); break;
                case '\f': b.append("\\f"); break;
                default:
                    if (c < 0x20 || c == 0x7f || c == '\u2028' || c == '\u2029') {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        b.append('"');
        return b.toString();
    }

    static final char[] HEX = "0123456789abcdef".toCharArray();

    static String hex(byte[] b) {
        if (b == null) return "";
        char[] c = new char[b.length * 2];
        for (int i = 0; i < b.length; i++) {
            c[2 * i] = HEX[(b[i] >> 4) & 0xf];
            c[2 * i + 1] = HEX[b[i] & 0xf];
        }
        return new String(c);
    }

    static String host(byte[] h) {
        if (h == null) return "";
        if (h.length == 4) {
            return (h[0] & 0xff) + "." + (h[1] & 0xff) + "." + (h[2] & 0xff) + "." + (h[3] & 0xff);
        }
        try {
            return InetAddress.getByAddress(h).getHostAddress();
        } catch (Exception e) {
            return hex(h);
        }
    }

    static String utf8(byte[] b) {
        return b == null ? "" : new String(b, StandardCharsets.UTF_8);
    }

    /** "id","host","port" members of a JSON object (without braces). */
    static String memberFields(Member m) {
        return "\"id\":" + q(hex(m.getUniqueId())) + ",\"host\":" + q(host(m.getHost())) + ",\"port\":" + m.getPort();
    }

    static String fmt(double d, int decimals) {
        if (Double.isNaN(d) || Double.isInfinite(d)) return "0";
        return String.format(Locale.ROOT, "%." + decimals + "f", d);
    }

    // ------------------------------------------------------------------ channel

    /** The default GroupChannel; only records the options of the message being delivered. */
    static final class PeerChannel extends GroupChannel {
        static final ThreadLocal<Integer> OPTIONS = new ThreadLocal<>();

        @Override
        public void messageReceived(ChannelMessage msg) {
            OPTIONS.set(Integer.valueOf(msg.getOptions()));
            try {
                super.messageReceived(msg);
            } finally {
                OPTIONS.remove();
            }
        }
    }

    static Opts opts;
    static PeerChannel channel;
    static final AtomicBoolean stopping = new AtomicBoolean(false);
    static final Object STOP_LOCK = new Object();
    static volatile boolean stopDone = false;
    static final AtomicLong sinkMessages = new AtomicLong();
    static final AtomicLong sinkBytes = new AtomicLong();

    public static void main(String[] args) throws Exception {
        OUT = new PrintStream(new FileOutputStream(FileDescriptor.out), false, "UTF-8");
        // Nothing but our JSON lines may reach stdout.
        System.setOut(System.err);
        opts = parse(args);
        if (opts.quiet) {
            Logger.getLogger("").setLevel(Level.WARNING);
            Logger.getLogger("org.apache.catalina.tribes").setLevel(Level.WARNING);
        }

        channel = new PeerChannel();
        channel.setJmxEnabled(false);

        McastService mcast = (McastService) channel.getMembershipService();
        mcast.setAddress(opts.mcastGroup);
        mcast.setPort(opts.mcastPort);
        // McastService.setBind == setMcastBindAddress: sets the "mcastBindAddress" property.
        String mcastBind = opts.mcastBind == null ? opts.bind : opts.mcastBind;
        if (!mcastBind.equals("none")) {
            mcast.setBind(mcastBind);
        }
        if (!opts.domain.isEmpty()) {
            mcast.setDomain(opts.domain.getBytes(StandardCharsets.UTF_8));
        }
        if (opts.payload != null) {
            mcast.setPayload(opts.payload.getBytes(StandardCharsets.UTF_8));
        }

        ReceiverBase rx = (ReceiverBase) channel.getChannelReceiver();
        rx.setAddress(opts.bind);
        rx.setPort(opts.port);

        channel.addMembershipListener(new MembershipListener() {
            @Override
            public void memberAdded(Member m) {
                if (isLocal(m)) return;
                emit("{\"event\":\"member_added\"," + memberFields(m)
                        + ",\"domain\":" + q(utf8(m.getDomain()))
                        + ",\"payload\":" + q(utf8(m.getPayload())) + "}");
            }

            @Override
            public void memberDisappeared(Member m) {
                if (isLocal(m)) {
                    // Tribes quirk: McastServiceImpl handles a shutdown datagram without checking
                    // whether it is our own (looped back) one, so the local member "disappears".
                    System.err.println("TribesPeer: ignoring memberDisappeared for the local member");
                    return;
                }
                // Tribes passes the member record of the shutdown datagram (command = BABY-ALEX)
                // for a graceful stop, and the last heartbeat's record on expiry.
                String reason = Arrays.equals(m.getCommand(), Member.SHUTDOWN_PAYLOAD) ? "shutdown" : "timeout";
                emit("{\"event\":\"member_disappeared\"," + memberFields(m) + ",\"reason\":" + q(reason) + "}");
            }
        });

        channel.addChannelListener(new ChannelListener() {
            @Override
            public boolean accept(Serializable msg, Member sender) {
                return true;
            }

            @Override
            public void messageReceived(Serializable msg, Member sender) {
                byte[] data;
                if (msg instanceof ByteMessage) {
                    data = ((ByteMessage) msg).getMessage();
                    if (data == null) data = new byte[0];
                } else {
                    data = String.valueOf(msg).getBytes(StandardCharsets.UTF_8);
                }
                if (opts.sink) {
                    sinkMessages.incrementAndGet();
                    sinkBytes.addAndGet(data.length);
                } else {
                    Integer o = PeerChannel.OPTIONS.get();
                    String text = utf8(data);
                    emit("{\"event\":\"message\",\"from\":" + q(hex(sender.getUniqueId()))
                            + ",\"host\":" + q(host(sender.getHost())) + ",\"port\":" + sender.getPort()
                            + ",\"options\":" + (o == null ? -1 : o.intValue())
                            + ",\"data\":" + q(text) + "}");
                    if (opts.failOn != null && opts.failOn.equals(text)) {
                        throw new IllegalStateException("TribesPeer --fail-on matched: " + text);
                    }
                }
            }
        });

        installSignalHandlers();
        Runtime.getRuntime().addShutdownHook(new Thread(TribesPeer::stopChannel, "TribesPeer-shutdown"));

        long t0 = System.nanoTime();
        try {
            channel.start(Channel.DEFAULT);
        } catch (Exception e) {
            emitNow("{\"event\":\"error\",\"message\":" + q("channel start failed: " + e) + "}");
            e.printStackTrace();
            Runtime.getRuntime().halt(1);
        }
        Member local = channel.getLocalMember(false);
        System.err.println(String.format(Locale.ROOT, "TribesPeer: channel started in %.0f ms", (System.nanoTime() - t0) / 1e6));
        emitStarted("{\"event\":\"started\"," + memberFields(local) + "}");

        if (opts.benchServe) {
            // One warm JVM for many benches: each stdin line "bench N SIZE THREADS COUNT"
            // runs one and prints its "bench" line; EOF stops.
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            String line;
            int rc = 0;
            while ((line = in.readLine()) != null && !stopping.get()) {
                String[] w = line.trim().split("\\s+");
                if (w.length != 5 || !w[0].equals("bench")) {
                    emitNow("{\"event\":\"error\",\"message\":" + q("bench-serve: expected \"bench N SIZE THREADS COUNT\", got " + line) + "}");
                    continue;
                }
                rc = bench(Integer.parseInt(w[1]), Integer.parseInt(w[2]), Integer.parseInt(w[3]), Integer.parseInt(w[4]));
                if (rc != 0) break;
            }
            stopChannel();
            System.exit(rc);
        }

        if (opts.benchTo > 0) {
            int rc = bench(opts.benchTo, opts.benchSize, opts.benchThreads, opts.benchCount);
            stopChannel();
            System.exit(rc);
        }

        if (opts.noStdin) {
            // Run until SIGTERM/SIGINT.
            while (true) {
                Thread.sleep(3_600_000L);
            }
        }

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (stopping.get()) break;
            sendLine(line);
        }
        stopChannel();
        System.exit(0);
    }

    static boolean isLocal(Member m) {
        Member local = channel == null ? null : channel.getLocalMember(false);
        return local != null && Arrays.equals(local.getUniqueId(), m.getUniqueId());
    }

    static void sendLine(String line) {
        int options = Channel.SEND_OPTIONS_USE_ACK | Channel.SEND_OPTIONS_BYTE_MESSAGE;
        if (opts.syncAck) options |= Channel.SEND_OPTIONS_SYNCHRONIZED_ACK;
        Member[] members = channel.getMembers();
        StringBuilder acked = new StringBuilder();
        StringBuilder failed = new StringBuilder();
        Set<String> faultyKeys = new HashSet<>();
        if (members.length > 0) {
            try {
                channel.send(members, new ByteMessage(line.getBytes(StandardCharsets.UTF_8)), options);
            } catch (ChannelException e) {
                ChannelException.FaultyMember[] faulty = e.getFaultyMembers();
                if (faulty.length == 0) {
                    // No per-member detail: count every destination as failed.
                    for (Member m : members) {
                        faultyKeys.add(key(m));
                        appendFailed(failed, m, String.valueOf(e.getMessage()));
                    }
                }
                for (ChannelException.FaultyMember f : faulty) {
                    Member m = f.getMember();
                    faultyKeys.add(key(m));
                    Exception cause = f.getCause();
                    String reason = cause == null ? String.valueOf(e.getMessage())
                            : cause.getClass().getSimpleName() + ": " + cause.getMessage();
                    appendFailed(failed, m, reason);
                }
            } catch (RuntimeException e) {
                for (Member m : members) {
                    faultyKeys.add(key(m));
                    appendFailed(failed, m, e.toString());
                }
            }
        }
        for (Member m : members) {
            if (faultyKeys.contains(key(m))) continue;
            if (acked.length() > 0) acked.append(',');
            acked.append('{').append(memberFields(m)).append('}');
        }
        emit("{\"event\":\"send_result\",\"data\":" + q(line) + ",\"acked\":[" + acked + "],\"failed\":[" + failed + "]}");
    }

    static String key(Member m) {
        return hex(m.getUniqueId()) + "/" + host(m.getHost()) + ":" + m.getPort();
    }

    static void appendFailed(StringBuilder failed, Member m, String reason) {
        if (failed.length() > 0) failed.append(',');
        failed.append('{').append(memberFields(m)).append(",\"reason\":").append(q(reason)).append('}');
    }

    // ------------------------------------------------------------------ stop

    /** Idempotent graceful stop: channel.stop(DEFAULT) sends the shutdown heartbeat. */
    static void stopChannel() {
        synchronized (STOP_LOCK) {
            if (stopDone) return;
            stopping.set(true);
            try {
                if (channel != null) channel.stop(Channel.DEFAULT);
            } catch (Throwable t) {
                System.err.println("TribesPeer: channel.stop failed: " + t);
            }
            if (opts.sink) {
                emitNow("{\"event\":\"sink_stats\",\"messages\":" + sinkMessages.get() + ",\"bytes\":" + sinkBytes.get() + "}");
            }
            emitNow("{\"event\":\"stopped\"}");
            stopDone = true;
        }
    }

    /** SIGTERM/SIGINT: stop gracefully and exit 0 (the JVM default would exit 143/130). */
    static void installSignalHandlers() {
        for (String name : new String[] {"TERM", "INT"}) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(name), sig -> {
                    Thread t = new Thread(() -> {
                        stopChannel();
                        System.exit(0);
                    }, "TribesPeer-signal");
                    t.start();
                });
            } catch (Throwable t) {
                // Fall back to the shutdown hook (exit status 128+signal).
                System.err.println("TribesPeer: cannot install SIG" + name + " handler: " + t);
            }
        }
    }

    // ------------------------------------------------------------------ bench

    /**
     * Sends COUNT messages of SIZE bytes from each of THREADS threads, with ACK, to BENCH_TO
     * members (the first BENCH_TO by port when more are visible), and prints a "bench" line.
     */
    static int bench(int benchTo, int benchSize, int benchThreads, int benchCount) throws Exception {
        final long deadline = System.nanoTime() + opts.benchWaitSecs * 1_000_000_000L;
        Member[] members = channel.getMembers();
        while (members.length < benchTo) {
            if (System.nanoTime() > deadline) {
                emitNow("{\"event\":\"error\",\"message\":" + q("bench: only " + members.length + " of "
                        + benchTo + " members visible after " + opts.benchWaitSecs + " s") + "}");
                return 2;
            }
            Thread.sleep(50);
            members = channel.getMembers();
        }
        Arrays.sort(members, (a, b) -> Integer.compare(a.getPort(), b.getPort()));
        final Member[] dest = Arrays.copyOf(members, benchTo);
        final int threads = Math.max(1, benchThreads);
        final int count = Math.max(1, benchCount);
        final int warm = Math.min(count / 10, 2000);
        final int counted = count - warm;
        final int options = Channel.SEND_OPTIONS_USE_ACK | Channel.SEND_OPTIONS_BYTE_MESSAGE
                | (opts.benchSyncAck ? Channel.SEND_OPTIONS_SYNCHRONIZED_ACK : 0);
        final byte[] payload = new byte[Math.max(0, benchSize)];
        Arrays.fill(payload, (byte) 'x');
        final long[][] lat = new long[threads][counted];
        final AtomicLong errors = new AtomicLong();
        final long[] startNs = new long[1];
        final CyclicBarrier barrier = new CyclicBarrier(threads, () -> startNs[0] = System.nanoTime());
        final Throwable[] firstError = new Throwable[1];

        Thread[] ts = new Thread[threads];
        for (int t = 0; t < threads; t++) {
            final int ti = t;
            ts[t] = new Thread(() -> {
                try {
                    for (int i = 0; i < warm; i++) {
                        sendBench(dest, payload, options, errors, firstError);
                    }
                    barrier.await();
                    long[] mine = lat[ti];
                    for (int i = 0; i < counted; i++) {
                        long s = System.nanoTime();
                        sendBench(dest, payload, options, errors, firstError);
                        mine[i] = System.nanoTime() - s;
                    }
                } catch (Exception e) {
                    synchronized (firstError) {
                        if (firstError[0] == null) firstError[0] = e;
                    }
                }
            }, "bench-" + t);
            ts[t].start();
        }
        for (Thread t : ts) t.join();
        long endNs = System.nanoTime();
        if (firstError[0] != null) {
            System.err.println("TribesPeer: bench error (first of " + errors.get() + "): " + firstError[0]);
        }
        double secs = (endNs - startNs[0]) / 1e9;
        long total = (long) counted * threads;
        long[] all = new long[(int) total];
        int k = 0;
        for (long[] l : lat) {
            System.arraycopy(l, 0, all, k, l.length);
            k += l.length;
        }
        Arrays.sort(all);
        long p50 = percentileUs(all, 0.50);
        long p99 = percentileUs(all, 0.99);
        double mps = secs > 0 ? total / secs : 0;
        double mbps = secs > 0 ? (double) total * payload.length / secs / 1e6 : 0;
        emitNow("{\"event\":\"bench\",\"members\":" + dest.length + ",\"size\":" + payload.length
                + ",\"threads\":" + threads + ",\"count\":" + total
                + ",\"secs\":" + fmt(secs, 6) + ",\"msgs_per_sec\":" + fmt(mps, 1)
                + ",\"mb_per_sec\":" + fmt(mbps, 3) + ",\"p50_us\":" + p50 + ",\"p99_us\":" + p99
                + ",\"errors\":" + errors.get() + "}");
        return 0;
    }

    static void sendBench(Member[] dest, byte[] payload, int options, AtomicLong errors, Throwable[] firstError) {
        try {
            channel.send(dest, new ByteMessage(payload), options);
        } catch (ChannelException e) {
            errors.incrementAndGet();
            synchronized (firstError) {
                if (firstError[0] == null) firstError[0] = e;
            }
        }
    }

    /** Nearest-rank percentile of sorted nanosecond latencies, in whole microseconds. */
    static long percentileUs(long[] sorted, double p) {
        if (sorted.length == 0) return 0;
        int idx = (int) Math.ceil(p * sorted.length) - 1;
        if (idx < 0) idx = 0;
        if (idx >= sorted.length) idx = sorted.length - 1;
        return Math.round(sorted[idx] / 1000.0);
    }
}
