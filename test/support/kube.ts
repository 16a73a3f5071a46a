import { KubeConfig, KubernetesObjectApi } from "@kubernetes/client-node";
import { inject } from "vitest";

/** A client configuration for the stack's cluster admin (system:masters). */
export function adminKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(inject("stack").kubeconfig);
  return kc;
}

export function objectApi(kc: KubeConfig = adminKubeConfig()): KubernetesObjectApi {
  return KubernetesObjectApi.makeApiClient(kc);
}

/** A name no other test uses, so integration tests can share one cluster. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
}

export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `${what}: not true after ${timeoutMs} ms${lastError instanceof Error ? ` (${lastError.message})` : ""}`,
  );
}

/** The stack's cluster as `user` (impersonated by the admin), for requests a tenant admin sends in quick succession. */
export function impersonatedKubeConfig(user: string): KubeConfig {
  const kc = adminKubeConfig();
  const current = kc.getCurrentUser();
  if (!current) throw new Error("the stack's kubeconfig has no current user");
  kc.users = kc.users.map((u) => (u.name === current.name ? { ...u, impersonateUser: user } : u));
  return kc;
}
