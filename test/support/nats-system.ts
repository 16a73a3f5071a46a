import { decode } from "@nats-io/jwt";
import { connect, jwtAuthenticator } from "@nats-io/transport-node";
import { z } from "zod";
import { bootstrapKeys, bootstrapUserJwt } from "../../src/broker/nats-claims.js";
import type { NatsCluster } from "../harness/nats.js";

const accountLimits = z.object({ nats: z.object({ limits: z.object({ conn: z.number() }) }) });

/**
 * The connection limit in the JWT of `account` that each server's resolver holds, one entry per
 * server (`undefined` where it holds none): asked as the system user, every server answers from its own store.
 */
export async function accountConnLimits(
  cluster: Pick<NatsCluster, "urls" | "seeds" | "nodes">,
  account: string,
): Promise<Array<number | undefined>> {
  const keys = bootstrapKeys(cluster.seeds);
  const nc = await connect({
    servers: [...cluster.urls],
    authenticator: jwtAuthenticator(await bootstrapUserJwt(keys, "systemUser"), keys.systemUser.getSeed()),
  });
  try {
    const replies = await nc.requestMany(`$SYS.REQ.ACCOUNT.${account}.CLAIMS.LOOKUP`, "", {
      strategy: "count",
      maxMessages: cluster.nodes.length,
      maxWait: 5_000,
    });
    const limits: Array<number | undefined> = [];
    for await (const reply of replies) {
      const jwt = reply.string();
      limits.push(jwt ? accountLimits.parse(decode(jwt)).nats.limits.conn : undefined);
    }
    return limits;
  } finally {
    await nc.close();
  }
}
