// One member of the `cohort perf-multicast` benchmark, on JGroups 2.12 (the Debian
// libjgroups-java jar) with the udp.xml shipped inside that jar. It speaks the same
// stdin/stdout protocol as `cohort multicast`: it joins the group, waits until the view
// has --members members, prints {"event":"ready"}, waits for "go" on stdin, multicasts
// --count messages if it is one of --senders (16-byte header: sender index, sequence
// number, send time in µs since the epoch), checks that every sender's messages arrive
// in order exactly once, prints {"event":"done",...} when it delivered all of them,
// keeps running until stdin closes and prints {"event":"exit","extra":N}.
//
// Bind address and multicast group/port come from system properties set by run.sh
// (jgroups.bind_addr, jgroups.udp.mcast_addr, jgroups.udp.mcast_port).

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.time.Instant;
import java.util.Arrays;

import org.jgroups.JChannel;
import org.jgroups.Message;
import org.jgroups.ReceiverAdapter;
import org.jgroups.View;

public final class JGroupsPerfMember extends ReceiverAdapter {
    private final int index;
    private final int members;
    private final int size;
    private final long expectedTotal;
    private final long[] next;
    private final long[] latencies;
    private long delivered;
    private long extra;
    private long errors;
    private String firstError = "";
    private volatile int viewSize;
    private boolean done;
    private long startNanos;
    private long cpuStart;

    private JGroupsPerfMember(int index, int members, int size, long expectedTotal) {
        this.index = index;
        this.members = members;
        this.size = size;
        this.expectedTotal = expectedTotal;
        this.next = new long[members];
        this.latencies = new long[(int) expectedTotal];
    }

    static long unixMicros() {
        Instant i = Instant.now();
        return i.getEpochSecond() * 1_000_000L + i.getNano() / 1000;
    }

    static long cpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    @Override
    public void viewAccepted(View view) {
        viewSize = view.getMembers().size();
    }

    @Override
    public void receive(Message msg) {
        ByteBuffer b = ByteBuffer.wrap(msg.getRawBuffer(), msg.getOffset(), msg.getLength());
        long now = unixMicros();
        synchronized (this) {
            if (done) {
                extra++;
                return;
            }
            int from = b.getInt();
            long seq = b.getInt() & 0xFFFFFFFFL;
            long sent = b.getLong();
            if (msg.getLength() != size || from < 0 || from >= members) {
                error("bad message of " + msg.getLength() + " bytes from " + from);
            } else if (seq != next[from]) {
                error("from " + from + ": got #" + seq + ", expected #" + next[from]);
                next[from] = seq + 1;
            } else {
                next[from]++;
            }
            if (delivered < latencies.length) {
                latencies[(int) delivered] = Math.max(1, now - sent);
            }
            delivered++;
            if (delivered == expectedTotal) {
                done = true;
                report();
            }
        }
    }

    private void error(String what) {
        if (errors++ == 0) {
            firstError = what;
        }
    }

    private void report() {
        double elapsed = (System.nanoTime() - startNanos) / 1e9;
        double cpu = (cpuNanos() - cpuStart) / 1e9;
        long[] sorted = Arrays.copyOf(latencies, (int) Math.min(delivered, latencies.length));
        Arrays.sort(sorted);
        long p50 = sorted.length == 0 ? 0 : sorted[(int) (sorted.length * 0.5)];
        long p99 = sorted.length == 0 ? 0 : sorted[Math.min(sorted.length - 1, (int) (sorted.length * 0.99))];
        System.out.println("{\"event\":\"done\",\"delivered\":" + delivered + ",\"elapsed_s\":" + elapsed
                + ",\"cpu_s\":" + cpu + ",\"errors\":" + errors + ",\"first_error\":\""
                + firstError.replace("\"", "'") + "\",\"latency_p50_us\":" + p50
                + ",\"latency_p99_us\":" + p99 + "}");
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        int index = 0, members = 2, size = 1024;
        long count = 10_000;
        int[] senders = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--index": index = Integer.parseInt(args[++i]); break;
                case "--members": members = Integer.parseInt(args[++i]); break;
                case "--size": size = Integer.parseInt(args[++i]); break;
                case "--count": count = Long.parseLong(args[++i]); break;
                case "--senders":
                    senders = Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                    break;
                case "--mcast-port": ++i; break; // applied by run.sh as a system property
                default: throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (senders == null) {
            senders = new int[members];
            for (int i = 0; i < members; i++) senders[i] = i;
        }
        final int me = index;
        boolean sender = Arrays.stream(senders).anyMatch(s -> s == me);
        JGroupsPerfMember m = new JGroupsPerfMember(index, members, size, count * senders.length);
        JChannel channel = new JChannel("udp.xml");
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
        while ((line = in.readLine()) != null && !line.trim().equals("go")) {
        }
        if (line == null) {
            System.exit(0);
        }
        synchronized (m) {
            m.startNanos = System.nanoTime();
            m.cpuStart = cpuNanos();
        }
        if (sender) {
            final long n = count;
            final int sz = size;
            Thread t = new Thread(() -> {
                try {
                    for (long seq = 0; seq < n; seq++) {
                        ByteBuffer b = ByteBuffer.allocate(sz);
                        b.putInt(me).putInt((int) seq).putLong(unixMicros());
                        channel.send(new Message(null, null, b.array()));
                    }
                } catch (Exception e) {
                    System.out.println("{\"event\":\"error\",\"error\":\"" + e.toString().replace("\"", "'") + "\"}");
                }
            });
            t.start();
        }
        while (in.readLine() != null) {
        }
        long extra;
        synchronized (m) {
            extra = m.extra;
        }
        System.out.println("{\"event\":\"exit\",\"extra\":" + extra + "}");
        System.out.flush();
        System.exit(0);
    }
}
