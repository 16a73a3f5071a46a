import { describe, expect, it } from "vitest";
import {
  parseTamperReport,
  parseTamperReportTopic,
  TAMPER_REPORT_FILTERS,
  TAMPER_REPORT_MAX_BYTES,
  tamperReportTopic,
} from "./tamper-report.js";

describe("parseTamperReportTopic", () => {
  it.each([
    ["tenants/acme/devices/meter/security/report", { topicRoot: "tenants/acme", device: "meter" }],
    ["a/devices/devices/security/report", { topicRoot: "a", device: "devices" }],
    ["f/e/d/c/b/a/x/y/devices/m/security/report", { topicRoot: "f/e/d/c/b/a/x/y", device: "m" }],
    ["devices/meter/security/report", undefined],
    ["tenants/acme/devices/meter/security/report/more", undefined],
    ["tenants/acme/things/meter/security/report", undefined],
    ["tenants/acme/devices/meter/security/other", undefined],
    ["tenants/acme/devices//security/report", undefined],
  ])("%s → %j", (topic, expected) => {
    expect(parseTamperReportTopic(topic)).toEqual(expected);
  });

  it("reads back what tamperReportTopic writes", () => {
    expect(parseTamperReportTopic(tamperReportTopic("fleet/eu/acme", "pump-2"))).toEqual({
      topicRoot: "fleet/eu/acme",
      device: "pump-2",
    });
  });

  it("subscribes the reserved topic under roots of 1 to 8 levels", () => {
    expect(TAMPER_REPORT_FILTERS).toHaveLength(8);
    expect(TAMPER_REPORT_FILTERS[0]).toBe("+/devices/+/security/report");
    expect(TAMPER_REPORT_FILTERS[7]).toBe("+/+/+/+/+/+/+/+/devices/+/security/report");
  });
});

describe("parseTamperReport", () => {
  const json = (value: unknown) => Buffer.from(JSON.stringify(value));
  it.each([
    [json({ type: "enclosureOpened" }), true],
    [json({ type: "other", message: "lid sensor", observedAt: "2026-11-28T05:00:00+01:00" }), true],
    [json({ type: "enclosureOpened", device: "someone-else" }), false],
    [json({ type: "unknown" }), false],
    [json({ type: "other", message: "x".repeat(257) }), false],
    [json({ type: "other", observedAt: "yesterday" }), false],
    [Buffer.from("not json"), false],
    [json({ type: "other", message: "x".repeat(TAMPER_REPORT_MAX_BYTES) }), false],
  ])("%s → %s", (payload, ok) => {
    expect(parseTamperReport(payload).ok).toBe(ok);
  });
});
