import { createHash, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import type { BrokerDevice } from "./adapter.js";
import { type DevicePermissions, devicePermissions } from "./nats-subjects.js";

/** The part of nats-server's authorization request (`$SYS.REQ.USER.AUTH`) the decision reads. */
export const authorizationRequestSchema = z.object({
  server_id: z.object({ id: z.string().min(1), name: z.string() }),
  user_nkey: z.string().min(1),
  client_info: z.object({
    type: z.string().optional(),
    mqtt_id: z.string().optional(),
  }),
  connect_opts: z.object({
    user: z.string().optional(),
    pass: z.string().optional(),
  }),
});
export type AuthorizationRequest = z.infer<typeof authorizationRequestSchema>;

export type LoginDecision =
  | {
      readonly allow: true;
      readonly device: BrokerDevice;
      readonly permissions: DevicePermissions;
    }
  | { readonly allow: false; readonly reason: string };

function sameSecret(given: string, expected: string): boolean {
  const digest = (text: string) => createHash("sha256").update(text, "utf8").digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * Whether a login may proceed, and as whom. The broker asks for every connection, so this is the
 * whole policy: only MQTT clients; the username names a device the operator currently serves
 * (enabled, tenant not suspended) with that password; the MQTT client id is the username, so no
 * device can take over or knock off another's session; the device gets exactly its own grant.
 */
export function decideLogin(
  request: AuthorizationRequest,
  deviceByUsername: (username: string) => BrokerDevice | undefined,
): LoginDecision {
  if (request.client_info.type !== "mqtt") return { allow: false, reason: "only MQTT devices log in here" };
  const username = request.connect_opts.user ?? "";
  const device = deviceByUsername(username);
  const { credentials } = device ?? {};
  if (!device || credentials?.type !== "password") return { allow: false, reason: "unknown user" };
  if (!sameSecret(request.connect_opts.pass ?? "", credentials.password))
    return { allow: false, reason: "unknown user" };
  if (!device.enabled || device.suspended) return { allow: false, reason: "device is cut off" };
  if (request.client_info.mqtt_id !== username)
    return { allow: false, reason: "the MQTT client id must be the device's username" };
  return { allow: true, device, permissions: devicePermissions(device) };
}
