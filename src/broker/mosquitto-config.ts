/**
 * The Mosquitto configuration the operator's design needs, generated rather than hand-kept:
 * the chart's ConfigMap and the local stack both come from here.
 * - mTLS device listener: client certificate required, chain checked against the root CA and
 *   the tenants' CRLs, the certificate subject becomes the username (CN=<device>,O=<tenant>);
 * - TLS password listener for password devices;
 * - on both device listeners the client id is the username, whatever the device sends: a client id
 *   belongs to one identity, so no device can take over, or knock off, another one's session;
 * - the admin listener the operator's dynamic-security client uses: mTLS with a CA of its own, the
 *   certificate's CN is the admin's username and that client has no password (see dynsec-state.ts);
 * - the dynamic-security plugin as the only authority (no anonymous access);
 * - persistent sessions expire and their queues are bounded.
 */

/**
 * A persistent session (MQTT 3.1.1 clean session off, or a v5 session expiry) is dropped after this
 * long without a connection; 2.0.x caps a v5 client's longer expiry to it. A day rides out the
 * outages a field device has, and bounds what a session holds for an identity that never returns.
 */
export const SESSION_EXPIRY = "1d";
/** Messages, and bytes, a broker queues for one offline or slow session before it drops new ones. */
export const MAX_QUEUED_MESSAGES = 1000;
export const MAX_QUEUED_BYTES = 1_048_576;

export interface MosquittoConfigOptions {
  readonly bindAddress: string;
  readonly mtlsPort: number;
  readonly passwordPort: number;
  readonly adminPort: number;
  readonly rootCaFile: string;
  /** The CA that signs the operator's admin certificate; the admin listener trusts only it. */
  readonly adminCaFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  /** Root CA's CRL followed by every tenant CA's, as the operator publishes them. */
  readonly crlFile: string;
  readonly dynsecPlugin: string;
  readonly dynsecStateFile: string;
  readonly pidFile?: string;
  /** Needed only when the broker is started as root and must read root-owned keys. */
  readonly runAsRoot?: boolean;
}

export function mosquittoConfig(options: MosquittoConfigOptions): string {
  const tls = [`certfile ${options.serverCertFile}`, `keyfile ${options.serverKeyFile}`];
  return [
    ...(options.runAsRoot ? ["user root"] : []),
    "per_listener_settings false",
    "allow_anonymous false",
    "persistence false",
    `persistent_client_expiration ${SESSION_EXPIRY}`,
    `max_queued_messages ${MAX_QUEUED_MESSAGES}`,
    `max_queued_bytes ${MAX_QUEUED_BYTES}`,
    ...(options.pidFile ? [`pid_file ${options.pidFile}`] : []),
    "log_dest stdout",
    // The operator's admin client reads connects, disconnects and refusals from $SYS/broker/log/#.
    "log_dest topic",
    "log_type error",
    "log_type warning",
    "log_type notice",
    "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    `plugin ${options.dynsecPlugin}`,
    `plugin_opt_config_file ${options.dynsecStateFile}`,
    "",
    `listener ${options.adminPort} ${options.bindAddress}`,
    `cafile ${options.adminCaFile}`,
    ...tls,
    "require_certificate true",
    "use_identity_as_username true",
    "",
    `listener ${options.mtlsPort} ${options.bindAddress}`,
    `cafile ${options.rootCaFile}`,
    ...tls,
    `crlfile ${options.crlFile}`,
    "require_certificate true",
    "use_subject_as_username true",
    "use_username_as_clientid true",
    "",
    `listener ${options.passwordPort} ${options.bindAddress}`,
    ...tls,
    "use_username_as_clientid true",
    "",
  ].join("\n");
}
