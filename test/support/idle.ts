import type { OperatorMetrics } from "../../src/observability/metrics.js";

/** Every sample of the counters whose change means the operator did something. */
async function activity(metrics: OperatorMetrics): Promise<string> {
  const samples = await Promise.all(
    [metrics.reconcileTotal, metrics.brokerCommands, metrics.apiRequests].map(
      async (m) => (await m.get()).values,
    ),
  );
  return JSON.stringify(samples.flat().map((s) => [s.labels, s.value]));
}

/**
 * Resolves once the operator has nothing to do: no key queued, no reconcile running, and no
 * reconcile, broker command or API request counted over `quietPolls` consecutive polls. A condition
 * wait for "converged", not a fixed sleep; delayed requeues (requeueAfter) are not seen.
 */
export async function untilIdle(
  metrics: OperatorMetrics,
  options: { timeoutMs?: number; quietPolls?: number; pollMs?: number } = {},
): Promise<void> {
  const { timeoutMs = 60_000, quietPolls = 3, pollMs = 250 } = options;
  const deadline = Date.now() + timeoutMs;
  let last = "";
  let quiet = 0;
  while (quiet < quietPolls) {
    if (Date.now() > deadline) throw new Error(`operator not idle after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
    const [depth, workers] = await Promise.all([metrics.queueDepth.get(), metrics.activeWorkers.get()]);
    const busy = [...depth.values, ...workers.values].some((sample) => sample.value !== 0);
    const now = await activity(metrics);
    quiet = !busy && now === last ? quiet + 1 : 0;
    last = now;
  }
}
