import { describe, expect, it } from "vitest";
import {
  deviceBrokerRoleName,
  deviceCertificateName,
  deviceSecretName,
  passwordBrokerUsername,
  tenantBrokerGroupName,
  tenantCAName,
  x509BrokerUsername,
} from "./derived-names.js";
import { DNS_LABEL_MAX_LENGTH } from "./group.js";
import { defaultTopicRoot, TOPIC_ROOT_MAX_LENGTH, TOPIC_ROOT_PATTERN } from "./topics.js";

/** The longest names the API admits: tenant and device names are DNS labels. */
const longestTenant = `t${"x".repeat(DNS_LABEL_MAX_LENGTH - 2)}t`;
const longestDevice = `d${"y".repeat(DNS_LABEL_MAX_LENGTH - 2)}d`;

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
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

  it("certificate subject fields and label values fit 64 and 63 characters", () => {
    expect(longestTenant.length).toBeLessThanOrEqual(Math.min(X520_MAX, DNS_LABEL_MAX_LENGTH));
    expect(longestDevice.length).toBeLessThanOrEqual(Math.min(X520_MAX, DNS_LABEL_MAX_LENGTH));
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
