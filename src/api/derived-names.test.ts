import { describe, expect, it } from "vitest";
import { deviceSubject } from "../broker/subject.js";
import { operatorConfigSchema } from "../config.js";
import { credentialsSecret, deviceCertificate } from "../desired/device.js";
import { desiredTenant } from "../desired/tenant.js";
import {
  deviceBrokerRoleName,
  deviceCertificateName,
  deviceSecretName,
  passwordBrokerUsername,
  tenantBrokerGroupName,
  tenantCAName,
  x509BrokerUsername,
} from "./derived-names.js";
import { parseDevice } from "./device.js";
import { API_VERSION, DNS_LABEL_MAX_LENGTH } from "./group.js";
import { parseTenant } from "./tenant.js";
import { defaultTopicRoot, TOPIC_ROOT_MAX_LENGTH, TOPIC_ROOT_PATTERN } from "./topics.js";

/** The longest names the API admits: tenant and device names are DNS labels. */
const longestTenant = `t${"x".repeat(DNS_LABEL_MAX_LENGTH - 2)}t`;
const longestDevice = `d${"y".repeat(DNS_LABEL_MAX_LENGTH - 2)}d`;

const longestTenantObject = {
  ...parseTenant({ apiVersion: API_VERSION, kind: "Tenant", metadata: { name: longestTenant }, spec: {} }),
  metadata: { name: longestTenant, uid: "uid-1" },
};
const longestDeviceObject = {
  ...parseDevice({
    apiVersion: API_VERSION,
    kind: "Device",
    metadata: { name: longestDevice, namespace: longestTenant },
    spec: {},
  }),
  metadata: { name: longestDevice, namespace: longestTenant, uid: "uid-1" },
};

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** A label value: at most 63 characters, alphanumeric at both ends. */
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;
/** X.520 upper bound for CN and O (RFC 5280 ub-common-name, ub-organization-name). */
const X520_MAX = 64;
/** MQTT strings carry a two-byte length. */
const MQTT_STRING_MAX_BYTES = 65_535;

describe("names derived from the longest tenant and device names fit their limits", () => {
  const objectNames = [
    ["tenant CA Certificate/Issuer/Secret", tenantCAName(longestTenant)],
    ["device Certificate/Secret", deviceCertificateName(longestTenant, longestDevice)],
    ["device credentials Secret", deviceSecretName(longestDevice)],
  ] as const;
  it.each(objectNames)("%s is a DNS subdomain of at most 253 characters", (_, name) => {
    expect(name.length).toBeLessThanOrEqual(253);
    expect(name).toMatch(DNS_SUBDOMAIN);
  });

  it("the device certificate's subject fields fit 64 characters", () => {
    const certificate = deviceCertificate(longestDeviceObject, longestTenantObject, "iot-system");
    const spec = certificate.spec as { commonName: string; subject: { organizations: string[] } };
    const fields = [
      spec.commonName,
      ...spec.subject.organizations,
      ...deviceSubject(longestTenant, longestDevice).map((attribute) => attribute.value),
    ];
    for (const field of fields) expect([field, field.length <= X520_MAX]).toEqual([field, true]);
  });

  it("every label value the operator writes is a valid label value", () => {
    const tenantState = desiredTenant(longestTenantObject, operatorConfigSchema.parse({}));
    const certificate = deviceCertificate(longestDeviceObject, longestTenantObject, "iot-system");
    const secret = credentialsSecret(longestDeviceObject, longestTenant, { type: "Opaque", data: {} });
    const labelSets = [
      ...[...tenantState.namespaces, ...tenantState.namespaced, ...tenantState.pki, certificate, secret].map(
        (object) => object.metadata.labels ?? {},
      ),
      (certificate.spec as { secretTemplate: { labels: Record<string, string> } }).secretTemplate.labels,
    ];
    const values = labelSets.flatMap((labels) => Object.values(labels));
    expect(values).toContain(longestTenant);
    expect(values).toContain(longestDevice);
    for (const value of values) expect([value, LABEL_VALUE.test(value)]).toEqual([value, true]);
  });

  const brokerNames = [
    ["x509 username", x509BrokerUsername(longestTenant, longestDevice)],
    ["password username", passwordBrokerUsername(longestTenant, longestDevice)],
    ["device role", deviceBrokerRoleName(longestTenant, longestDevice)],
    ["tenant group", tenantBrokerGroupName(longestTenant)],
  ] as const;
  it.each(brokerNames)("broker %s fits an MQTT string", (_, name) => {
    expect(Buffer.byteLength(name)).toBeLessThanOrEqual(MQTT_STRING_MAX_BYTES);
  });

  it("the default topic root is a valid topic root", () => {
    const root = defaultTopicRoot(longestTenant);
    expect(root.length).toBeLessThanOrEqual(TOPIC_ROOT_MAX_LENGTH);
    expect(root).toMatch(new RegExp(TOPIC_ROOT_PATTERN));
  });

  it("usernames of the two authentication types never collide", () => {
    expect(passwordBrokerUsername(longestTenant, longestDevice)).not.toMatch(/^CN=/);
  });
});
