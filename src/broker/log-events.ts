/**
 * Security events from Mosquitto 2.0.11's own log, as `log_dest topic` publishes it on
 * `$SYS/broker/log/<level>` (payload `<timestamp>: <message>`). Pure: a line parser and a fold that
 * pairs a refusal with the connection it belongs to. What the broker prints was observed on the
 * real 2.0.11 build (see the observed lines in log-events.test.ts); what it does not print cannot
 * be reported:
 * - a refused SUBSCRIBE and a refused PUBLISH are not on the topic at all (2.0.11 logs a denied
 *   PUBLISH at debug level only, which `log_dest topic` never publishes, and a denied SUBSCRIBE
 *   nowhere), so authorization refusals of a live device are invisible here;
 * - a refused login names no identity: `Client <unknown> disconnected, not authorised.` for a wrong
 *   password or unknown user, and `OpenSSL Error[0]: … certificate verify failed` for an unknown,
 *   expired or revoked certificate alike (no subject, no reason); only the address of the
 *   connection is known, and only when it is the one connection waiting for its CONNECT;
 * - a client id claimed by another connection is refused by configuration
 *   (`use_username_as_clientid`), so what can be seen is the same identity connecting twice.
 */

export type BrokerEventKind = "Connected" | "Disconnected" | "AuthenticationRefused" | "SessionTakenOver";

export interface BrokerSecurityEvent {
  readonly kind: BrokerEventKind;
  /** The broker username (`CN=<device>,O=<tenant>` or a password device's name); absent when the broker names none. */
  readonly username?: string;
  /** `host:port` of the client, when the log ties it to this event. */
  readonly remoteAddress?: string;
  /** The broker's words for a refusal or a disconnect. */
  readonly detail?: string;
  /** The broker's timestamp of the line, as printed. */
  readonly brokerTime: string;
}

/** One parsed log line; `undefined` from the parser for lines that carry no security event. */
export type BrokerLogLine =
  | { readonly type: "accepted"; readonly remoteAddress: string; readonly brokerTime: string }
  | {
      readonly type: "connected";
      readonly remoteAddress: string;
      readonly username: string;
      readonly brokerTime: string;
    }
  | {
      readonly type: "disconnected";
      readonly clientId: string | undefined;
      readonly detail: string;
      readonly brokerTime: string;
    }
  | { readonly type: "refused"; readonly detail: string; readonly brokerTime: string }
  | { readonly type: "tlsRefused"; readonly detail: string; readonly brokerTime: string }
  | { readonly type: "takenOver"; readonly clientId: string; readonly brokerTime: string };

export const BROKER_LOG_TOPIC = "$SYS/broker/log/#";

const PAYLOAD = /^(?<time>[^ ]+): (?<message>.*)$/s;
const ACCEPTED = /^New connection from (?<address>\S+) on port \d+\.$/;
const CONNECTED =
  /^New client connected from (?<address>\S+) as .* \(p\d, c\d, k\d+, u'(?<username>.*)'\)\.$/;
const NOT_AUTHORISED = /^Client (?<id>.+) disconnected, not authorised\.$/;
const DISCONNECTED =
  /^Client (?<id>.+?) (?<how>disconnected(?:: (?<why>.+?))?|closed its connection|has exceeded timeout, disconnecting)\.$/;
const TLS_REFUSED = /^OpenSSL Error\[\d+\]: (?<detail>.*(?:certificate|handshake).*)$/;
const TAKEN_OVER = /^Client (?<id>.+) already connected, closing old connection\.$/;

/** Parses one message of `$SYS/broker/log/<level>`; `undefined` for everything that is no security event. */
export function parseBrokerLogLine(payload: string): BrokerLogLine | undefined {
  const line = PAYLOAD.exec(payload.trimEnd())?.groups;
  if (!line?.time || line.message === undefined) return undefined;
  const brokerTime = line.time;
  const message = line.message;
  let match = ACCEPTED.exec(message)?.groups;
  if (match?.address) return { type: "accepted", remoteAddress: match.address, brokerTime };
  match = CONNECTED.exec(message)?.groups;
  if (match?.address && match.username !== undefined)
    return { type: "connected", remoteAddress: match.address, username: match.username, brokerTime };
  if (NOT_AUTHORISED.test(message)) return { type: "refused", detail: "not authorised", brokerTime };
  match = TLS_REFUSED.exec(message)?.groups;
  if (match?.detail) return { type: "tlsRefused", detail: match.detail, brokerTime };
  match = TAKEN_OVER.exec(message)?.groups;
  if (match?.id) return { type: "takenOver", clientId: match.id, brokerTime };
  match = DISCONNECTED.exec(message)?.groups;
  if (match?.id) {
    return {
      type: "disconnected",
      clientId: match.id === "<unknown>" ? undefined : match.id,
      detail: match.why ?? match.how ?? "disconnected",
      brokerTime,
    };
  }
  return undefined;
}

/** Connections accepted and not yet logged in or refused; bounded so lines that never come cannot grow it. */
const MAX_PENDING = 1024;

export interface BrokerLogState {
  /** Addresses of accepted connections whose CONNECT has not been decided yet, oldest first. */
  readonly pending: readonly string[];
  /** A TLS failure seen and not yet followed by its connection's disconnect line. */
  readonly tlsFailure?: string;
}

export const INITIAL_BROKER_LOG_STATE: BrokerLogState = { pending: [] };

/**
 * Folds one log line into the state and the events it completes. A refusal carries the address
 * only when exactly one connection was waiting: the broker interleaves connections, and a guessed
 * address would blame the wrong client. Client ids are the usernames on the device listeners
 * (`use_username_as_clientid`), so a disconnect names its device.
 */
export function foldBrokerLog(
  state: BrokerLogState,
  line: BrokerLogLine,
): { state: BrokerLogState; events: BrokerSecurityEvent[] } {
  const { brokerTime } = line;
  switch (line.type) {
    case "accepted":
      return {
        state: { ...state, pending: [...state.pending, line.remoteAddress].slice(-MAX_PENDING) },
        events: [],
      };
    case "connected":
      return {
        state: { ...state, pending: without(state.pending, line.remoteAddress) },
        events: [
          { kind: "Connected", username: line.username, remoteAddress: line.remoteAddress, brokerTime },
        ],
      };
    case "tlsRefused":
      return { state: { ...state, tlsFailure: line.detail }, events: [] };
    case "refused":
      return refusal(state, line.detail, brokerTime);
    case "takenOver":
      return { state, events: [{ kind: "SessionTakenOver", username: line.clientId, brokerTime }] };
    case "disconnected":
      if (line.clientId === undefined) {
        // An unnamed client that dies right after a TLS failure is that failure's connection.
        if (state.tlsFailure !== undefined) return refusal(state, `TLS: ${state.tlsFailure}`, brokerTime);
        return { state: { ...state, pending: state.pending.slice(1) }, events: [] };
      }
      return {
        state,
        events: [{ kind: "Disconnected", username: line.clientId, detail: line.detail, brokerTime }],
      };
  }
}

function refusal(
  state: BrokerLogState,
  detail: string,
  brokerTime: string,
): { state: BrokerLogState; events: BrokerSecurityEvent[] } {
  const only = state.pending.length === 1 ? state.pending[0] : undefined;
  return {
    state: { pending: only === undefined ? state.pending.slice(1) : [] },
    events: [
      {
        kind: "AuthenticationRefused",
        detail,
        brokerTime,
        ...(only === undefined ? {} : { remoteAddress: only }),
      },
    ],
  };
}

function without(list: readonly string[], item: string): string[] {
  const index = list.indexOf(item);
  return index === -1 ? [...list] : [...list.slice(0, index), ...list.slice(index + 1)];
}
