// switchboard.js — a one-module Node.js SDK for Switchboard jobs (protocol version 1), no
// dependencies and no native addon. Copy it next to your program.
//
// It does what protocol/SPEC.md asks of a job: the frames (§2–§5: Hello, Welcome, Ready,
// Event, JobResult; Shutdown and stdin EOF stop it) and the metrics segment (§7). Node cannot
// map memory without an addon, so the segment is written with positional writes
// (fs.writeSync at an offset) on $SWITCHBOARD_SEGMENT_FD. This module is the only writer of
// each word it touches, so it keeps every counter here and writes its value; a task slot is
// written as the seqlock asks: the odd sequence, then the record in one write, then the even
// sequence, each a system call that completes before the next starts.
//
//   const sb = require('./switchboard');
//   (async () => {
//     const job = await sb.startJob('crunch', '0.1.0');
//     const task = job.task('crunching', 10);
//     for (let i = 1; i <= 10 && !job.stopping; i++) { await work(); task.set(i, 10); }
//     task.finish(job.stopping ? sb.TASK_CANCELLED : sb.TASK_DONE);
//     job.succeed({ ok: true });   // or job.fail(sb.UNAVAILABLE, 'why')
//     process.exit(0);
//   })();
//
// console.log is pointed at stderr on start: stdout carries frames only.
'use strict';

const fs = require('fs');

const W = { HEARTBEAT: 8, STATE: 9, EVENTS_PUBLISHED: 15, BACKLOG: 18,
  OLDEST_ACCEPTED_UNIX_MS: 19, BACKLOG_PUBLISHED: 20 };
const STATE_BUSY = 2, STATE_FINISHED = 4;
const TASK_RUNNING = 1, TASK_DONE = 2, TASK_FAILED = 3, TASK_CANCELLED = 4;
const NOT_FOUND = 0, TIMEOUT = 1, UNAVAILABLE = 2, BAD_REQUEST = 6, INTERNAL = 7;
const HEADER = [0x0047455344425753n, 1n, 64n, 4096n, 1024n, 128n, 16n, 32n];

/** The segment; without one (a plain run) every call does nothing. */
class Segment {
  constructor(fd) {
    this.fd = fd;
    this.words = new Map(); // our own value of each counter word: we are its only writer
    this.nextTaskId = 1n;
    this.owned = new Set();
  }

  static fromEnv() {
    const raw = process.env.SWITCHBOARD_SEGMENT_FD;
    const fd = Number.parseInt(raw || '', 10);
    if (!(fd > 2)) return new Segment(null);
    try {
      const head = Buffer.alloc(64);
      fs.readSync(fd, head, 0, 64, 0);
      for (let i = 0; i < 8; i++) {
        if (head.readBigUInt64LE(8 * i) !== HEADER[i]) return new Segment(null);
      }
      return new Segment(fd);
    } catch (err) {
      process.stderr.write(`switchboard: metrics segment refused: ${err}\n`);
      return new Segment(null);
    }
  }

  read(word) {
    const b = Buffer.alloc(8);
    fs.readSync(this.fd, b, 0, 8, word * 8);
    return b.readBigUInt64LE(0);
  }

  write(word, value) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(value)), 0);
    fs.writeSync(this.fd, b, 0, 8, word * 8);
  }

  add(word, n = 1) {
    if (this.fd === null) return;
    const value = BigInt.asUintN(64, (this.words.get(word) ?? this.read(word)) + BigInt(n));
    this.words.set(word, value);
    this.write(word, value);
  }

  heartbeat() { this.add(W.HEARTBEAT); }

  setState(state) { if (this.fd !== null) this.write(W.STATE, state); }

  /** Publishes the backlog (words 18–19), then the flag that says it is published. */
  setBacklog(items, oldestAcceptedUnixMs) {
    if (this.fd === null) return;
    this.write(W.BACKLOG, items);
    this.write(W.OLDEST_ACCEPTED_UNIX_MS, oldestAcceptedUnixMs);
    this.write(W.BACKLOG_PUBLISHED, 1);
  }

  /** Claims a free slot (or a finished one of ours); the task is invisible when none is. */
  claim(label, total) {
    if (this.fd !== null) {
      for (let k = 0; k < 16; k++) {
        const base = (1024 + 128 * k) / 8;
        const id = this.read(base + 1), state = this.read(base + 2);
        const finished = this.owned.has(k) && state >= 2n && state <= 4n;
        if ((id === 0n && state === 0n) || finished) {
          this.owned.add(k);
          return new Task(this, base, this.nextTaskId++, label, total);
        }
      }
    }
    return new Task(this, -1, 0n, label, total);
  }
}

/** One task slot; each update is one seqlock write of the whole record. */
class Task {
  constructor(segment, base, id, label, total) {
    Object.assign(this, { segment, base, id, state: TASK_RUNNING, done: 0, total });
    this.setLabel(label);
  }

  set(done, total = this.total) { this.done = done; this.total = total; this.publish(); }

  /** The label, cut to 64 bytes at a character boundary. */
  setLabel(text) {
    let bytes = Buffer.from(String(text), 'utf8');
    let n = Math.min(bytes.length, 64);
    while (n > 0 && n < bytes.length && (bytes[n] & 0xc0) === 0x80) n--;
    this.label = bytes.subarray(0, n);
    this.publish();
  }

  finish(state = TASK_DONE) { this.state = state; this.publish(); }

  publish() {
    if (this.base < 0) return;
    const s = this.segment;
    const seq = s.read(this.base) & ~1n;
    s.write(this.base, seq + 1n); // odd: being written
    const record = Buffer.alloc(120); // words 1..15 of the slot
    record.writeBigUInt64LE(this.id, 0);
    record.writeBigUInt64LE(BigInt(this.state), 8);
    record.writeBigUInt64LE(BigInt(this.done), 16);
    record.writeBigUInt64LE(BigInt(this.total), 24);
    record.writeBigUInt64LE(BigInt(this.label.length), 32);
    this.label.copy(record, 56);
    fs.writeSync(s.fd, record, 0, 120, this.base * 8 + 8);
    s.write(this.base, seq + 2n); // even: published
  }
}

// ---- §2/§3 frames

function varint(out, v) {
  let x = BigInt(v);
  do {
    let byte = Number(x & 0x7fn);
    x >>= 7n;
    if (x) byte |= 0x80;
    out.push(byte);
  } while (x);
  return out;
}

function str(out, s) {
  const b = Buffer.from(String(s), 'utf8');
  varint(out, b.length);
  for (const x of b) out.push(x);
  return out;
}

/** COBS (§2), canonical, between a leading and a trailing zero. */
function cobsFrame(input) {
  const out = [0];
  let start = 0;
  for (;;) {
    let end = start;
    while (end < input.length && input[end] !== 0 && end - start < 254) end++;
    const code = end - start + 1;
    out.push(code);
    for (let i = start; i < end; i++) out.push(input[i]);
    if (code === 0xff) {
      start = end; // a full block implies no zero
      if (start === input.length) break;
      continue;
    }
    if (end === input.length) break;
    start = end + 1;
  }
  out.push(0);
  return Buffer.from(out);
}

function cobsDecode(b) {
  const out = [];
  let i = 0;
  while (i < b.length) {
    const n = b[i++];
    if (n === 0 || i + n - 1 > b.length) return null;
    for (let k = 0; k < n - 1; k++) out.push(b[i + k]);
    i += n - 1;
    if (n !== 0xff && i < b.length) out.push(0);
  }
  return Buffer.from(out);
}

class Reader {
  constructor(b) { this.b = b; this.at = 0; }
  varint() {
    let v = 0n;
    for (let shift = 0n; shift < 64n; shift += 7n) {
      if (this.at >= this.b.length) throw new RangeError('short frame');
      const x = this.b[this.at++];
      v |= BigInt(x & 0x7f) << shift;
      if (!(x & 0x80)) return v;
    }
    throw new RangeError('varint too long');
  }
  str() {
    const n = Number(this.varint());
    if (n > this.b.length - this.at) throw new RangeError('short frame');
    const s = this.b.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }
}

// ---- §5 the job

class Job {
  constructor() {
    this.segment = Segment.fromEnv();
    this.nextId = 1;
    this.stopping = false;
    this.service = '';
    this.params = {};
    this.heartbeatMs = 1000;
    this.waiters = [];
  }

  send(rest) {
    const env = varint([], this.nextId++);
    env.push(0, 0, 0, 1); // correlation, trace, deadline_us, priority normal
    try {
      process.stdout.write(cobsFrame(env.concat(rest)));
    } catch (err) {
      this.stop();
    }
  }

  stop() {
    this.stopping = true;
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** A Promise of `ms`; resolves early, to true, when the console stops the job. */
  sleep(ms) {
    if (this.stopping) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(this.stopping), ms);
      this.waiters.push(() => { clearTimeout(timer); resolve(true); });
    });
  }

  task(label, total = 0) { return this.segment.claim(label, total); }

  publish(topic, value) {
    const rest = varint([], 5);
    str(rest, topic);
    rest.push(0);
    if (value === undefined) rest.push(0); else str(varint(rest, 2), JSON.stringify(value));
    this.send(rest);
    this.segment.add(W.EVENTS_PUBLISHED);
  }

  succeed(value) {
    const rest = [12, 0, 0, 0];
    str(varint(rest, 2), JSON.stringify(value === undefined ? null : value));
    this.send(rest);
    this.finished();
  }

  fail(code, message) {
    const rest = [12, 1];
    str(varint(rest, code), message);
    rest.push(0, 0, 0);
    this.send(rest);
    this.finished();
  }

  finished() {
    this.segment.setState(STATE_FINISHED);
    clearInterval(this.beat);
    process.stdin.pause();
  }

  onFrame(raw) {
    const b = cobsDecode(raw);
    if (!b) return;
    try {
      const r = new Reader(b);
      for (let k = 0; k < 4; k++) r.varint(); // id, correlation, trace, deadline_us
      r.at++; // priority
      const kind = r.varint();
      if (kind === 1n) { // Welcome
        r.varint();
        const service = r.str();
        r.varint();
        const beat = Number(r.varint());
        const settings = Number(r.varint());
        for (let i = 0; i < settings; i++) { r.str(); r.str(); }
        const params = r.str();
        this.service = service;
        this.params = params.trim() ? JSON.parse(params) : {};
        this.heartbeatMs = beat > 0 && beat < 60000 ? beat : 1000;
        if (this.welcomed) this.welcomed();
      } else if (kind === 11n) { // Shutdown
        this.stop();
      }
    } catch (err) {
      // A bad frame is skipped (SPEC.md §2).
    }
  }
}

/** Hello, Welcome (30 s at most), Ready; resolves to the Job (job.stopping if stopped first). */
function startJob(name, version) {
  console.log = console.error; // stdout carries frames only
  const job = new Job();
  let pending = Buffer.alloc(0);
  process.stdin.on('data', (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    let start = 0;
    for (let i = 0; i < pending.length; i++) {
      if (pending[i] !== 0) continue;
      if (i > start) job.onFrame(pending.subarray(start, i));
      start = i + 1;
    }
    pending = pending.subarray(start);
    if (pending.length > 1 << 20) pending = Buffer.alloc(0); // an over-long frame: dropped
  });
  process.stdin.on('end', () => job.stop()); // EOF means "finish and exit"
  process.stdin.on('error', () => job.stop());
  const hello = str(str(varint([], 0), name), version);
  hello.push(1, 0, 0, 0, 0, 0); // protocol 1, no methods, no topics, "", "", Empty
  job.send(hello);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no Welcome from the console')), 30000);
    const done = () => {
      clearTimeout(timer);
      job.welcomed = null;
      if (!job.stopping) {
        job.send([2, 0, 0, 0]); // Ready
        job.segment.setState(STATE_BUSY);
        job.segment.heartbeat();
        job.beat = setInterval(() => job.segment.heartbeat(), job.heartbeatMs);
      }
      resolve(job);
    };
    job.welcomed = done;
    job.waiters.push(done);
  });
}

/** The integer under `key` in params, or `fallback`. */
function paramInt(params, key, fallback) {
  const v = params ? params[key] : undefined;
  return Number.isInteger(v) ? v : fallback;
}

module.exports = { startJob, Segment, Task, W, paramInt, cobsFrame, cobsDecode,
  TASK_RUNNING, TASK_DONE, TASK_FAILED, TASK_CANCELLED,
  NOT_FOUND, TIMEOUT, UNAVAILABLE, BAD_REQUEST, INTERNAL };
