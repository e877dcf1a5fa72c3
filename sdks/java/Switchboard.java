// Switchboard.java — a one-file Java SDK for Switchboard jobs (protocol version 1), no
// dependencies beyond the JDK (11+). Copy it next to your program.
//
// It does what protocol/SPEC.md asks of a job: the metrics segment on fd
// $SWITCHBOARD_SEGMENT_FD mapped with FileChannel.map (§7: heartbeat from a daemon thread,
// counters, backlog, task slots under the seqlock, through a VarHandle so every word is one
// aligned atomic 8-byte access), and the frames a job needs (§2–§5: Hello, Welcome, Ready,
// Event, JobResult; Shutdown and stdin EOF stop it).
//
//     Switchboard.Job job = Switchboard.Job.start("crunch", "0.1.0");
//     Switchboard.Task task = job.task("crunching", 10);
//     for (int i = 1; i <= 10 && !job.stopping(); i++) { work(); task.set(i, 10); }
//     task.finish(job.stopping() ? Switchboard.TASK_CANCELLED : Switchboard.TASK_DONE);
//     job.succeed("{\"ok\":true}");   // or job.fail(Switchboard.UNAVAILABLE, "why")
//
// System.out is pointed at System.err on start: stdout carries frames only.

import java.io.ByteArrayOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class Switchboard {
    private Switchboard() {}

    public static final int W_HEARTBEAT = 8, W_STATE = 9, W_EVENTS_PUBLISHED = 15,
            W_BACKLOG = 18, W_OLDEST_ACCEPTED_UNIX_MS = 19, W_BACKLOG_PUBLISHED = 20;
    public static final int STATE_READY = 1, STATE_BUSY = 2, STATE_FINISHED = 4;
    public static final int TASK_RUNNING = 1, TASK_DONE = 2, TASK_FAILED = 3, TASK_CANCELLED = 4;
    public static final int NOT_FOUND = 0, TIMEOUT = 1, UNAVAILABLE = 2, BAD_REQUEST = 6,
            INTERNAL = 7;

    private static final long[] HEADER = {0x0047455344425753L, 1, 64, 4096, 1024, 128, 16, 32};
    // Atomic, little-endian access to the words of a direct buffer (the mapping).
    private static final VarHandle WORD =
            MethodHandles.byteBufferViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);

    /** The 4096-byte segment; without one (a plain run) every call does nothing. */
    public static final class Segment {
        private final ByteBuffer map;
        private long nextTaskId = 1;
        private int owned;

        private Segment(ByteBuffer map) {
            this.map = map;
        }

        /** The segment named by SWITCHBOARD_SEGMENT_FD, or an inert one. */
        public static Segment fromEnv() {
            String raw = System.getenv("SWITCHBOARD_SEGMENT_FD");
            if (raw == null || raw.isEmpty()) return new Segment(null);
            try (RandomAccessFile file = new RandomAccessFile("/proc/self/fd/" + Integer.parseInt(raw), "rw")) {
                MappedByteBuffer map = file.getChannel().map(FileChannel.MapMode.READ_WRITE, 0, 4096);
                for (int i = 0; i < 8; i++) {
                    if ((long) WORD.getAcquire(map, i * 8) != HEADER[i]) return new Segment(null);
                }
                return new Segment(map);
            } catch (IOException | NumberFormatException | UnsupportedOperationException e) {
                System.err.println("switchboard: metrics segment refused: " + e);
                return new Segment(null);
            }
        }

        public boolean present() {
            return map != null;
        }

        public void add(int word, long n) {
            if (map != null && word >= W_HEARTBEAT && word < 64) WORD.getAndAdd(map, word * 8, n);
        }

        public void heartbeat() {
            add(W_HEARTBEAT, 1);
        }

        public void setState(long state) {
            if (map != null) WORD.setRelease(map, W_STATE * 8, state);
        }

        /** Publishes the backlog (words 18–19), then the flag that says it is published. */
        public void setBacklog(long items, long oldestAcceptedUnixMs) {
            if (map == null) return;
            WORD.setOpaque(map, W_BACKLOG * 8, items);
            WORD.setOpaque(map, W_OLDEST_ACCEPTED_UNIX_MS * 8, oldestAcceptedUnixMs);
            WORD.setRelease(map, W_BACKLOG_PUBLISHED * 8, 1L);
        }

        long load(int index) {
            return (long) WORD.getOpaque(map, index * 8);
        }

        void store(int index, long value) {
            WORD.setOpaque(map, index * 8, value);
        }

        /** Claims a free slot (or a finished one of ours); an inert task when none is free. */
        public synchronized Task claim(String label, long total) {
            if (map == null) return new Task(this, -1, 0, label, total);
            for (int k = 0; k < 16; k++) {
                int base = (1024 + 128 * k) / 8;
                long id = load(base + 1), state = load(base + 2);
                boolean finished = (owned >> k & 1) == 1 && state >= TASK_DONE && state <= TASK_CANCELLED;
                if ((id == 0 && state == 0) || finished) {
                    owned |= 1 << k;
                    return new Task(this, base, nextTaskId++, label, total);
                }
            }
            return new Task(this, -1, 0, label, total);
        }
    }

    /** One task slot; each update is one seqlock write of the whole record. */
    public static final class Task {
        private final Segment segment;
        private final int base;
        private final long id;
        private long state = TASK_RUNNING, done, total;
        private byte[] label = new byte[0];

        private Task(Segment segment, int base, long id, String label, long total) {
            this.segment = segment;
            this.base = base;
            this.id = id;
            this.total = total;
            setLabel(label);
        }

        public synchronized void set(long done, long total) {
            this.done = done;
            this.total = total;
            publish();
        }

        /** The label, cut to 64 bytes at a character boundary. */
        public synchronized void setLabel(String text) {
            byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
            int n = Math.min(bytes.length, 64);
            while (n > 0 && n < bytes.length && (bytes[n] & 0xC0) == 0x80) n--;
            label = java.util.Arrays.copyOf(bytes, n);
            publish();
        }

        public synchronized void finish(long state) {
            this.state = state;
            publish();
        }

        private void publish() {
            if (base < 0) return;
            long seq = segment.load(base) & ~1L;
            segment.store(base, seq + 1);
            VarHandle.releaseFence();
            segment.store(base + 1, id);
            segment.store(base + 2, state);
            segment.store(base + 3, done);
            segment.store(base + 4, total);
            segment.store(base + 5, label.length);
            segment.store(base + 6, 0);
            segment.store(base + 7, 0);
            ByteBuffer padded = ByteBuffer.allocate(64).order(ByteOrder.LITTLE_ENDIAN).put(label);
            for (int i = 0; i < 8; i++) segment.store(base + 8 + i, padded.getLong(i * 8));
            WORD.setRelease(segment.map, base * 8, seq + 2);
        }
    }

    /** A job: the handshake, progress, events, and one result. */
    public static final class Job {
        private final Segment segment = Segment.fromEnv();
        private final OutputStream out = new FileOutputStream(FileDescriptor.out);
        private final CountDownLatch welcomed = new CountDownLatch(1);
        private final CountDownLatch stopped = new CountDownLatch(1);
        // Beats go on after a stop, while the job finishes up, until its result is sent.
        private final CountDownLatch finished = new CountDownLatch(1);
        private long nextId = 1;
        private volatile String service = "", params = "{}";
        private volatile long heartbeatMs = 1000;

        private Job() {}

        /** Hello, Welcome (30 s at most), Ready. Throws if the console never answers. */
        public static Job start(String name, String version) throws IOException, InterruptedException {
            System.setOut(new PrintStream(new FileOutputStream(FileDescriptor.err), true));
            Job job = new Job();
            Thread reader = new Thread(job::readLoop, "switchboard-stdin");
            reader.setDaemon(true);
            reader.start();
            Wire hello = new Wire().varint(0).str(name).str(version).varint(1).varint(0).varint(0).varint(0).varint(0).varint(0);
            job.send(hello);
            if (!job.welcomed.await(30, TimeUnit.SECONDS) && !job.stopping()) {
                throw new IOException("no Welcome from the console");
            }
            if (job.stopping()) return job;
            job.send(new Wire().varint(2).varint(0).varint(0).varint(0));
            job.segment.setState(STATE_BUSY);
            Thread beat = new Thread(job::beatLoop, "switchboard-heartbeat");
            beat.setDaemon(true);
            beat.start();
            return job;
        }

        public String service() { return service; }
        public String params() { return params; }
        public Segment segment() { return segment; }
        public boolean stopping() { return stopped.getCount() == 0; }
        public Task task(String label, long total) { return segment.claim(label, total); }

        /** Sleeps `ms`; returns true at once when the console stops the job. */
        public boolean sleep(long ms) throws InterruptedException {
            return stopped.await(ms, TimeUnit.MILLISECONDS);
        }

        /** Publishes an event with a JSON body on `topic`. */
        public void publish(String topic, String json) throws IOException {
            send(new Wire().varint(5).str(topic).varint(0).varint(2).str(json));
            segment.add(W_EVENTS_PUBLISHED, 1);
        }

        public void succeed(String json) throws IOException {
            send(new Wire().varint(12).varint(0).varint(0).varint(0).varint(2).str(json));
            finished.countDown();
            segment.setState(STATE_FINISHED);
            out.flush();
        }

        public void fail(int code, String message) throws IOException {
            send(new Wire().varint(12).varint(1).varint(code).str(message).varint(0).varint(0).varint(0));
            finished.countDown();
            segment.setState(STATE_FINISHED);
            out.flush();
        }

        private void beatLoop() {
            try {
                while (!finished.await(heartbeatMs, TimeUnit.MILLISECONDS)) segment.heartbeat();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }

        /** The envelope header (§4), then `rest`; COBS between two zeros; one write. */
        private synchronized void send(Wire rest) throws IOException {
            Wire env = new Wire().varint(nextId++).varint(0).varint(0).varint(0);
            env.bytes.write(1); // priority normal
            env.bytes.write(rest.bytes.toByteArray(), 0, rest.bytes.size());
            try {
                out.write(cobsFrame(env.bytes.toByteArray()));
                out.flush();
            } catch (IOException e) {
                stopped.countDown(); // the console is gone: stop
                throw e;
            }
        }

        private void readLoop() {
            ByteArrayOutputStream frame = new ByteArrayOutputStream();
            byte[] chunk = new byte[4096];
            try (InputStream in = System.in) {
                int n;
                while ((n = in.read(chunk)) > 0) {
                    for (int i = 0; i < n; i++) {
                        if (chunk[i] != 0) {
                            if (frame.size() <= 1 << 20) frame.write(chunk[i]);
                        } else if (frame.size() > 0) {
                            onFrame(cobsDecode(frame.toByteArray()));
                            frame.reset();
                        }
                    }
                }
            } catch (IOException e) {
                // A broken stdin is EOF: stop.
            }
            stopped.countDown(); // EOF means "finish and exit"
            welcomed.countDown();
        }

        private void onFrame(byte[] b) {
            if (b == null) return;
            try {
                Reader r = new Reader(b);
                for (int k = 0; k < 4; k++) r.varint(); // id, correlation, trace, deadline
                r.at++; // priority
                long kind = r.varint();
                if (kind == 1) { // Welcome
                    r.varint();
                    String name = r.str();
                    r.varint();
                    long beat = r.varint();
                    long settings = r.varint();
                    for (long i = 0; i < settings; i++) { r.str(); r.str(); }
                    String p = r.str();
                    service = name;
                    params = p.isBlank() ? "{}" : p;
                    heartbeatMs = beat > 0 && beat < 60_000 ? beat : 1000;
                    welcomed.countDown();
                } else if (kind == 11) { // Shutdown
                    stopped.countDown();
                }
            } catch (ArrayIndexOutOfBoundsException e) {
                // A bad frame is skipped (SPEC.md §2).
            }
        }
    }

    /** The integer under "key" in a flat JSON object, or `fallback` (not a JSON parser). */
    public static long paramLong(String json, String key, long fallback) {
        Matcher m = Pattern.compile("\"" + Pattern.quote(key) + "\"\\s*:\\s*(-?\\d+)").matcher(json);
        return m.find() ? Long.parseLong(m.group(1)) : fallback;
    }

    /** postcard by hand (§3). */
    static final class Wire {
        final ByteArrayOutputStream bytes = new ByteArrayOutputStream();

        Wire varint(long v) {
            while ((v & ~0x7FL) != 0) {
                bytes.write((int) ((v & 0x7F) | 0x80));
                v >>>= 7;
            }
            bytes.write((int) v);
            return this;
        }

        Wire str(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            varint(b.length);
            bytes.write(b, 0, b.length);
            return this;
        }
    }

    static final class Reader {
        final byte[] b;
        int at;

        Reader(byte[] b) {
            this.b = b;
        }

        long varint() {
            long v = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                int x = b[at++] & 0xFF;
                v |= (long) (x & 0x7F) << shift;
                if ((x & 0x80) == 0) return v;
            }
            throw new ArrayIndexOutOfBoundsException("varint too long");
        }

        String str() {
            int n = (int) varint();
            if (n < 0 || n > b.length - at) throw new ArrayIndexOutOfBoundsException("string too long");
            String s = new String(b, at, n, StandardCharsets.UTF_8);
            at += n;
            return s;
        }
    }

    /** COBS (§2) between a leading and a trailing zero, canonical form. */
    static byte[] cobsFrame(byte[] in) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(in.length + in.length / 254 + 3);
        out.write(0);
        int start = 0;
        while (true) {
            int end = start;
            while (end < in.length && in[end] != 0 && end - start < 254) end++;
            int code = end - start + 1;
            out.write(code);
            out.write(in, start, end - start);
            if (code == 0xFF) {
                // A full block implies no zero; the canonical form adds no empty block at the end.
                start = end;
                if (start == in.length) break;
                continue;
            }
            if (end == in.length) break;
            start = end + 1; // in[end] is the zero this block implies
        }
        out.write(0);
        return out.toByteArray();
    }

    static byte[] cobsDecode(byte[] b) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(b.length);
        int i = 0;
        while (i < b.length) {
            int n = b[i++] & 0xFF;
            if (n == 0 || i + n - 1 > b.length) return null;
            out.write(b, i, n - 1);
            i += n - 1;
            if (n != 0xFF && i < b.length) out.write(0);
        }
        return out.toByteArray();
    }
}
