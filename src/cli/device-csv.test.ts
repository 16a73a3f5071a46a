import { describe, expect, it } from "vitest";
import { CsvFileError, parseDeviceCsv } from "./device-csv.js";

const tenant = { name: "acme", namespaces: ["acme", "acme-lab"] };
const HEADER = "name,namespace,authentication,enabled,publish,subscribe";
const device = (name: string, namespace: string, spec: Record<string, unknown>) => ({
  apiVersion: "iot.tenant-operator.io/v1alpha1",
  kind: "Device",
  metadata: { name, namespace },
  spec,
});

describe("devices import reads a CSV file", () => {
  it.each([
    {
      row: "sensor-1,,,,,",
      expected: device("sensor-1", "acme", { enabled: true, authentication: { type: "x509" } }),
    },
    {
      row: "meter-2,acme-lab,PASSWORD,False,,",
      expected: device("meter-2", "acme-lab", { enabled: false, authentication: { type: "password" } }),
    },
    {
      row: 'gw-3,acme,x509,true,"devices/gw-3/#  sites/+/telemetry",devices/gw-3/#',
      expected: device("gw-3", "acme", {
        enabled: true,
        authentication: { type: "x509" },
        topics: { publish: ["devices/gw-3/#", "sites/+/telemetry"], subscribe: ["devices/gw-3/#"] },
      }),
    },
    {
      row: "app-4,acme,x509,true,,#",
      expected: device("app-4", "acme", {
        enabled: true,
        authentication: { type: "x509" },
        topics: { publish: [], subscribe: ["#"] },
      }),
    },
  ])("turns $row into a Device", ({ row, expected }) => {
    expect(parseDeviceCsv(`${HEADER}\n${row}\n`, tenant)).toEqual({
      rows: [{ line: 2, device: expected }],
      problems: [],
    });
  });

  it.each([
    { row: "Sensor_1,,,,,", reason: /metadata.name: .*DNS label|metadata.name/ },
    {
      row: "sensor-1,globex,,,,",
      reason: /namespace globex is not one of tenant acme's namespaces \(acme, acme-lab\)/,
    },
    { row: "sensor-1,,x509,maybe,,", reason: /enabled: "maybe" is not true or false/ },
    { row: "sensor-1,,token,,,", reason: /spec.authentication.type/ },
    { row: "sensor-1,,,,sites/#/x,", reason: /spec.topics.publish.0: must be an MQTT topic filter/ },
    { row: "sensor-1,,,,$SYS/#,", reason: /no leading '\$'/ },
    { row: "sensor-1,,,", reason: /4 fields, the header has 6/ },
  ])("refuses $row and says why", ({ row, reason }) => {
    const { rows, problems } = parseDeviceCsv(`${HEADER}\n${row}\n`, tenant);
    expect(rows).toEqual([]);
    expect(problems).toHaveLength(1);
    expect(problems[0]?.line).toBe(2);
    expect(problems[0]?.reason).toMatch(reason);
  });

  it("reports each bad row with its line and keeps the others, blank lines and quoted line breaks counted", () => {
    const text = [
      HEADER,
      "sensor-1,,,,,",
      "",
      "sensor-2,,,nope,,",
      'sensor-3,,,,"devices/sensor-3/#',
      'sites/a",',
      "sensor-1,acme-lab,,,,",
      "sensor-4,,,,,",
    ].join("\n");
    const { rows, problems } = parseDeviceCsv(text, tenant);
    expect(rows.map((r) => [r.line, r.device.metadata.name])).toEqual([
      [2, "sensor-1"],
      [6, "sensor-3"],
      [8, "sensor-4"],
    ]);
    expect(problems).toEqual([
      { line: 4, reason: 'enabled: "nope" is not true or false' },
      { line: 7, reason: "device sensor-1 is already on line 2" },
    ]);
  });

  it.each([
    { text: "", message: /the file is empty/ },
    {
      text: "name,enabled\nsensor-1,true\n",
      message: /line 1: the header row lacks column\(s\) authentication/,
    },
    {
      text: "name,authentication,enabled,colour\n",
      message: /line 1: unknown column\(s\) colour; the columns are name, namespace/,
    },
    { text: "name,authentication,enabled,Name\n", message: /line 1: column name appears twice/ },
    { text: 'name,authentication,enabled\n"sensor-1,x509,true\n', message: /Quote Not Closed/i },
  ])("refuses the whole file when it cannot be read: $message", ({ text, message }) => {
    expect(() => parseDeviceCsv(text, tenant)).toThrow(CsvFileError);
    expect(() => parseDeviceCsv(text, tenant)).toThrow(message);
  });
});
