import { request as httpRequest, type IncomingMessage, type RequestOptions } from "node:http";
import { request as httpsRequest } from "node:https";
import type { ApiVerb, OperatorMetrics } from "../observability/metrics.js";
import type { ClusterAccess } from "./cluster-access.js";
import { type KubeObject, kubeObjectSchema, type ResourceType, resourcePath } from "./kube-object.js";

/** The one field manager for everything this operator writes with server-side apply. */
export const FIELD_MANAGER = "iot-tenant-operator";

/** A non-2xx answer from the API server, with the fields of its `Status` body. */
export class KubeApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    /** The API server's own message, e.g. why admission refused the object. */
    readonly detail: string,
    readonly verb: ApiVerb,
    readonly path: string,
  ) {
    super(`${verb} ${path}: ${code} ${reason}: ${detail}`);
    this.name = "KubeApiError";
  }
}

export interface KubeRequest {
  readonly verb: ApiVerb;
  readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  readonly path: string;
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>>;
  readonly body?: unknown;
  readonly contentType?: string;
  readonly signal?: AbortSignal;
  /** Send the request as this identity (the caller needs the impersonate verb); `verify` asks as a tenant admin. */
  readonly impersonate?: { readonly user: string; readonly groups: readonly string[] };
}

export interface KubeClientOptions {
  readonly metrics?: OperatorMetrics;
  /** Per request, watches excluded. */
  readonly requestTimeoutMs?: number;
  /** Who owns the fields written (defaults to the operator); a user's tool names itself. */
  readonly fieldManager?: string;
}

/**
 * The one path every API request of the runtime takes, so each is counted by verb and status.
 * Plain node:https with the KubeConfig's credentials: streaming watches need control over the
 * socket (inactivity timeout, abort) that the generated clients do not give.
 */
export class KubeClient {
  private readonly requestTimeoutMs: number;
  private readonly fieldManager: string;

  constructor(
    readonly kubeConfig: ClusterAccess,
    private readonly options: KubeClientOptions = {},
  ) {
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.fieldManager = options.fieldManager ?? FIELD_MANAGER;
  }

  /** Sends a request and returns the parsed JSON body; throws KubeApiError on non-2xx. */
  async request(req: KubeRequest): Promise<unknown> {
    const signal = req.signal
      ? AbortSignal.any([req.signal, AbortSignal.timeout(this.requestTimeoutMs)])
      : AbortSignal.timeout(this.requestTimeoutMs);
    const response = await this.send(req, signal);
    const text = await readBody(response);
    this.count(req, response.statusCode);
    const status = response.statusCode ?? 0;
    if (status < 200 || status >= 300) throw apiErrorFrom(req, status, text);
    return text.length > 0 ? JSON.parse(text) : undefined;
  }

  /**
   * Opens a streaming request (a watch) and hands every newline-terminated line to `onLine`.
   * Resolves when the server ends the stream or `signal` aborts; throws KubeApiError on non-2xx.
   */
  async stream(req: KubeRequest & { signal: AbortSignal }, onLine: (line: string) => void): Promise<void> {
    let response: IncomingMessage;
    try {
      response = await this.send(req, req.signal);
    } catch (error) {
      if (req.signal.aborted) return;
      throw error;
    }
    this.count(req, response.statusCode);
    const status = response.statusCode ?? 0;
    if (status !== 200) throw apiErrorFrom(req, status, await readBody(response));
    let pending = "";
    response.setEncoding("utf8");
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => response.destroy();
      req.signal.addEventListener("abort", onAbort, { once: true });
      response.on("data", (chunk: string) => {
        pending += chunk;
        let newline = pending.indexOf("\n");
        while (newline >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          if (line.trim().length > 0) onLine(line);
          newline = pending.indexOf("\n");
        }
      });
      const finish = (error?: Error) => {
        req.signal.removeEventListener("abort", onAbort);
        if (error && !req.signal.aborted) reject(error);
        else resolve();
      };
      response.once("end", () => finish());
      response.once("error", finish);
      response.once("close", () =>
        finish(response.complete ? undefined : new Error("watch stream closed early")),
      );
    });
  }

  async get(
    resource: ResourceType,
    target: { namespace?: string; name: string },
    signal?: AbortSignal,
  ): Promise<KubeObject | undefined> {
    try {
      const body = await this.request({
        verb: "get",
        method: "GET",
        path: resourcePath(resource, target),
        signal,
      });
      return kubeObjectSchema.parse(body);
    } catch (error) {
      if (error instanceof KubeApiError && error.code === 404) return undefined;
      throw error;
    }
  }

  /**
   * Server-side apply of `intent` (apiVersion, kind, metadata.name[/namespace] and only the fields
   * we own), by default as the operator, forcing ownership of those fields from other managers.
   */
  async apply(resource: ResourceType, intent: ApplyIntent, signal?: AbortSignal): Promise<KubeObject> {
    return kubeObjectSchema.parse(await this.sendApply(resource, intent, undefined, signal));
  }

  /**
   * Server-side apply for a person (the client's field manager names their tool). With `dryRun` the API server
   * validates and admits the object but stores nothing, so there is no stored object to return.
   */
  async applyAs(resource: ResourceType, intent: ApplyIntent, options: ApplyOptions): Promise<void> {
    await this.sendApply(resource, intent, undefined, undefined, options);
  }

  /** Server-side apply through the status subresource: `intent` carries `status` and identity only. */
  async applyStatus(resource: ResourceType, intent: ApplyIntent, signal?: AbortSignal): Promise<KubeObject> {
    return kubeObjectSchema.parse(await this.sendApply(resource, intent, "status", signal));
  }

  async create(resource: ResourceType, object: ApplyIntent, signal?: AbortSignal): Promise<KubeObject> {
    const body = await this.request({
      verb: "create",
      method: "POST",
      path: resourcePath(resource, { namespace: object.metadata.namespace }),
      query: { fieldManager: this.fieldManager },
      body: object,
      signal,
    });
    return kubeObjectSchema.parse(body);
  }

  /** Replaces an object; `object.metadata.resourceVersion` makes it an optimistic (409 on race) write. */
  async update(resource: ResourceType, object: ApplyIntent, signal?: AbortSignal): Promise<KubeObject> {
    const body = await this.request({
      verb: "update",
      method: "PUT",
      path: resourcePath(resource, object.metadata),
      query: { fieldManager: this.fieldManager },
      body: object,
      signal,
    });
    return kubeObjectSchema.parse(body);
  }

  async mergePatch(
    resource: ResourceType,
    target: { namespace?: string; name: string; subresource?: "status" },
    patch: unknown,
    signal?: AbortSignal,
  ): Promise<KubeObject> {
    const body = await this.request({
      verb: "patch",
      method: "PATCH",
      path: resourcePath(resource, target),
      query: { fieldManager: this.fieldManager },
      body: patch,
      contentType: "application/merge-patch+json",
      signal,
    });
    return kubeObjectSchema.parse(body);
  }

  /** Deletes an object; a 404 counts as done. */
  async delete(
    resource: ResourceType,
    target: { namespace?: string; name: string },
    options: { propagationPolicy?: "Foreground" | "Background" | "Orphan"; signal?: AbortSignal } = {},
  ): Promise<void> {
    try {
      await this.request({
        verb: "delete",
        method: "DELETE",
        path: resourcePath(resource, target),
        body: options.propagationPolicy ? { propagationPolicy: options.propagationPolicy } : undefined,
        signal: options.signal,
      });
    } catch (error) {
      if (!(error instanceof KubeApiError && error.code === 404)) throw error;
    }
  }

  private async sendApply(
    resource: ResourceType,
    intent: ApplyIntent,
    subresource: "status" | undefined,
    signal: AbortSignal | undefined,
    { force = true, dryRun = false }: Partial<ApplyOptions> = {},
  ): Promise<unknown> {
    return this.request({
      verb: "apply",
      method: "PATCH",
      path: resourcePath(resource, { ...intent.metadata, subresource }),
      query: { fieldManager: this.fieldManager, force, ...(dryRun ? { dryRun: "All" } : {}) },
      // JSON is YAML, and apply-patch+yaml is the content type server-side apply is selected by.
      body: intent,
      contentType: "application/apply-patch+yaml",
      signal,
    });
  }

  private count(req: KubeRequest, status: number | undefined): void {
    this.options.metrics?.apiRequests.inc({
      verb: req.verb,
      code: status === undefined ? "error" : String(status),
      resource: resourceLabel(req.path),
    });
  }

  private async send(req: KubeRequest, signal: AbortSignal): Promise<IncomingMessage> {
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error("the kubeconfig has no current cluster");
    const url = new URL(cluster.server.replace(/\/$/, "") + req.path);
    for (const [key, value] of Object.entries(req.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const options: RequestOptions & { headers: Record<string, string | string[]> } = { headers: {} };
    await this.kubeConfig.applyToHTTPSOptions(options);
    const payload = req.body === undefined ? undefined : JSON.stringify(req.body);
    options.method = req.method;
    options.signal = signal;
    options.headers.accept = "application/json";
    if (req.impersonate) {
      options.headers["impersonate-user"] = req.impersonate.user;
      // Node sends an array header as one header line per value, as impersonation expects.
      options.headers["impersonate-group"] = [...req.impersonate.groups];
    }
    if (payload !== undefined) {
      options.headers["content-type"] = req.contentType ?? "application/json";
      options.headers["content-length"] = String(Buffer.byteLength(payload));
    }
    const send = url.protocol === "https:" ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const request = send(url, options, resolve);
      request.once("error", (error) => {
        this.count(req, undefined);
        reject(error);
      });
      request.end(payload);
    });
  }
}

/** Server-side apply that may take over others' fields, or a dry run the API server checks but does not store. */
export interface ApplyOptions {
  /** Take over fields another manager owns instead of failing with 409 Conflict. */
  readonly force: boolean;
  readonly dryRun: boolean;
}

/** What server-side apply needs: identity plus the fields we own. */
export interface ApplyIntent {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string } & Record<string, unknown>;
  readonly [field: string]: unknown;
}

/**
 * The body of a response, as text. Once read, the response keeps no listener of ours: a keep-alive
 * socket keeps the request it was opened for reachable as long as it lives (https.Agent's TLS session
 * listener), response and listeners included, and a listener left there kept the chunks or, through
 * the promise, the text — after the informers' first lists, 11 MB of list pages in a 10,000-device
 * operator's memory for good.
 */
export function readBody(response: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const onData = (chunk: Buffer) => chunks.push(chunk);
    const onError = (error: Error) => {
      response.off("data", onData);
      reject(error);
    };
    response.on("data", onData);
    response.once("error", onError);
    response.once("end", () => {
      response.off("data", onData).off("error", onError);
      resolve(Buffer.concat(chunks.splice(0)).toString("utf8"));
    });
  });
}

function apiErrorFrom(req: KubeRequest, status: number, text: string): KubeApiError {
  let reason = "Unknown";
  let message = text.slice(0, 500);
  try {
    const body = JSON.parse(text) as { reason?: unknown; message?: unknown };
    if (typeof body.reason === "string") reason = body.reason;
    if (typeof body.message === "string") message = body.message;
  } catch {
    // Not a Status object (a proxy's error page, say): keep the raw text.
  }
  return new KubeApiError(status, reason, message, req.verb, req.path);
}

/** `configmaps`, `leases`, `widgets/status`: the plural (and subresource) without names, for a bounded label set. */
function resourceLabel(path: string): string {
  const segments = path.split("/").filter(Boolean);
  const afterVersion = segments[0] === "api" ? segments.slice(2) : segments.slice(3);
  const withoutNamespace =
    afterVersion[0] === "namespaces" && afterVersion.length > 2 ? afterVersion.slice(2) : afterVersion;
  const [plural, , subresource] = withoutNamespace;
  return subresource ? `${plural}/${subresource}` : (plural ?? "unknown");
}
