import type { X509Certificate } from "node:crypto";

/** One attribute of a certificate subject, e.g. `{ type: "CN", value: "sensor-1" }` (OpenSSL short names). */
export interface SubjectAttribute {
  readonly type: string;
  readonly value: string;
}

/** Characters that RFC 2253 escapes anywhere in a value. */
const SPECIAL = new Set([",", "+", '"', "\\", "<", ">", ";"]);

function hexEscape(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => `\\${byte.toString(16).toUpperCase().padStart(2, "0")}`).join("");
}

/**
 * Escapes one attribute value the way OpenSSL prints it with XN_FLAG_RFC2253 (which Mosquitto uses):
 * RFC 2253 specials get a backslash, control characters and every byte of a non-ASCII character
 * become `\XX`.
 */
export function escapeAttributeValue(value: string): string {
  const characters = [...value];
  const encoder = new TextEncoder();
  return characters
    .map((character, index) => {
      const code = character.codePointAt(0) ?? 0;
      if (code < 0x20 || code === 0x7f || code > 0x7f) return hexEscape(encoder.encode(character));
      if (SPECIAL.has(character)) return `\\${character}`;
      if (index === 0 && (character === "#" || character === " ")) return `\\${character}`;
      if (index === characters.length - 1 && character === " ") return "\\ ";
      return character;
    })
    .join("");
}

/**
 * The broker username of a certificate client under Mosquitto's `use_subject_as_username`: the
 * subject in RFC 2253 form, last attribute first, joined by commas without spaces. `subject` is in
 * certificate order (as in openssl `-subj /O=acme/CN=sensor-1`). Single-valued RDNs only.
 */
export function subjectUsername(subject: readonly SubjectAttribute[]): string {
  return subject
    .toReversed()
    .map(({ type, value }) => `${type}=${escapeAttributeValue(value)}`)
    .join(",");
}

/** The subject the operator gives a device certificate: organisation = tenant, common name = device. */
export function deviceSubject(tenant: string, device: string): SubjectAttribute[] {
  return [
    { type: "O", value: tenant },
    { type: "CN", value: device },
  ];
}

/** The username of a certificate's subject (node's X509Certificate, one `type=value` line per attribute). */
export function certificateUsername(certificate: X509Certificate): string {
  return subjectUsername(
    certificate.subject.split("\n").map((line) => {
      const eq = line.indexOf("=");
      return { type: line.slice(0, eq), value: line.slice(eq + 1) };
    }),
  );
}
