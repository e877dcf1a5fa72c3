// The conformance job in Node.js (tests/sdk_conformance.rs runs the same job in every SDK).
//
// Params {"steps": N, "pace_ms": M, "pad": P} (defaults 10, 100, 0): one task "conformance",
// then N times: wait M ms, publish `conformance.step`, report i/N. Result
// {"sdk": "node", "service": <name from Welcome>, "steps": N}, plus "pad": P x's when P > 0. Stopped mid-run, it cancels the
// task, answers `unavailable` and exits 1.
//
// node sdks/node/conformance_job.js
'use strict';

const sb = require('./switchboard');

(async () => {
  const job = await sb.startJob('conformance', '0.1.0');
  if (job.stopping) process.exit(0);
  const steps = Math.max(0, sb.paramInt(job.params, 'steps', 10));
  const pace = sb.paramInt(job.params, 'pace_ms', 100);
  const task = job.task('conformance', steps);
  let step = 0;
  while (step < steps && !(await job.sleep(pace))) {
    step++;
    job.publish('conformance.step', { step });
    task.set(step, steps);
  }
  if (job.stopping) {
    task.finish(sb.TASK_CANCELLED);
    job.fail(sb.UNAVAILABLE, `stopped at step ${step} of ${steps}`);
    process.exit(1);
  }
  task.finish(sb.TASK_DONE);
  const pad = sb.paramInt(job.params, 'pad', 0);
  const result = { sdk: 'node', service: job.service, steps };
  if (pad > 0) result.pad = 'x'.repeat(pad);
  job.succeed(result);
  process.exit(0);
})().catch((err) => {
  process.stderr.write(`conformance job: ${err.stack || err}\n`);
  process.exit(1);
});
