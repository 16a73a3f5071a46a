import { z } from "zod";
import { kube } from "./openapi.js";

/**
 * MQTT topic grammar for the API. Each pattern is written once and used twice: by zod (JavaScript
 * regex, `u` flag so classes match code points) and by CEL (RE2) in the CRD; both engines read
 * these patterns the same way, which the property-based integration test checks.
 */

export const TOPIC_FILTER_MAX_LENGTH = 256;
export const TOPIC_FILTER_MAX_DEPTH = 16;

/** Any character allowed inside a level: not a separator, not a wildcard, no NUL or other control character. */
const LEVEL_CHAR = String.raw`[^/+#\x00-\x1f\x7f]`;
const FIRST_LEVEL = String.raw`(\+|[^$/+#\x00-\x1f\x7f]${LEVEL_CHAR}*)`;
const LEVEL = String.raw`(\+|${LEVEL_CHAR}+)`;

/** Non-empty levels, `+` only as a whole level, `#` only as the whole last level, no leading `$`. */
export const TOPIC_FILTER_PATTERN = `^(#|${FIRST_LEVEL}(/${LEVEL})*(/#)?)$`;
/** Matches a filter with more than TOPIC_FILTER_MAX_DEPTH levels. */
export const TOPIC_FILTER_TOO_DEEP_PATTERN = `^([^/]*/){${TOPIC_FILTER_MAX_DEPTH}}`;

const topicFilterGrammar = new RegExp(TOPIC_FILTER_PATTERN, "u");
const topicFilterTooDeep = new RegExp(TOPIC_FILTER_TOO_DEEP_PATTERN, "u");

const grammarMessage =
  "must be an MQTT topic filter relative to the tenant's topic root: non-empty levels separated by '/', " +
  "'+' and '#' only as whole levels, '#' only as the last level, no leading '$', no NUL or control characters";
const depthMessage = `must have at most ${TOPIC_FILTER_MAX_DEPTH} levels`;
const lengthMessage = `must be 1 to ${TOPIC_FILTER_MAX_LENGTH} characters long`;

/** Why a relative topic filter is refused, or undefined when it is valid; the same verdict as the CRD's rules. */
export function topicFilterProblem(filter: string): string | undefined {
  const length = [...filter].length;
  if (length < 1 || length > TOPIC_FILTER_MAX_LENGTH) return lengthMessage;
  if (!topicFilterGrammar.test(filter)) return grammarMessage;
  if (topicFilterTooDeep.test(filter)) return depthMessage;
  return undefined;
}

export const topicFilterSchema = kube(
  z
    .string()
    .superRefine((filter, context) => {
      const problem = topicFilterProblem(filter);
      if (problem) context.addIssue({ code: "custom", message: problem });
    })
    .describe(
      "An MQTT topic filter relative to the tenant's topic root: 'devices/sensor-1/#' means " +
        "'<topicRoot>/devices/sensor-1/#', and '#' means the tenant's whole tree, never more. " +
        "'+' matches one level, '#' the rest; both only as whole levels.",
    ),
  {
    // The API server counts code points, as topicFilterProblem does; zod's .max() would count UTF-16 units.
    openApi: { minLength: 1, maxLength: TOPIC_FILTER_MAX_LENGTH },
    validations: [
      { rule: `self.matches(r'${TOPIC_FILTER_PATTERN}')`, message: grammarMessage },
      { rule: `!self.matches(r'${TOPIC_FILTER_TOO_DEEP_PATTERN}')`, message: depthMessage },
    ],
  },
);

export const TOPIC_ROOT_MAX_LENGTH = 128;
/** Roots are plain: no wildcards, no '$', no '%' (Mosquitto's ACL file substitutes %u and %c), no spaces. */
export const TOPIC_ROOT_PATTERN = "^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,7}$";

export const topicRootSchema = z
  .string()
  .min(1)
  .max(TOPIC_ROOT_MAX_LENGTH)
  .regex(new RegExp(TOPIC_ROOT_PATTERN))
  .describe(
    "The MQTT topic prefix under which all of the tenant's traffic lives, e.g. 'tenants/acme'. " +
      "1 to 8 levels of letters, digits, '.', '_' and '-'. Defaults to 'tenants/<tenant name>'. " +
      "Immutable: devices and applications are built around it. Must not equal or contain another tenant's root; " +
      "the operator reports that as TopicRootConflict.",
  );

export const DEFAULT_TOPIC_ROOT_PREFIX = "tenants/";

export function defaultTopicRoot(tenantName: string): string {
  return `${DEFAULT_TOPIC_ROOT_PREFIX}${tenantName}`;
}
