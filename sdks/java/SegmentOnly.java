// A plain program that only writes its segment (no frames): a label cut at a UTF-8 boundary,
// a backlog, one beat. services/python/tests/test_launcher.py checks what a reader sees; the
// same program exists in C and Node (segment_only.c, segment_only.js).

public final class SegmentOnly {
    public static void main(String[] args) {
        Switchboard.Segment segment = Switchboard.Segment.fromEnv();
        if (!segment.present()) System.exit(2);
        // "a" and 50 two-byte characters, 101 bytes: a cut at 64 would split the 32nd one.
        Switchboard.Task task = segment.claim("a" + "\u00e9".repeat(50), 9);
        task.set(4, 9);
        segment.setBacklog(7, 1234);
        segment.heartbeat();
        segment.setState(Switchboard.STATE_FINISHED);
    }
}
