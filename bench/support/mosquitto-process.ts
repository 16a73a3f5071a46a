import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { BrokerDevice } from "../../src/broker/adapter.js";
import { desiredDevice } from "../../src/broker/desired.js";
import { DEFAULT_OWNER_PREFIX } from "../../src/broker/mosquitto-dynsec.js";
import { observationOf } from "../../src/broker/plan.js";
import {
  adminConnection,
  type Broker,
  mosquittoBuild,
  startMosquitto,
  waitUntilAdminConnects,
} from "../../test/harness/mosquitto.js";
import type { IntermediateCA } from "../../test/harness/pki.js";
import { type ManagedProcess, startProcess } from "../../test/harness/process.js";

/** Starts mosquitto again on a broker's config (same ports, same dynsec file) after broker.stop(). */
export async function restartMosquitto(broker: Broker): Promise<ManagedProcess> {
  const process = startProcess("mosquitto", (await mosquittoBuild()).broker, ["-c", broker.configFile], {
    logFile: join(dirname(broker.configFile), "mosquitto.log"),
  });
  await waitUntilAdminConnects(adminConnection(broker), process);
  return process;
}

interface DynsecFileEntries {
  readonly roles: ReadonlyArray<{ rolename: string; acls: readonly object[] }>;
  readonly clients: ReadonlyArray<{
    username: string;
    textname: string;
    roles: ReadonlyArray<{ rolename: string }>;
  }>;
}

/** Adds roles and clients to a stopped broker's dynsec file: preloading a fleet without paying per command. */
async function appendToDynsecFile(dynsecFile: string, entries: DynsecFileEntries): Promise<void> {
  const state = JSON.parse(await readFile(dynsecFile, "utf8")) as { roles: object[]; clients: object[] };
  state.roles.push(...entries.roles);
  state.clients.push(...entries.clients);
  await writeFile(dynsecFile, JSON.stringify(state));
}

/**
 * A broker whose dynsec file already holds `devices` as the adapter would have created them:
 * a fleet without paying one paced command per entry.
 */
export async function startMosquittoWithFleet(
  dir: string,
  ca: IntermediateCA,
  devices: readonly BrokerDevice[],
): Promise<{ broker: Broker; process: ManagedProcess }> {
  const broker = await startMosquitto({ stateDir: dir, deviceRootCA: ca.issuer, deviceCA: ca });
  await broker.stop();
  const observed = devices.map((device) => observationOf(desiredDevice(DEFAULT_OWNER_PREFIX, device)));
  await appendToDynsecFile(broker.dynsecFile, {
    roles: observed.flatMap((o) => (o.role ? [o.role] : [])),
    clients: observed.flatMap((o) =>
      o.clients.map((c) => ({
        username: c.username,
        textname: c.textname ?? "",
        roles: c.roles.map((rolename) => ({ rolename })),
      })),
    ),
  });
  return { broker, process: await restartMosquitto(broker) };
}
