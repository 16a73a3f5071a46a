import { describe, expect, it } from "vitest";
import { deviceSubject, subjectUsername } from "./subject.js";

// Expected values are what `openssl x509 -noout -subject -nameopt RFC2253` printed for the same subjects,
// and what Mosquitto 2.0.11 reported as username (research note).
describe("subjectUsername", () => {
  it.each([
    { subject: "/O=helio/CN=ord-a", expected: "CN=ord-a,O=helio" },
    { subject: "/CN=ord-b/O=helio", expected: "O=helio,CN=ord-b" },
    { subject: "/C=DE/O=helio/OU=fleet/CN=ord-c", expected: "CN=ord-c,OU=fleet,O=helio,C=DE" },
    { subject: "/O=helio/CN=ord,d", expected: "CN=ord\\,d,O=helio" },
    { subject: '/O=t/CN=a+b"c\\d<e>f;g =h ', expected: 'CN=a\\+b\\"c\\\\d\\<e\\>f\\;g =h\\ ,O=t' },
    { subject: "/O=t/CN=# a", expected: "CN=\\# a,O=t" },
    { subject: "/O=t/CN= lead", expected: "CN=\\ lead,O=t" },
    { subject: "/O=t/CN=a\u0001b\u007fc", expected: "CN=a\\01b\\7Fc,O=t" },
    { subject: "/O=ü€/CN=a😀", expected: "CN=a\\F0\\9F\\98\\80,O=\\C3\\BC\\E2\\82\\AC" },
  ])("$subject → $expected", ({ subject, expected }) => {
    const attributes = subject
      .slice(1)
      .split(/\/(?=[A-Z]+=)/)
      .map((part) => {
        const at = part.indexOf("=");
        return { type: part.slice(0, at), value: part.slice(at + 1) };
      });
    expect(subjectUsername(attributes)).toBe(expected);
  });

  it("names tenant and device for the operator's device certificates", () => {
    expect(subjectUsername(deviceSubject("acme", "sensor-1"))).toBe("CN=sensor-1,O=acme");
  });
});
