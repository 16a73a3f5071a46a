import { describe, expect, it } from "vitest";
import {
  type BrokerLogLine,
  type BrokerSecurityEvent,
  foldBrokerLog,
  INITIAL_BROKER_LOG_STATE,
  parseBrokerLogLine,
} from "./log-events.js";

// Payloads as Mosquitto 2.0.11 (Debian 2.0.11-1.2+deb12u2) published them on $SYS/broker/log/<level>
// with `log_timestamp_format %Y-%m-%dT%H:%M:%S`, recorded on 2026-11-28.
const T = "2026-11-28T04:37:02";
const observed = {
  accepted: `${T}: New connection from 127.0.0.1:35944 on port 18831.`,
  connected: `${T}: New client connected from 127.0.0.1:35944 as CN=dev1,O=acme (p5, c1, k60, u'CN=dev1,O=acme').`,
  connectedV311: `${T}: New client connected from 127.0.0.1:35958 as CN=dev1,O=acme (p2, c1, k60, u'CN=dev1,O=acme').`,
  disconnected: `${T}: Client CN=dev1,O=acme disconnected.`,
  closed: `${T}: Client auto-77DAF61B closed its connection.`,
  wrongPassword: `${T}: Client <unknown> disconnected, not authorised.`,
  tlsUnknownCa: `${T}: OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed`,
  tlsNoCertificate: `${T}: OpenSSL Error[0]: error:0A0000C7:SSL routines::peer did not return a certificate`,
  protocolError: `${T}: Client <unknown> disconnected: Protocol error.`,
  takenOver: `${T}: Client CN=dev1,O=acme already connected, closing old connection.`,
  subscribed: `${T}: CN=dev1,O=acme 0 acme/dev1/#`,
  dynsec: `${T}: dynsec: auto-7456CB2D/admin | createClient | username=CN=dev1,O=acme | password=*****`,
};

describe("parseBrokerLogLine", () => {
  const cases: [string, string, BrokerLogLine | undefined][] = [
    ["accepted", observed.accepted, { type: "accepted", remoteAddress: "127.0.0.1:35944", brokerTime: T }],
    [
      "connected v5",
      observed.connected,
      { type: "connected", remoteAddress: "127.0.0.1:35944", username: "CN=dev1,O=acme", brokerTime: T },
    ],
    [
      "connected v3.1.1",
      observed.connectedV311,
      { type: "connected", remoteAddress: "127.0.0.1:35958", username: "CN=dev1,O=acme", brokerTime: T },
    ],
    [
      "disconnected",
      observed.disconnected,
      { type: "disconnected", clientId: "CN=dev1,O=acme", detail: "disconnected", brokerTime: T },
    ],
    [
      "closed its connection",
      observed.closed,
      { type: "disconnected", clientId: "auto-77DAF61B", detail: "closed its connection", brokerTime: T },
    ],
    ["wrong password", observed.wrongPassword, { type: "refused", detail: "not authorised", brokerTime: T }],
    [
      "certificate refused",
      observed.tlsUnknownCa,
      { type: "tlsRefused", detail: "error:0A000086:SSL routines::certificate verify failed", brokerTime: T },
    ],
    [
      "no certificate",
      observed.tlsNoCertificate,
      {
        type: "tlsRefused",
        detail: "error:0A0000C7:SSL routines::peer did not return a certificate",
        brokerTime: T,
      },
    ],
    [
      "protocol error",
      observed.protocolError,
      { type: "disconnected", clientId: undefined, detail: "Protocol error", brokerTime: T },
    ],
    ["taken over", observed.takenOver, { type: "takenOver", clientId: "CN=dev1,O=acme", brokerTime: T }],
    ["a subscription is no security event", observed.subscribed, undefined],
    ["a dynsec command is no security event", observed.dynsec, undefined],
    ["not a log line", "garbage", undefined],
  ];
  it.each(cases)("%s", (_name, payload, expected) => {
    expect(parseBrokerLogLine(payload)).toEqual(expected);
  });
});

function fold(payloads: readonly string[]): BrokerSecurityEvent[] {
  let state = INITIAL_BROKER_LOG_STATE;
  const events: BrokerSecurityEvent[] = [];
  for (const payload of payloads) {
    const line = parseBrokerLogLine(payload);
    if (!line) continue;
    const next = foldBrokerLog(state, line);
    state = next.state;
    events.push(...next.events);
  }
  return events;
}

describe("foldBrokerLog", () => {
  const cases: [string, string[], BrokerSecurityEvent[]][] = [
    [
      "a device connects and leaves",
      [observed.accepted, observed.connected, observed.disconnected],
      [
        { kind: "Connected", username: "CN=dev1,O=acme", remoteAddress: "127.0.0.1:35944", brokerTime: T },
        { kind: "Disconnected", username: "CN=dev1,O=acme", detail: "disconnected", brokerTime: T },
      ],
    ],
    [
      "a wrong password on the only waiting connection carries its address",
      [`${T}: New connection from 10.0.0.7:44854 on port 8884.`, observed.wrongPassword],
      [
        {
          kind: "AuthenticationRefused",
          detail: "not authorised",
          remoteAddress: "10.0.0.7:44854",
          brokerTime: T,
        },
      ],
    ],
    [
      "a refused certificate is one refusal, with its address",
      [
        `${T}: New connection from 10.0.0.8:35988 on port 8883.`,
        observed.tlsUnknownCa,
        observed.protocolError,
      ],
      [
        {
          kind: "AuthenticationRefused",
          detail: "TLS: error:0A000086:SSL routines::certificate verify failed",
          remoteAddress: "10.0.0.8:35988",
          brokerTime: T,
        },
      ],
    ],
    [
      "with two connections waiting the address is not guessed",
      [
        `${T}: New connection from 10.0.0.7:1 on port 8884.`,
        `${T}: New connection from 10.0.0.9:2 on port 8884.`,
        observed.wrongPassword,
      ],
      [{ kind: "AuthenticationRefused", detail: "not authorised", brokerTime: T }],
    ],
    [
      "a connection that logged in no longer waits",
      [
        `${T}: New connection from 10.0.0.7:1 on port 8884.`,
        `${T}: New connection from 127.0.0.1:35944 on port 8883.`,
        observed.connected,
        observed.wrongPassword,
      ],
      [
        { kind: "Connected", username: "CN=dev1,O=acme", remoteAddress: "127.0.0.1:35944", brokerTime: T },
        {
          kind: "AuthenticationRefused",
          detail: "not authorised",
          remoteAddress: "10.0.0.7:1",
          brokerTime: T,
        },
      ],
    ],
    [
      "the same identity twice",
      [observed.takenOver],
      [{ kind: "SessionTakenOver", username: "CN=dev1,O=acme", brokerTime: T }],
    ],
    [
      "an unnamed protocol error without a TLS failure is no refusal",
      [observed.accepted, observed.protocolError],
      [],
    ],
  ];
  it.each(cases)("%s", (_name, payloads, expected) => {
    expect(fold(payloads)).toEqual(expected);
  });

  it("forgets connections past its bound", () => {
    const accepted = Array.from(
      { length: 5000 },
      (_, i) => `${T}: New connection from 10.0.0.1:${i} on port 1.`,
    );
    let state = INITIAL_BROKER_LOG_STATE;
    for (const payload of accepted) {
      const line = parseBrokerLogLine(payload);
      if (line) state = foldBrokerLog(state, line).state;
    }
    expect(state.pending.length).toBe(1024);
  });
});
