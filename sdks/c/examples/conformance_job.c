/* The conformance job in C (tests/sdk_conformance.rs runs the same job in every SDK).
 *
 * Params: {"steps": N, "pace_ms": M, "pad": P} (defaults 10, 100, 0). Claims one task
 * "conformance", then N times: sleep M ms (beating), publish `conformance.step`, report i/N.
 * Result: {"sdk": "c", "service": <name from Welcome>, "steps": N} plus "pad": P x's when P > 0
 * (a long frame, so that COBS's full blocks are exercised). On Shutdown or stdin EOF it marks
 * the task cancelled, answers `unavailable` and exits 1.
 *
 * Build: gcc -Wall -Werror -std=c99 -I sdks/c sdks/c/examples/conformance_job.c -o job
 */
#include "switchboard.h"

#include <stdio.h>

/* The result object; `pad` x's make its frame longer than one COBS block. */
static char *result_json(const char *service, long steps, long pad) {
    size_t cap = 128 + strlen(service) + (size_t)(pad > 0 ? pad : 0);
    char *json = (char *)malloc(cap);
    int n;
    if (json == NULL) return NULL;
    n = snprintf(json, cap, "{\"sdk\":\"c\",\"service\":\"%s\",\"steps\":%ld", service, steps);
    if (pad > 0) {
        n += snprintf(json + n, cap - (size_t)n, ",\"pad\":\"");
        memset(json + n, 'x', (size_t)pad);
        n += (int)pad;
        json[n++] = '"';
    }
    json[n++] = '}';
    json[n] = '\0';
    return json;
}

int main(void) {
    sb_job job;
    sb_task task;
    char json[256];
    long steps, pace, pad, i;
    char *result;
    int rc;
    if (sb_job_start(&job, "conformance", "0.1.0") != 0) return job.stopping ? 0 : 1;
    steps = sb_param_int(job.params, "steps", 10);
    pace = sb_param_int(job.params, "pace_ms", 100);
    pad = sb_param_int(job.params, "pad", 0);
    if (pad < 0 || pad > 100000) pad = 0;
    if (steps < 0) steps = 0;
    sb_task_claim(&job.segment, &task, "conformance", (uint64_t)steps);
    for (i = 1; i <= steps; i++) {
        if (sb_job_sleep_ms(&job, pace)) break;
        snprintf(json, sizeof json, "{\"step\":%ld}", i);
        sb_job_publish(&job, "conformance.step", json);
        sb_task_set(&task, (uint64_t)i, (uint64_t)steps);
    }
    if (job.stopping) {
        sb_task_finish(&task, SB_TASK_CANCELLED);
        snprintf(json, sizeof json, "stopped at step %ld of %ld", i - 1, steps);
        sb_job_fail(&job, SB_UNAVAILABLE, json);
        return 1;
    }
    sb_task_finish(&task, SB_TASK_DONE);
    result = result_json(job.service, steps, pad);
    if (result == NULL) return sb_job_fail(&job, SB_INTERNAL, "out of memory"), 1;
    rc = sb_job_succeed(&job, result);
    free(result);
    return rc == 0 ? 0 : 1;
}
