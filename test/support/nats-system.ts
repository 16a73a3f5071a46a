import { decode } from "@nats-io/jwt";
import { connect, jwtAuthenticator } from "@nats-io/transport-node";
import { z } from "zod";
import { bootstrapKeys, bootstrapUserJwt } from "../../src/broker/nats-claims.js";
import type { NatsCluster } from "../harness/nats.js";

const accountLimits = z.object({ nats: z.object({ limits: z.object({ conn: z.number() }) }) });

/** Asks every server of the cluster as the system user; returns each server's raw answer. */
async function askEveryServer(
  cluster: Pick<NatsCluster, "urls" | "seeds" | "nodes">,
  subject: string,
): Promise<string[]> {
  const keys = bootstrapKeys(cluster.seeds);
  const nc = await connect({
    servers: [...cluster.urls],
    authenticator: jwtAuthenticator(await bootstrapUserJwt(keys, "systemUser"), keys.systemUser.getSeed()),
  });
  try {
    const replies = await nc.requestMany(subject, "", {
      strategy: "count",
      maxMessages: cluster.nodes.length,
      maxWait: 5_000,
    });
    const answers: string[] = [];
    for await (const reply of replies) answers.push(reply.string());
    return answers;
  } finally {
    await nc.close();
  }
}

/**
 * The connection limit in the JWT of `account` that each server's resolver holds, one entry per
 * server (`undefined` where it holds none): every server answers from its own store.
 */
export async function accountConnLimits(
  cluster: Pick<NatsCluster, "urls" | "seeds" | "nodes">,
  account: string,
): Promise<Array<number | undefined>> {
  const jwts = await askEveryServer(cluster, `$SYS.REQ.ACCOUNT.${account}.CLAIMS.LOOKUP`);
  return jwts.map((jwt) => (jwt ? accountLimits.parse(decode(jwt)).nats.limits.conn : undefined));
}

const jszAnswer = z.object({
  data: z.object({ id: z.string() }).nullish(),
  error: z.object({ description: z.string() }).optional(),
});

/**
 * Per server, whether it has `account` loaded with JetStream on ("on"), or why not (its own
 * words: the account not found, or not JetStream enabled). Asking loads nothing.
 */
export async function accountJetStream(
  cluster: Pick<NatsCluster, "urls" | "seeds" | "nodes">,
  account: string,
): Promise<string[]> {
  const answers = await askEveryServer(cluster, `$SYS.REQ.ACCOUNT.${account}.JSZ`);
  return answers.map((answer) => {
    const { data, error } = jszAnswer.parse(JSON.parse(answer));
    return data?.id === account ? "on" : (error?.description ?? "no answer");
  });
}
