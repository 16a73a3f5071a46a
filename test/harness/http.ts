import { readFile } from "node:fs/promises";
import { request } from "node:https";

/** GETs an HTTPS URL on loopback; resolves with the status code and body. */
export async function httpsGet(
  url: string,
  tls: { caFile?: string; certFile?: string; keyFile?: string; insecure?: boolean },
): Promise<{ status: number; body: string }> {
  const [ca, cert, key] = await Promise.all(
    [tls.caFile, tls.certFile, tls.keyFile].map((f) => (f ? readFile(f) : undefined)),
  );
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, cert, key, rejectUnauthorized: !tls.insecure, timeout: 5_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`timeout GET ${url}`)));
    req.on("error", reject);
    req.end();
  });
}

/** GETs a plain HTTP URL on loopback (a component's health endpoint). */
export async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: await res.text() };
}
