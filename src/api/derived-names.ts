/**
 * Names the operator derives from tenant and device names. Tenant, namespace and device names are DNS
 * labels (at most 63 characters), and the API's length limits exist so that each name below fits its
 * own limit; derived-names.test.ts checks that at the longest inputs.
 */

/** Certificate, Issuer and CA Secret of a tenant's intermediate CA, in the operator's namespace. */
export function tenantCAName(tenant: string): string {
  return `tenant-${tenant}-ca`;
}

/**
 * A device's Certificate (and the Secret cert-manager writes for it) in the operator's namespace. The
 * dot cannot occur in a tenant or device name, so no two devices of any tenants share this name.
 */
export function deviceCertificateName(tenant: string, device: string): string {
  return `${tenant}.${device}`;
}

/** The Secret with the device's credentials in the device's own namespace. */
export function deviceSecretName(device: string): string {
  return `${device}-mqtt`;
}

/**
 * An x509 device's certificate has subject O=<tenant>, CN=<device>; Mosquitto's use_subject_as_username
 * turns that into this username (RFC 2253: reversed RDNs). DNS labels need no escaping.
 */
export function x509BrokerUsername(tenant: string, device: string): string {
  return `CN=${device},O=${tenant}`;
}

/** Username of a password device; it cannot collide with a certificate username, which starts with "CN=". */
export function passwordBrokerUsername(tenant: string, device: string): string {
  return `${tenant}/${device}`;
}

/** Broker role of one device, and the group every device of a tenant is in. */
export function deviceBrokerRoleName(tenant: string, device: string): string {
  return `device/${tenant}/${device}`;
}

export function tenantBrokerGroupName(tenant: string): string {
  return `tenant/${tenant}`;
}
