import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import {
  connectWithCertificate,
  publishCode,
  receivedBeforeSentinel,
  subscribeCodes,
} from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyReadyTenant,
  deviceTls,
  readyDevice,
  startTestOperator,
} from "../../test/support/operator.js";
import type { RunningOperator } from "../operator.js";

/**
 * Nothing a deleted tenant left under its topic root reaches the next tenant given that root, end to
 * end through the operator, cert-manager and the real Mosquitto. Client ids, resumed sessions and
 * password rotation are in the shared isolation suite (src/verify/shared-isolation.int.test.ts),
 * which runs against every backend.
 */

describe("what a deleted tenant leaves on the broker", () => {
  let operator: RunningOperator;
  beforeAll(async () => {
    operator = await startTestOperator();
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("purges retained messages under a deleted tenant's topic root before another tenant gets it (I2)", async () => {
    const [first, second] = [uniqueName("rx"), uniqueName("ry")];
    const topicRoot = `fleet/${uniqueName("root")}`;
    await applyReadyTenant(first, { broker: { topicRoot } });
    await applyDevice(first, "sensor");
    await readyDevice(first, "sensor");
    const old = await connectWithCertificate(await deviceTls(first, "sensor"));
    expect(await publishCode(old, `${topicRoot}/devices/sensor/state`, "left behind", true)).toBeLessThan(
      128,
    );
    await old.endAsync(true);

    expect((await kubectl(["delete", "tenant", first, "--wait=false"])).ok).toBe(true);
    await eventually(
      `Tenant ${first} gone`,
      async () => {
        const result = await kubectl(["get", "tenant", first]);
        return !result.ok && /NotFound/.test(result.stderr) ? true : undefined;
      },
      120_000,
    );

    await applyReadyTenant(second, { broker: { topicRoot } });
    await applyDevice(second, "sensor");
    await readyDevice(second, "sensor");
    const tls = await deviceTls(second, "sensor");
    const client = await connectWithCertificate(tls);
    try {
      const sentinel = `${topicRoot}/devices/sensor/sentinel`;
      const seen = await receivedBeforeSentinel(client, sentinel, async () => {
        expect(await subscribeCodes(client, `${topicRoot}/devices/sensor/#`)).toEqual([1]);
        await publishCode(client, sentinel, "s");
      });
      expect(seen).toEqual([]);

      // Positive twin: the new tenant's own retained message is kept and delivered.
      expect(await publishCode(client, `${topicRoot}/devices/sensor/state`, "mine", true)).toBeLessThan(128);
      const fresh = await connectWithCertificate(tls);
      const retained = new Promise((resolve) => fresh.once("message", (t, p) => resolve(`${t}=${p}`)));
      expect(await subscribeCodes(fresh, `${topicRoot}/devices/sensor/state`)).toEqual([1]);
      expect(await retained).toBe(`${topicRoot}/devices/sensor/state=mine`);
      await fresh.endAsync(true);
    } finally {
      await client.endAsync(true);
      await kubectl(["delete", "tenant", second, "--wait=false"]);
    }
  });
});
