import type { KubeObject } from "../runtime/kube-object.js";

/** A Secret as the informers cache it: `data` values are base64. */
export type Secret = KubeObject & { data?: Record<string, string>; type?: string };

/** One key of a Secret as text, or undefined when absent. */
export function secretText(secret: Secret | undefined, key: string): string | undefined {
  const value = secret?.data?.[key];
  return value === undefined ? undefined : Buffer.from(value, "base64").toString("utf8");
}

export function base64(text: string): string {
  return Buffer.from(text).toString("base64");
}
