/* The conformance job in C (tests/sdk_conformance.rs runs the same job in every SDK).
 *
 * Params: {"steps": N, "pace_ms": M} (defaults 10 and 100). Claims one task "conformance",
 * then N times: sleep M ms (beating), publish `conformance.step`, report i/N. Result:
 * {"sdk": "c", "service": <name from Welcome>, "steps": N}. On Shutdown or stdin EOF it marks
 * the task cancelled, answers `unavailable` and exits 1.
 *
 * Build: gcc -Wall -Werror -std=c99 -I sdks/c sdks/c/examples/conformance_job.c -o job
 */
#include "switchboard.h"

#include <stdio.h>

int main(void) {
    sb_job job;
    sb_task task;
    char json[256];
    long steps, pace, i;
    if (sb_job_start(&job, "conformance", "0.1.0") != 0) return job.stopping ? 0 : 1;
    steps = sb_param_int(job.params, "steps", 10);
    pace = sb_param_int(job.params, "pace_ms", 100);
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
    snprintf(json, sizeof json, "{\"sdk\":\"c\",\"service\":\"%s\",\"steps\":%ld}",
             job.service, steps);
    return sb_job_succeed(&job, json) == 0 ? 0 : 1;
}
