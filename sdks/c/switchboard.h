/* switchboard.h — a single-header C99 SDK for Switchboard jobs (protocol version 1).
 *
 * Copy this file next to your program; it needs only libc and POSIX. It implements what
 * protocol/SPEC.md asks of a job:
 *   - the metrics segment on fd $SWITCHBOARD_SEGMENT_FD (§7): heartbeat, state, counters,
 *     backlog, and task slots (progress and labels) written under the slot seqlock;
 *   - the minimal frames a job needs (§2–§5): Hello, Welcome (read), Ready, Event, JobResult,
 *     Shutdown and stdin EOF (read).
 *
 * Include it before any other header (it asks for POSIX 2008 declarations). A job:
 *
 *     #include "switchboard.h"
 *     int main(void) {
 *         sb_job job;
 *         if (sb_job_start(&job, "crunch", "0.1.0") != 0) return job.stopping ? 0 : 1;
 *         long n = sb_param_int(job.params, "steps", 10);
 *         sb_task task;
 *         sb_task_claim(&job.segment, &task, "crunching", (uint64_t)n);
 *         for (long i = 1; i <= n && !sb_job_poll(&job); i++) {
 *             do_one_step();
 *             sb_task_set(&task, (uint64_t)i, (uint64_t)n);
 *         }
 *         sb_task_finish(&task, job.stopping ? SB_TASK_CANCELLED : SB_TASK_DONE);
 *         if (job.stopping) return sb_job_fail(&job, SB_UNAVAILABLE, "stopped"), 1;
 *         return sb_job_succeed(&job, "{\"ok\":true}") == 0 ? 0 : 1;
 *     }
 *
 * Single-threaded by design: sb_job_poll() (call it at least every job.heartbeat_ms) reads
 * stdin without blocking and beats the heartbeat when it is due; sb_job_sleep_ms() sleeps the
 * same way. A job that blocks longer must beat from a thread of its own (sb_heartbeat() is one
 * atomic add; give each word one writer, SPEC.md §7). Every function works without a segment
 * (a plain run outside the console): the segment calls then do nothing.
 */
#ifndef SWITCHBOARD_H
#define SWITCHBOARD_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---- §7 the metrics segment ------------------------------------------------------------ */

#define SB_SEGMENT_LEN 4096
#define SB_SLOT_OFFSET 1024
#define SB_SLOT_LEN 128
#define SB_SLOTS 16
#define SB_LABEL_MAX 64

/* Word indexes (byte offset / 8). */
enum {
    SB_W_HEARTBEAT = 8, SB_W_STATE = 9, SB_W_REQUESTS_RECEIVED = 10, SB_W_REQUESTS_OK = 11,
    SB_W_REQUESTS_ERROR = 12, SB_W_REQUESTS_TIMEOUT = 13, SB_W_IN_FLIGHT = 14,
    SB_W_EVENTS_PUBLISHED = 15, SB_W_EVENTS_RECEIVED = 16, SB_W_LATENCY_SUM_US = 17,
    SB_W_BACKLOG = 18, SB_W_OLDEST_ACCEPTED_UNIX_MS = 19, SB_W_BACKLOG_PUBLISHED = 20
};

enum { SB_STARTING = 0, SB_READY = 1, SB_BUSY = 2, SB_DRAINING = 3, SB_FINISHED = 4 };
enum { SB_TASK_FREE = 0, SB_TASK_RUNNING = 1, SB_TASK_DONE = 2, SB_TASK_FAILED = 3,
       SB_TASK_CANCELLED = 4 };

typedef struct sb_segment {
    uint64_t *w;           /* NULL when there is no segment: every call is then a no-op */
    uint64_t next_task_id; /* task ids are unique among this process's live slots */
    uint32_t owned;        /* bit k: slot k was claimed by this process */
} sb_segment;

typedef struct sb_task {
    sb_segment *segment;
    int slot; /* -1: no slot (no segment, or all 16 in use), updates do nothing */
    uint64_t id, state, done, total;
    size_t label_len;
    unsigned char label[SB_LABEL_MAX];
} sb_task;

static const uint64_t sb__header[8] = {
    0x0047455344425753ull, 1, 64, SB_SEGMENT_LEN, SB_SLOT_OFFSET, SB_SLOT_LEN, SB_SLOTS, 32
};

/* Maps the segment named by $SWITCHBOARD_SEGMENT_FD. Returns 0, or -1 (and a no-op segment)
 * when the variable is absent or the fd is not a segment with the expected header. */
static inline int sb_segment_open(sb_segment *s) {
    const char *raw = getenv("SWITCHBOARD_SEGMENT_FD");
    char *end = NULL;
    long fd;
    void *map;
    int i;
    memset(s, 0, sizeof *s);
    s->next_task_id = 1;
    if (raw == NULL || *raw == '\0') return -1;
    fd = strtol(raw, &end, 10);
    if (*end != '\0' || fd <= 2 || fd > 1 << 20) return -1;
    map = mmap(NULL, SB_SEGMENT_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0);
    if (map == MAP_FAILED) return -1;
    for (i = 0; i < 8; i++) {
        if (__atomic_load_n((uint64_t *)map + i, __ATOMIC_ACQUIRE) != sb__header[i]) {
            munmap(map, SB_SEGMENT_LEN);
            return -1;
        }
    }
    s->w = (uint64_t *)map;
    return 0;
}

static inline void sb_counter_add(sb_segment *s, int word, uint64_t n) {
    if (s->w != NULL && word >= SB_W_HEARTBEAT && word < 64)
        __atomic_fetch_add(&s->w[word], n, __ATOMIC_RELAXED);
}

static inline void sb_heartbeat(sb_segment *s) { sb_counter_add(s, SB_W_HEARTBEAT, 1); }

static inline void sb_set_state(sb_segment *s, uint64_t state) {
    if (s->w != NULL) __atomic_store_n(&s->w[SB_W_STATE], state, __ATOMIC_RELAXED);
}

/* Publishes the service's own backlog (SPEC.md §7 words 18–20): the values first, then the
 * flag, so a console that sees the flag sees values too. */
static inline void sb_set_backlog(sb_segment *s, uint64_t items, uint64_t oldest_unix_ms) {
    if (s->w == NULL) return;
    __atomic_store_n(&s->w[SB_W_BACKLOG], items, __ATOMIC_RELAXED);
    __atomic_store_n(&s->w[SB_W_OLDEST_ACCEPTED_UNIX_MS], oldest_unix_ms, __ATOMIC_RELAXED);
    __atomic_store_n(&s->w[SB_W_BACKLOG_PUBLISHED], 1, __ATOMIC_RELEASE);
}

/* One seqlock write of the whole record (SPEC.md §7, "Updating a slot"). */
static inline void sb__task_publish(sb_task *t) {
    uint64_t *w, seq;
    int i, b;
    if (t->segment == NULL || t->segment->w == NULL || t->slot < 0) return;
    w = t->segment->w + (SB_SLOT_OFFSET + SB_SLOT_LEN * t->slot) / 8;
    seq = __atomic_load_n(&w[0], __ATOMIC_RELAXED) & ~(uint64_t)1;
    __atomic_store_n(&w[0], seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&w[1], t->id, __ATOMIC_RELAXED);
    __atomic_store_n(&w[2], t->state, __ATOMIC_RELAXED);
    __atomic_store_n(&w[3], t->done, __ATOMIC_RELAXED);
    __atomic_store_n(&w[4], t->total, __ATOMIC_RELAXED);
    __atomic_store_n(&w[5], (uint64_t)t->label_len, __ATOMIC_RELAXED);
    __atomic_store_n(&w[6], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&w[7], 0, __ATOMIC_RELAXED);
    for (i = 0; i < 8; i++) {
        uint64_t word = 0; /* little-endian byte order whatever the host's */
        for (b = 0; b < 8; b++) word |= (uint64_t)t->label[8 * i + b] << (8 * b);
        __atomic_store_n(&w[8 + i], word, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&w[0], seq + 2, __ATOMIC_RELEASE);
}

/* Sets the label, cut to 64 bytes at a UTF-8 character boundary, zero-padded. */
static inline void sb__task_label(sb_task *t, const char *label) {
    size_t n = label ? strlen(label) : 0;
    if (n > SB_LABEL_MAX) {
        n = SB_LABEL_MAX;
        while (n > 0 && ((unsigned char)label[n] & 0xC0) == 0x80) n--;
    }
    memset(t->label, 0, sizeof t->label);
    if (n > 0) memcpy(t->label, label, n);
    t->label_len = n;
}

/* Claims a free slot (or a finished one of ours) as a running task. Returns 0, or -1 when
 * there is no segment or no free slot (the task then stays invisible and calls do nothing). */
static inline int sb_task_claim(sb_segment *s, sb_task *t, const char *label, uint64_t total) {
    int k;
    memset(t, 0, sizeof *t);
    t->segment = s;
    t->slot = -1;
    if (s->w == NULL) return -1;
    for (k = 0; k < SB_SLOTS; k++) {
        uint64_t *w = s->w + (SB_SLOT_OFFSET + SB_SLOT_LEN * k) / 8;
        uint64_t id = __atomic_load_n(&w[1], __ATOMIC_RELAXED);
        uint64_t state = __atomic_load_n(&w[2], __ATOMIC_RELAXED);
        int free_slot = id == 0 && state == SB_TASK_FREE;
        int finished = (s->owned >> k & 1u) && state >= SB_TASK_DONE && state <= SB_TASK_CANCELLED;
        if (free_slot || finished) {
            s->owned |= 1u << k;
            t->slot = k;
            t->id = s->next_task_id++;
            t->state = SB_TASK_RUNNING;
            t->total = total;
            sb__task_label(t, label);
            sb__task_publish(t);
            return 0;
        }
    }
    return -1;
}

/* Publishes `done` out of `total` units (total 0 = unknown). */
static inline void sb_task_set(sb_task *t, uint64_t done, uint64_t total) {
    t->done = done;
    t->total = total;
    sb__task_publish(t);
}

static inline void sb_task_label(sb_task *t, const char *label) {
    sb__task_label(t, label);
    sb__task_publish(t);
}

/* Ends the task: SB_TASK_DONE, SB_TASK_FAILED or SB_TASK_CANCELLED. */
static inline void sb_task_finish(sb_task *t, uint64_t state) {
    t->state = state;
    sb__task_publish(t);
}

/* ---- §2/§3 frames: postcard by hand, COBS, zero delimiters ----------------------------- */

#define SB_MAX_FRAME (1024 * 1024)

typedef struct sb__buf {
    unsigned char *data;
    size_t len, cap;
    int failed; /* out of memory: the frame is dropped, never half-written */
} sb__buf;

static inline void sb__put(sb__buf *b, const void *bytes, size_t n) {
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        unsigned char *grown;
        while (cap < b->len + n) cap *= 2;
        grown = (unsigned char *)realloc(b->data, cap);
        if (grown == NULL) { b->failed = 1; return; }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
}

static inline void sb__varint(sb__buf *b, uint64_t v) {
    unsigned char byte;
    do {
        byte = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v) byte |= 0x80;
        sb__put(b, &byte, 1);
    } while (v);
}

static inline void sb__bytes(sb__buf *b, const char *s, size_t n) {
    sb__varint(b, n);
    if (n) sb__put(b, s, n);
}

static inline void sb__str(sb__buf *b, const char *s) { sb__bytes(b, s, s ? strlen(s) : 0); }

/* COBS (SPEC.md §2) of `in`, between a leading and a trailing zero. */
static inline void sb__cobs_frame(const sb__buf *in, sb__buf *out) {
    size_t i = 0, code_at;
    unsigned char code = 1, zero = 0;
    sb__put(out, &zero, 1);
    code_at = out->len;
    sb__put(out, &code, 1);
    for (i = 0; i < in->len; i++) {
        if (in->data[i] == 0) {
            if (!out->failed) out->data[code_at] = code;
            code = 1;
            code_at = out->len;
            sb__put(out, &code, 1);
        } else {
            sb__put(out, &in->data[i], 1);
            code++;
            /* A full block; a new one starts only if more input follows (canonical form). */
            if (code == 0xFF) {
                if (!out->failed) out->data[code_at] = code;
                code = 1;
                if (i + 1 < in->len) {
                    code_at = out->len;
                    sb__put(out, &code, 1);
                } else {
                    code_at = (size_t)-1;
                }
            }
        }
    }
    if (code_at != (size_t)-1 && !out->failed) out->data[code_at] = code;
    sb__put(out, &zero, 1);
}

/* ---- §5 the job ----------------------------------------------------------------------- */

enum { SB_NOT_FOUND = 0, SB_TIMEOUT = 1, SB_UNAVAILABLE = 2, SB_OVERLOADED = 3,
       SB_CIRCUIT_OPEN = 4, SB_FORBIDDEN = 5, SB_BAD_REQUEST = 6, SB_INTERNAL = 7 };

enum { SB_KIND_HELLO = 0, SB_KIND_WELCOME = 1, SB_KIND_READY = 2, SB_KIND_EVENT = 5,
       SB_KIND_SHUTDOWN = 11, SB_KIND_JOB_RESULT = 12 };

typedef struct sb_job {
    sb_segment segment;
    char *service;         /* from Welcome: the name in the stack */
    char *params;          /* from Welcome: JSON text, "{}" when none */
    uint32_t heartbeat_ms; /* from Welcome: how often to beat */
    int stopping;          /* Shutdown or stdin EOF arrived: finish up and exit */
    int welcomed;
    uint64_t next_id, hello_id;
    struct timespec last_beat;
    sb__buf in; /* stdin bytes not yet cut into frames */
} sb_job;

/* Writes one envelope: the header fields of §4, then `rest` (kind, its fields, destination,
 * method, body). Returns 0, or -1 if stdout is gone. */
static inline int sb__send(sb_job *job, const sb__buf *rest) {
    sb__buf env = {0}, wire = {0};
    size_t off = 0;
    int rc = 0;
    sb__varint(&env, job->next_id++);
    sb__varint(&env, 0); /* correlation */
    sb__varint(&env, 0); /* trace: the router assigns one */
    sb__varint(&env, 0); /* deadline_us: none */
    sb__put(&env, "\x01", 1); /* priority normal */
    sb__put(&env, rest->data, rest->len);
    sb__cobs_frame(&env, &wire);
    if (env.failed || wire.failed || wire.len > SB_MAX_FRAME + 2) rc = -1;
    while (rc == 0 && off < wire.len) {
        ssize_t n = write(STDOUT_FILENO, wire.data + off, wire.len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { job->stopping = 1; rc = -1; break; }
        off += (size_t)n;
    }
    free(env.data);
    free(wire.data);
    return rc;
}

/* Reads a varint of at most 64 bits from b[*at..len]; -1 past the end or too long. */
static inline int sb__read_varint(const unsigned char *b, size_t len, size_t *at, uint64_t *v) {
    int shift = 0;
    *v = 0;
    while (*at < len && shift < 64) {
        unsigned char byte = b[(*at)++];
        *v |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) return 0;
        shift += 7;
    }
    return -1;
}

/* A copied, NUL-terminated string field; NULL if it runs past the end. */
static inline char *sb__read_str(const unsigned char *b, size_t len, size_t *at) {
    uint64_t n;
    char *s;
    if (sb__read_varint(b, len, at, &n) != 0 || n > len - *at) return NULL;
    s = (char *)malloc((size_t)n + 1);
    if (s == NULL) return NULL;
    memcpy(s, b + *at, (size_t)n);
    s[n] = '\0';
    *at += (size_t)n;
    return s;
}

/* Welcome's fields (§4): protocol_version, service, instance, heartbeat_ms, settings, params. */
static inline void sb__read_welcome(sb_job *job, const unsigned char *b, size_t len, size_t at) {
    uint64_t v, count, i;
    char *service, *params, *skip;
    if (sb__read_varint(b, len, &at, &v) != 0) return;
    if ((service = sb__read_str(b, len, &at)) == NULL) return;
    if (sb__read_varint(b, len, &at, &v) != 0 || sb__read_varint(b, len, &at, &v) != 0 ||
        sb__read_varint(b, len, &at, &count) != 0) { free(service); return; }
    job->heartbeat_ms = v > 0 && v < 60000 ? (uint32_t)v : 1000;
    for (i = 0; i < count; i++) {
        if ((skip = sb__read_str(b, len, &at)) == NULL) { free(service); return; }
        free(skip);
        if ((skip = sb__read_str(b, len, &at)) == NULL) { free(service); return; }
        free(skip);
    }
    if ((params = sb__read_str(b, len, &at)) == NULL) { free(service); return; }
    if (params[0] == '\0') {
        free(params);
        params = (char *)malloc(3);
        if (params != NULL) memcpy(params, "{}", 3);
    }
    free(job->service);
    free(job->params);
    job->service = service;
    job->params = params;
    job->welcomed = params != NULL;
}

/* Handles one frame's bytes between delimiters (COBS-decoded in place); bad ones are skipped. */
static inline void sb__on_frame(sb_job *job, unsigned char *b, size_t len) {
    size_t i = 0, out = 0, at = 0;
    uint64_t v, kind;
    int k;
    while (i < len) { /* COBS decode, SPEC.md §2 */
        unsigned n = b[i++];
        if (n == 0 || i + n - 1 > len) return;
        memmove(b + out, b + i, n - 1);
        out += n - 1;
        i += n - 1;
        if (n != 0xFF && i < len) b[out++] = 0;
    }
    for (k = 0; k < 4; k++) /* id, correlation, trace, deadline_us */
        if (sb__read_varint(b, out, &at, &v) != 0) return;
    if (at >= out) return;
    at++; /* priority */
    if (sb__read_varint(b, out, &at, &kind) != 0) return;
    if (kind == SB_KIND_WELCOME) sb__read_welcome(job, b, out, at);
    if (kind == SB_KIND_SHUTDOWN) job->stopping = 1;
}

/* Reads what stdin has (waiting up to `timeout_ms`) and handles each complete frame. */
static inline void sb__read_stdin(sb_job *job, int timeout_ms) {
    struct pollfd p;
    unsigned char chunk[4096];
    size_t start = 0, i;
    ssize_t n;
    p.fd = STDIN_FILENO;
    p.events = POLLIN;
    p.revents = 0;
    if (job->stopping && job->in.len == 0 && job->welcomed) return;
    if (poll(&p, 1, timeout_ms) <= 0) return;
    n = read(STDIN_FILENO, chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) { job->stopping = 1; return; } /* EOF: "finish and exit" */
    sb__put(&job->in, chunk, (size_t)n);
    if (job->in.failed) { job->stopping = 1; return; }
    for (i = 0; i < job->in.len; i++) {
        if (job->in.data[i] != 0) continue;
        if (i > start) sb__on_frame(job, job->in.data + start, i - start);
        start = i + 1;
    }
    memmove(job->in.data, job->in.data + start, job->in.len - start);
    job->in.len -= start;
    if (job->in.len > SB_MAX_FRAME) job->in.len = 0; /* an over-long frame: drop it */
}

static inline long sb__ms_since(const struct timespec *then) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(now.tv_sec - then->tv_sec) * 1000 + (now.tv_nsec - then->tv_nsec) / 1000000;
}

/* Beats if a heartbeat is due, handles what stdin has; returns job->stopping. Cheap: call it
 * at least every job->heartbeat_ms. */
static inline int sb_job_poll(sb_job *job) {
    if (sb__ms_since(&job->last_beat) >= (long)job->heartbeat_ms) {
        sb_heartbeat(&job->segment);
        clock_gettime(CLOCK_MONOTONIC, &job->last_beat);
    }
    sb__read_stdin(job, 0);
    return job->stopping;
}

/* Sleeps `ms`, beating and reading stdin meanwhile; returns early (1) on a stop. */
static inline int sb_job_sleep_ms(sb_job *job, long ms) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (!sb_job_poll(job)) {
        long left = ms - sb__ms_since(&start);
        long beat = (long)job->heartbeat_ms - sb__ms_since(&job->last_beat);
        if (left <= 0) return 0;
        sb__read_stdin(job, (int)(left < beat ? left : (beat > 0 ? beat : 0)));
    }
    return 1;
}

/* The handshake: Hello, wait (30 s at most) for Welcome, Ready; state busy. Returns 0; or -1
 * if it failed or the console stopped the job first (then job.stopping is 1: exit 0). */
static inline int sb_job_start(sb_job *job, const char *name, const char *version) {
    sb__buf hello = {0}, ready = {0};
    struct timespec start;
    int rc;
    memset(job, 0, sizeof *job);
    job->next_id = 1;
    job->heartbeat_ms = 1000;
    signal(SIGPIPE, SIG_IGN); /* a closed stdout is a stop, not a death */
    sb_segment_open(&job->segment);
    job->hello_id = job->next_id;
    sb__varint(&hello, SB_KIND_HELLO);
    sb__str(&hello, name);
    sb__str(&hello, version);
    sb__varint(&hello, 1); /* protocol_version */
    sb__varint(&hello, 0); /* methods: a job serves none */
    sb__varint(&hello, 0); /* topics */
    sb__put(&hello, "\0\0\0", 3); /* destination "", method "", body Empty */
    rc = sb__send(job, &hello);
    free(hello.data);
    clock_gettime(CLOCK_MONOTONIC, &start);
    clock_gettime(CLOCK_MONOTONIC, &job->last_beat);
    while (rc == 0 && !job->welcomed && !job->stopping && sb__ms_since(&start) < 30000)
        sb__read_stdin(job, 100);
    if (rc != 0 || !job->welcomed) return -1;
    sb__varint(&ready, SB_KIND_READY);
    sb__put(&ready, "\0\0\0", 3);
    rc = sb__send(job, &ready);
    free(ready.data);
    sb_set_state(&job->segment, SB_BUSY);
    sb_heartbeat(&job->segment);
    return rc;
}

/* Publishes an event on `topic` with a JSON body (NULL: empty); counts it in the segment. */
static inline int sb_job_publish(sb_job *job, const char *topic, const char *json) {
    sb__buf ev = {0};
    int rc;
    sb__varint(&ev, SB_KIND_EVENT);
    sb__str(&ev, topic);
    sb__varint(&ev, 0); /* method "" */
    if (json != NULL) {
        sb__varint(&ev, 2); /* Body::Json */
        sb__str(&ev, json);
    } else {
        sb__varint(&ev, 0);
    }
    rc = sb__send(job, &ev);
    free(ev.data);
    if (rc == 0) sb_counter_add(&job->segment, SB_W_EVENTS_PUBLISHED, 1);
    return rc;
}

static inline void sb__job_close(sb_job *job) {
    sb_set_state(&job->segment, SB_FINISHED);
    free(job->service);
    free(job->params);
    free(job->in.data);
    job->service = job->params = NULL;
    job->in.data = NULL;
    job->in.len = job->in.cap = 0;
}

/* Sends JobResult Ok with `result_json` as its body, and releases the job. Exit 0 after. */
static inline int sb_job_succeed(sb_job *job, const char *result_json) {
    sb__buf res = {0};
    int rc;
    sb__varint(&res, SB_KIND_JOB_RESULT);
    sb__varint(&res, 0); /* Status::Ok */
    sb__put(&res, "\0\0\x02", 3); /* destination "", method "", Body::Json */
    sb__str(&res, result_json ? result_json : "null");
    rc = sb__send(job, &res);
    free(res.data);
    sb__job_close(job);
    return rc;
}

/* Sends JobResult Error(code, message) with an empty body, and releases the job. Exit non-zero
 * after. */
static inline int sb_job_fail(sb_job *job, int code, const char *message) {
    sb__buf res = {0};
    int rc;
    sb__varint(&res, SB_KIND_JOB_RESULT);
    sb__varint(&res, 1); /* Status::Error */
    sb__varint(&res, (uint64_t)code);
    sb__str(&res, message);
    sb__put(&res, "\0\0\0", 3);
    rc = sb__send(job, &res);
    free(res.data);
    sb__job_close(job);
    return rc;
}

/* The integer value of "key" at the top level of a flat JSON object, or `fallback`. A
 * convenience for small parameter objects, not a JSON parser. */
static inline long sb_param_int(const char *json, const char *key, long fallback) {
    size_t klen = strlen(key);
    const char *p = json;
    while (p != NULL && (p = strchr(p, '"')) != NULL) {
        if (strncmp(p + 1, key, klen) == 0 && p[1 + klen] == '"') {
            char *end = NULL;
            long v;
            p += 2 + klen;
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
            if (*p != ':') return fallback;
            v = strtol(p + 1, &end, 10);
            return end == p + 1 ? fallback : v;
        }
        p++;
    }
    return fallback;
}

#endif /* SWITCHBOARD_H */
