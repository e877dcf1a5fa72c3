// The conformance job in Java (tests/sdk_conformance.rs runs the same job in every SDK).
//
// Params {"steps": N, "pace_ms": M, "pad": P} (defaults 10, 100, 0): one task "conformance",
// then N times: sleep M ms, publish `conformance.step`, report i/N. Result
// {"sdk": "java", "service": <name from Welcome>, "steps": N}, plus "pad": P x's when P > 0. Stopped mid-run, it cancels the
// task, answers `unavailable` and exits 1.
//
// javac -d out sdks/java/Switchboard.java sdks/java/ConformanceJob.java && java -cp out ConformanceJob

public final class ConformanceJob {
    public static void main(String[] args) throws Exception {
        Switchboard.Job job = Switchboard.Job.start("conformance", "0.1.0");
        if (job.stopping()) System.exit(0);
        long steps = Math.max(0, Switchboard.paramLong(job.params(), "steps", 10));
        long pace = Switchboard.paramLong(job.params(), "pace_ms", 100);
        Switchboard.Task task = job.task("conformance", steps);
        long step = 0;
        while (step < steps && !job.sleep(pace)) {
            step++;
            job.publish("conformance.step", "{\"step\":" + step + "}");
            task.set(step, steps);
        }
        if (job.stopping()) {
            task.finish(Switchboard.TASK_CANCELLED);
            job.fail(Switchboard.UNAVAILABLE, "stopped at step " + step + " of " + steps);
            System.exit(1);
        }
        task.finish(Switchboard.TASK_DONE);
        long pad = Switchboard.paramLong(job.params(), "pad", 0);
        String padding = pad > 0 ? ",\"pad\":\"" + "x".repeat((int) pad) + "\"" : "";
        job.succeed("{\"sdk\":\"java\",\"service\":\"" + job.service() + "\",\"steps\":" + steps + padding + "}");
        System.exit(0);
    }
}
