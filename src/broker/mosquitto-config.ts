/**
 * The Mosquitto configuration the operator's design needs, generated rather than hand-kept:
 * the chart's ConfigMap and the local stack both come from here.
 * - mTLS device listener: client certificate required, chain checked against the root CA and
 *   the tenants' CRLs, the certificate subject becomes the username (CN=<device>,O=<tenant>);
 * - TLS password listener for password devices;
 * - the admin listener the operator's dynamic-security client uses;
 * - the dynamic-security plugin as the only authority (no anonymous access).
 */

export interface MosquittoConfigOptions {
  readonly bindAddress: string;
  readonly mtlsPort: number;
  readonly passwordPort: number;
  readonly adminPort: number;
  readonly rootCaFile: string;
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
    ...(options.pidFile ? [`pid_file ${options.pidFile}`] : []),
    "log_dest stdout",
    "log_type error",
    "log_type warning",
    "log_type notice",
    "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    `plugin ${options.dynsecPlugin}`,
    `plugin_opt_config_file ${options.dynsecStateFile}`,
    "",
    `listener ${options.adminPort} ${options.bindAddress}`,
    "",
    `listener ${options.mtlsPort} ${options.bindAddress}`,
    `cafile ${options.rootCaFile}`,
    ...tls,
    `crlfile ${options.crlFile}`,
    "require_certificate true",
    "use_subject_as_username true",
    "",
    `listener ${options.passwordPort} ${options.bindAddress}`,
    ...tls,
    "",
  ].join("\n");
}
