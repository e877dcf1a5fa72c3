// A plain program that only writes its segment (no frames): a label cut at a UTF-8 boundary,
// a backlog, one beat. services/python/tests/test_launcher.py checks what a reader sees; the
// same program exists in C and Java (segment_only.c, SegmentOnly.java).
'use strict';

const sb = require('./switchboard');

const segment = sb.Segment.fromEnv();
if (segment.fd === null) process.exit(2);
// "a" and 50 two-byte characters, 101 bytes: a cut at 64 would split the 32nd one.
const task = segment.claim('a' + '\u00e9'.repeat(50), 9);
task.set(4, 9);
segment.setBacklog(7, 1234);
segment.heartbeat();
segment.setState(4);
