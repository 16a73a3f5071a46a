import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import {
  adminConnection,
  type Broker,
  mosquittoBinary,
  waitUntilAdminConnects,
} from "../../test/harness/mosquitto.js";
import { type ManagedProcess, startProcess } from "../../test/harness/process.js";

/** Starts mosquitto again on a broker's config (same ports, same dynsec file) after broker.stop(). */
export async function restartMosquitto(broker: Broker): Promise<ManagedProcess> {
  const process = startProcess("mosquitto", mosquittoBinary(), ["-c", broker.configFile], {
    logFile: join(dirname(broker.configFile), "mosquitto.log"),
  });
  await waitUntilAdminConnects(adminConnection(broker), process);
  return process;
}

export interface DynsecFileEntries {
  readonly roles: ReadonlyArray<{ rolename: string; acls: readonly object[] }>;
  readonly clients: ReadonlyArray<{
    username: string;
    textname: string;
    roles: ReadonlyArray<{ rolename: string }>;
  }>;
}

/** Adds roles and clients to a stopped broker's dynsec file: preloading a fleet without paying per command. */
export async function appendToDynsecFile(dynsecFile: string, entries: DynsecFileEntries): Promise<void> {
  const state = JSON.parse(await readFile(dynsecFile, "utf8")) as { roles: object[]; clients: object[] };
  state.roles.push(...entries.roles);
  state.clients.push(...entries.clients);
  await writeFile(dynsecFile, JSON.stringify(state));
}
