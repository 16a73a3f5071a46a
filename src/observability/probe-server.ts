import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface ProbeServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly registry: Registry;
  /** Why the process is not ready, or undefined when it is. */
  readonly notReadyReason: () => string | undefined;
}

export interface ProbeServer {
  readonly port: number;
  close(): Promise<void>;
}

/** `/healthz` (the event loop answers), `/readyz` (see `notReadyReason`) and `/metrics`. */
export async function startProbeServer(options: ProbeServerOptions): Promise<ProbeServer> {
  const server: Server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://probe").pathname;
    const reply = (status: number, body: string, contentType = "text/plain; charset=utf-8") => {
      response.writeHead(status, { "content-type": contentType });
      response.end(body);
    };
    if (request.method !== "GET") return reply(405, "method not allowed\n");
    if (path === "/healthz") return reply(200, "ok\n");
    if (path === "/readyz") {
      const reason = options.notReadyReason();
      return reason === undefined ? reply(200, "ok\n") : reply(503, `${reason}\n`);
    }
    if (path === "/metrics") {
      options.registry.metrics().then(
        (text) => reply(200, text, options.registry.contentType),
        (error: unknown) => reply(500, `${String(error)}\n`),
      );
      return;
    }
    reply(404, "not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
