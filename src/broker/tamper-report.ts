import { z } from "zod";

/**
 * A device reports a security incident about itself by publishing a JSON tamperReport on its
 * reserved topic `<topicRoot>/devices/<device>/security/report` (QoS 0 or 1, not retained). Who
 * reported it is never read from the payload: every device may publish on its own reserved topic
 * and no device on another's (deviceAcls), so the topic names the authenticated reporter.
 */

const RESERVED_LEVELS = "security/report";
/** Topic roots have 1 to 8 levels (TOPIC_ROOT_PATTERN); the admin's filters cover each depth. */
const TOPIC_ROOT_MAX_LEVELS = 8;
export const TAMPER_REPORT_MAX_BYTES = 4_096;

export const tamperReportSchema = z
  .object({
    type: z
      .enum(["enclosureOpened", "firmwareMismatch", "debugPortActive", "other"])
      .describe("What the device detected."),
    message: z.string().max(256).optional().describe("Free text for the administrator; never a secret."),
    observedAt: z.iso.datetime({ offset: true }).optional().describe("When the device saw it (RFC 3339)."),
  })
  .strict()
  .describe("A security incident reported by a device about itself.");
export type TamperReport = z.infer<typeof tamperReportSchema>;

/** The device's own reserved topic. */
export function tamperReportTopic(topicRoot: string, device: string): string {
  return `${topicRoot}/devices/${device}/${RESERVED_LEVELS}`;
}

/** Every device's reserved topic under one root: what no device may publish on but its own. */
export function tamperReportTopicOfAnyDevice(topicRoot: string): string {
  return `${topicRoot}/devices/+/${RESERVED_LEVELS}`;
}

/** The admin's subscriptions: the reserved topics under roots of every allowed depth. */
export const TAMPER_REPORT_FILTERS: readonly string[] = Array.from(
  { length: TOPIC_ROOT_MAX_LEVELS },
  (_, i) =>
    tamperReportTopicOfAnyDevice(
      Array(i + 1)
        .fill("+")
        .join("/"),
    ),
);

/** The root and device a reserved topic names, or undefined for any other topic. */
export function parseTamperReportTopic(topic: string): { topicRoot: string; device: string } | undefined {
  const levels = topic.split("/");
  const [devices, device] = levels.slice(-4, -2);
  const topicRoot = levels.slice(0, -4).join("/");
  if (levels.length < 5 || devices !== "devices" || !device || !topic.endsWith(`/${RESERVED_LEVELS}`))
    return undefined;
  return { topicRoot, device };
}

/** The report in a payload, or why it is none. */
export function parseTamperReport(
  payload: Buffer,
): { ok: true; report: TamperReport } | { ok: false; problem: string } {
  if (payload.length > TAMPER_REPORT_MAX_BYTES)
    return { ok: false, problem: `larger than ${TAMPER_REPORT_MAX_BYTES} bytes` };
  let json: unknown;
  try {
    json = JSON.parse(payload.toString("utf8"));
  } catch {
    return { ok: false, problem: "not JSON" };
  }
  const parsed = tamperReportSchema.safeParse(json);
  return parsed.success
    ? { ok: true, report: parsed.data }
    : { ok: false, problem: z.prettifyError(parsed.error) };
}
