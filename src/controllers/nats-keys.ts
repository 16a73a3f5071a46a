import { createAccount } from "@nats-io/nkeys";
import type { AccountKeyStore } from "../broker/nats-accounts.js";
import { BOOTSTRAP_KEY_NAMES, type NatsBootstrapSeeds } from "../broker/nats-claims.js";
import { MANAGED_BY_LABEL, MANAGER } from "../desired/labels.js";
import { KubeApiError, type KubeClient } from "../runtime/kube-client.js";
import { resourcePath } from "../runtime/kube-object.js";
import { Resource } from "./resources.js";
import { base64, type Secret, secretText } from "./secrets.js";

/** Name of the Secret holding one tenant's NATS account seed in the operator's namespace. */
export function natsAccountSecretName(tenant: string): string {
  return `nats-account-${tenant}`;
}

const SEED_KEY = "seed";

/**
 * Tenants' account seeds as Secrets in the operator's namespace, where only the operator reads
 * them. The first writer wins: a create that meets an existing Secret (another replica, an earlier
 * run) reads that one, so a tenant never gets two accounts.
 */
export class SecretAccountKeyStore implements AccountKeyStore {
  constructor(
    private readonly client: KubeClient,
    private readonly namespace: string,
  ) {}

  async existingAccountSeed(tenant: string): Promise<string | undefined> {
    const target = { namespace: this.namespace, name: natsAccountSecretName(tenant) };
    return secretText((await this.client.get(Resource.secret, target)) as Secret | undefined, SEED_KEY);
  }

  async accountSeed(tenant: string): Promise<string> {
    const target = { namespace: this.namespace, name: natsAccountSecretName(tenant) };
    const existing = await this.existingAccountSeed(tenant);
    if (existing) return existing;
    const seed = new TextDecoder().decode(createAccount().getSeed());
    try {
      await this.client.create(Resource.secret, {
        apiVersion: "v1",
        kind: "Secret",
        type: "Opaque",
        metadata: { ...target, labels: { [MANAGED_BY_LABEL]: MANAGER } },
        data: { [SEED_KEY]: base64(seed) },
      });
      return seed;
    } catch (error) {
      if (!(error instanceof KubeApiError && error.code === 409)) throw error;
      const winner = await this.existingAccountSeed(tenant);
      if (!winner) throw error;
      return winner;
    }
  }

  async tenants(): Promise<string[]> {
    const prefix = natsAccountSecretName("");
    const listed = (await this.client.request({
      verb: "list",
      method: "GET",
      path: resourcePath(Resource.secret, { namespace: this.namespace }),
      query: { labelSelector: `${MANAGED_BY_LABEL}=${MANAGER}` },
    })) as { items?: Secret[] };
    return (listed.items ?? []).flatMap((secret) => {
      const name = secret.metadata?.name ?? "";
      return name.startsWith(prefix) && secretText(secret, SEED_KEY) ? [name.slice(prefix.length)] : [];
    });
  }

  async deleteAccount(tenant: string): Promise<void> {
    await this.client.delete(Resource.secret, {
      namespace: this.namespace,
      name: natsAccountSecretName(tenant),
    });
  }
}

/** The deployment's NATS keys from their Secret (one key per name in BOOTSTRAP_KEY_NAMES). */
export async function readBootstrapSeeds(
  client: KubeClient,
  namespace: string,
  name: string,
): Promise<NatsBootstrapSeeds> {
  const secret = (await client.get(Resource.secret, { namespace, name })) as Secret | undefined;
  if (!secret) throw new Error(`NATS keys Secret ${namespace}/${name} not found`);
  const missing = BOOTSTRAP_KEY_NAMES.filter((key) => !secretText(secret, key));
  if (missing.length > 0)
    throw new Error(`NATS keys Secret ${namespace}/${name} lacks ${missing.join(", ")}`);
  return Object.fromEntries(
    BOOTSTRAP_KEY_NAMES.map((key) => [key, secretText(secret, key) ?? ""]),
  ) as NatsBootstrapSeeds;
}
