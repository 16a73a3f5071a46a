import { DEFAULT_ACL_ACCESS } from "./desired.js";
import { BROKER_LOG_TOPIC } from "./log-events.js";

/** The admin role's grants: the dynamic-security API, and every topic so it can clear what a deleted tenant left. */
const ADMIN_ACLS = [
  ...["publishClientSend", "publishClientReceive", "subscribePattern"].map((acltype) => ({
    acltype,
    topic: "$CONTROL/dynamic-security/#",
    allow: true,
  })),
  ...["publishClientSend", "publishClientReceive", "subscribePattern", "unsubscribePattern"].map(
    (acltype) => ({ acltype, topic: "#", allow: true }),
  ),
  // The broker's log, for security events: `#` does not match `$SYS/…`.
  ...["publishClientReceive", "subscribePattern"].map((acltype) => ({
    acltype,
    topic: BROKER_LOG_TOPIC,
    allow: true,
  })),
];

/**
 * The dynamic-security state file a new broker starts from, in place of `mosquitto_ctrl dynsec init`:
 * the admin client has no password (it logs in with its certificate on the admin listener only, so
 * no password listener can accept it), and the defaults already deny delivery outside a grant.
 */
export function initialDynsecState(adminUsername: string): string {
  return `${JSON.stringify(
    {
      clients: [
        { username: adminUsername, textname: "iot-tenant-operator admin", roles: [{ rolename: "admin" }] },
      ],
      roles: [{ rolename: "admin", acls: ADMIN_ACLS }],
      defaultACLAccess: DEFAULT_ACL_ACCESS,
    },
    null,
    2,
  )}\n`;
}
