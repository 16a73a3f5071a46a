/**
 * Provisions devices through the adapter and prints one line per broker command, so that a test can
 * SIGKILL it in the middle. Input: one JSON argument { connection, ownerPrefix, devices }.
 */
import { z } from "zod";
import type { BrokerDevice } from "../../src/broker/adapter.js";
import { MosquittoDynsecAdapter } from "../../src/broker/mosquitto-dynsec.js";

const inputSchema = z.object({
  connection: z.object({
    host: z.string(),
    port: z.number(),
    caFile: z.string(),
    certFile: z.string(),
    keyFile: z.string(),
    passphrase: z.string().optional(),
  }),
  ownerPrefix: z.string(),
  devices: z.array(z.custom<BrokerDevice>()),
});
const input = inputSchema.parse(JSON.parse(process.argv[2] ?? "{}"));
const adapter = new MosquittoDynsecAdapter({
  connection: input.connection,
  ownerPrefix: input.ownerPrefix,
  onCommand: (event) => process.stdout.write(`${event.command} ${event.owner}\n`),
});
await Promise.all(input.devices.map((device) => adapter.applyDevice(device)));
await adapter.close();
