import { inject } from "vitest";
import { type Outcome, type Probe, type ProbeSpec, probesOn } from "../harness/netprobe.js";
import { kubectl } from "./kubectl.js";

export { enforced, type Outcome, PROBE_PORT, type Probe, type ProbeSpec } from "../harness/netprobe.js";

/** The probes of test/harness/netprobe.ts on the run's stack. */
const probes = () => probesOn(inject("stack"), kubectl);

export const startProbes = (specs: readonly ProbeSpec[]): Promise<Probe[]> => probes().start(specs);

export const inProbe = (from: Probe, command: readonly string[]) => probes().exec(from, command);

export const connect = (
  from: Probe,
  protocol: "tcp" | "udp" | "http",
  address: string,
  port?: number,
): Promise<Outcome> => probes().connect(from, protocol, address, port);
