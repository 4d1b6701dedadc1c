// One member of the `cohort perf-multicast` benchmark, on JGroups 5.6 (built from
// source, see interop/jgroups-perf/README.md) with the
// udp.xml / tcp.xml (--stack) shipped inside that jar. It speaks the same stdin/stdout protocol as
// `cohort multicast`: it joins the group, waits until the view has --members members,
// prints {"event":"ready"}; every "go" line on stdin starts a round in which each of
// --senders multicasts --count messages (16-byte header: sender index, sequence number
// running on over the rounds, send time in µs since the epoch, read once per burst of
// about 256 KiB as cohort's member does). It checks that every sender's messages arrive in
// order exactly once, prints {"event":"done","round":R,...} when it delivered all of a
// round, and {"event":"exit","extra":N} once stdin closes.
//
// Per-message work is kept to what cohort's member does: no lock per delivery (per-sender
// state, touched only by the thread delivering that sender's messages), and the clock read
// once per batch of deliveries (JGroups 5 hands messages up in batches), as cohort's
// member does.
//
// Bind address and multicast group/port come from system properties set by the
// launcher (jgroups.bind_addr, jgroups.udp.mcast_addr, jgroups.udp.mcast_port).

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.time.Instant;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;

import org.jgroups.BytesMessage;
import org.jgroups.JChannel;
import org.jgroups.Message;
import org.jgroups.Receiver;
import org.jgroups.View;
import org.jgroups.util.MessageBatch;

public final class JGroups5PerfMember implements Receiver {
    /** Latency samples: at most one per this many deliveries fit the buffer. */
    private static final int SAMPLE = 1;

    private final int members;
    private final int size;
    private final long count;
    private final int senderCount;
    // Per sender, touched only by the thread that delivers that sender's messages
    // (NAKACK hands one sender's messages up in order, one thread at a time): no lock
    // per delivery.
    private final long[] next;
    private final long[] deliveredFrom;
    private final long[] errorsFrom;
    private final long[][] latencies;
    private final int[] latencyCount;
    private final boolean[] isSenderIndex;
    private volatile String firstError = "";
    private volatile int viewSize;
    // Rounds: started by "go" (main thread), completed when every sender's messages of
    // the round were delivered.
    private volatile int started;
    private final AtomicInteger sendersLeft = new AtomicInteger();
    private final AtomicInteger completed = new AtomicInteger();
    private volatile long roundStartNanos;
    private volatile long roundCpuStart;
    private volatile long reportedRound = -1;

    static long unixMicros() {
        Instant i = Instant.now();
        return i.getEpochSecond() * 1_000_000L + i.getNano() / 1000;
    }

    static long cpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    private void error(int from, String what) {
        if (errorsFrom[from]++ == 0 && firstError.isEmpty()) {
            firstError = what;
        }
    }

    /** One delivery from sender `from`; `now` is 0 unless the clock was read for it. */
    private void deliver(byte[] buf, int off, int len, long now) {
        ByteBuffer b = ByteBuffer.wrap(buf, off, len);
        int from = b.getInt();
        if (from < 0 || from >= members || !isSenderIndex[from]) {
            error(0, "message from unknown sender " + from);
            return;
        }
        long seq = b.getInt() & 0xFFFFFFFFL;
        long sent = b.getLong();
        if (len != size) {
            error(from, "bad message of " + len + " bytes from " + from);
        } else if (seq != next[from]) {
            error(from, "from " + from + ": got #" + seq + ", expected #" + next[from]);
            next[from] = seq + 1;
        } else {
            next[from]++;
        }
        long d = deliveredFrom[from]++;
        if (now != 0) {
            long[] l = latencies[from];
            int n = latencyCount[from];
            if (n < l.length) {
                l[n] = Math.max(1, now - sent);
                latencyCount[from] = n + 1;
            }
        }
        // This sender's messages of the round are all here.
        if ((d + 1) % count == 0 && sendersLeft.decrementAndGet() == 0) {
            roundComplete();
        }
    }

    private synchronized void roundComplete() {
        int round = completed.get();
        // Every sender's count for the next round.
        sendersLeft.set(senderCount);
        completed.incrementAndGet();
        if (round < started) {
            report(round);
        }
    }

    private synchronized void report(int round) {
        if (reportedRound >= round) {
            return;
        }
        reportedRound = round;
        double elapsed = (System.nanoTime() - roundStartNanos) / 1e9;
        double cpu = (cpuNanos() - roundCpuStart) / 1e9;
        int total = 0;
        for (int n : latencyCount) total += n;
        long[] sorted = new long[total];
        int at = 0;
        long errors = 0;
        long delivered = 0;
        for (int s = 0; s < members; s++) {
            System.arraycopy(latencies[s], 0, sorted, at, latencyCount[s]);
            at += latencyCount[s];
            latencyCount[s] = 0;
            errors += errorsFrom[s];
            errorsFrom[s] = 0;
            delivered += deliveredFrom[s];
        }
        Arrays.sort(sorted);
        long p50 = sorted.length == 0 ? 0 : sorted[(int) (sorted.length * 0.5)];
        long p99 = sorted.length == 0 ? 0 : sorted[Math.min(sorted.length - 1, (int) (sorted.length * 0.99))];
        System.out.println("{\"event\":\"done\",\"round\":" + round + ",\"delivered\":"
                + (delivered - (long) round * count * senderCount) + ",\"elapsed_s\":" + elapsed
                + ",\"cpu_s\":" + cpu + ",\"errors\":" + errors + ",\"first_errors\":["
                + (errors == 0 ? "" : "\"" + firstError.replace("\"", "'") + "\"")
                + "],\"latency_p50_us\":" + p50 + ",\"latency_p99_us\":" + p99 + "}");
        System.out.flush();
    }

    private JGroups5PerfMember(int members, int size, long count, int[] senders) {
        this.members = members;
        this.size = size;
        this.count = count;
        this.senderCount = senders.length;
        this.next = new long[members];
        this.deliveredFrom = new long[members];
        this.errorsFrom = new long[members];
        this.latencyCount = new int[members];
        this.latencies = new long[members][];
        this.isSenderIndex = new boolean[members];
        for (int s : senders) {
            isSenderIndex[s] = true;
            // Latency samples of one round; the clock is read for every SAMPLE-th delivery.
            latencies[s] = new long[(int) Math.min(Integer.MAX_VALUE - 8, count / SAMPLE + 1)];
        }
        for (int s = 0; s < members; s++) {
            if (latencies[s] == null) latencies[s] = new long[0];
        }
        this.sendersLeft.set(senders.length);
    }

    @Override
    public void viewAccepted(View view) {
        viewSize = view.getMembers().size();
    }

    @Override
    public void receive(Message msg) {
        deliver(msg.getArray(), msg.getOffset(), msg.getLength(), unixMicros());
    }

    @Override
    public void receive(MessageBatch batch) {
        // One clock reading per batch.
        long now = unixMicros();
        for (Message msg : batch) {
            deliver(msg.getArray(), msg.getOffset(), msg.getLength(), now);
        }
    }

    public static void main(String[] args) throws Exception {
        int index = 0, members = 2, size = 1024;
        long count = 10_000;
        int[] senders = null;
        String stack = "udp.xml";
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--index": index = Integer.parseInt(args[++i]); break;
                case "--members": members = Integer.parseInt(args[++i]); break;
                case "--size": size = Integer.parseInt(args[++i]); break;
                case "--count": count = Long.parseLong(args[++i]); break;
                case "--senders":
                    senders = Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                    break;
                case "--stack": stack = args[++i]; break;
                case "--mcast-port": ++i; break; // applied by the launcher as a system property
                default: throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (senders == null) {
            senders = new int[members];
            for (int i = 0; i < members; i++) senders[i] = i;
        }
        final int me = index;
        boolean sender = Arrays.stream(senders).anyMatch(s -> s == me);
        JGroups5PerfMember m = new JGroups5PerfMember(members, size, count, senders);
        JChannel channel = new JChannel(stack);
        channel.setReceiver(m);
        channel.connect("cohort-perf-multicast");
        long deadline = System.currentTimeMillis() + 60_000;
        while (m.viewSize < members && System.currentTimeMillis() < deadline) {
            Thread.sleep(50);
        }
        if (m.viewSize < members) {
            System.out.println("{\"event\":\"error\",\"error\":\"view has " + m.viewSize + " members\"}");
            System.exit(1);
        }
        System.out.println("{\"event\":\"ready\"}");
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        Thread senderThread = null;
        while ((line = in.readLine()) != null) {
            if (!line.trim().equals("go")) continue;
            if (senderThread != null) senderThread.join();
            final int round = m.started;
            m.roundCpuStart = cpuNanos();
            m.roundStartNanos = System.nanoTime();
            m.started = round + 1;
            // The round may be complete already (a late "go"): report it now.
            if (m.completed.get() > round) m.report(round);
            if (sender) {
                final long n = count;
                final int sz = size;
                // One clock reading per burst of about 256 KiB, as cohort's member.
                final int burst = Math.max(1, (256 << 10) / sz);
                senderThread = new Thread(() -> {
                    try {
                        long first = (long) round * n;
                        long now = 0;
                        for (long seq = first; seq < first + n; seq++) {
                            if ((seq - first) % burst == 0) now = unixMicros();
                            byte[] buf = new byte[sz];
                            ByteBuffer.wrap(buf).putInt(me).putInt((int) seq).putLong(now);
                            channel.send(new BytesMessage(null, buf));
                        }
                    } catch (Exception e) {
                        System.out.println("{\"event\":\"error\",\"error\":\"" + e.toString().replace("\"", "'") + "\"}");
                        System.out.flush();
                    }
                });
                senderThread.start();
            }
        }
        long delivered = 0;
        for (long d : m.deliveredFrom) delivered += d;
        long extra = Math.max(0, delivered - (long) m.started * count * senders.length);
        System.out.println("{\"event\":\"exit\",\"extra\":" + extra + "}");
        System.out.flush();
        System.exit(0);
    }
}
