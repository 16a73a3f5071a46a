/** The API group, version and the names the API reserves; everything else in src/api builds on these. */
export const API_GROUP = "iot.tenant-operator.io";
export const API_VERSION_NAME = "v1alpha1";
export const API_VERSION = `${API_GROUP}/${API_VERSION_NAME}`;
export const API_CATEGORY = "iot";

/** The operator's own namespace unless configured otherwise; it holds tenant CAs and device certificates. */
export const OPERATOR_NAMESPACE = "iot-system";

/**
 * Namespaces a tenant may never own or be named after (a tenant's default namespace is its name):
 * the system ones and the operator's own, whose secrets would otherwise become a tenant's.
 */
export const RESERVED_NAMESPACES = ["default", OPERATOR_NAMESPACE] as const;
export const RESERVED_NAMESPACE_PREFIX = "kube-";

/** DNS-1123 label: what Kubernetes requires of a namespace name, and what the API requires of tenant and device names. */
export const DNS_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
export const DNS_LABEL_MAX_LENGTH = 63;
