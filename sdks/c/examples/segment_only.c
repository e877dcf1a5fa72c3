/* A plain program that only writes its segment (no frames): the task label cut at a UTF-8
 * boundary, a backlog, a beat. protocol/tests/launcher.rs and services/python/tests check
 * what a reader sees.
 *
 * Build: gcc -Wall -Werror -std=c99 -I sdks/c sdks/c/examples/segment_only.c -o segment_only
 */
#include "switchboard.h"

int main(void) {
    sb_segment segment;
    sb_task task;
    char label[102];
    int i;
    if (sb_segment_open(&segment) != 0) return 2;
    /* "a" and 50 two-byte characters, 101 bytes: a cut at 64 bytes would split the 32nd
     * character, so the label keeps "a" and 31 of them (63 bytes). */
    label[0] = 'a';
    for (i = 0; i < 50; i++) memcpy(label + 1 + 2 * i, "\xc3\xa9", 2);
    label[101] = '\0';
    sb_task_claim(&segment, &task, label, 9);
    sb_task_set(&task, 4, 9);
    sb_set_backlog(&segment, 7, 1234);
    sb_heartbeat(&segment);
    sb_set_state(&segment, SB_FINISHED);
    return 0;
}
