import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger } from "pino";

/** Fields that may carry secret material if a whole object is ever logged. */
const REDACTED_PATHS = [
  "*.data",
  "*.stringData",
  "*.password",
  "*.token",
  "*.privateKey",
  "*.headers.authorization",
  "*.headers.Authorization",
];

export interface LoggerOptions {
  readonly level?: string;
  readonly name?: string;
  readonly destination?: DestinationStream;
}

/** Structured JSON logs, one line per event; callers add `controller`, `key`, `reconcileID` as fields. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      name: options.name ?? "iot-tenant-operator",
      level: options.level ?? process.env.LOG_LEVEL ?? "info",
      redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination,
  );
}
