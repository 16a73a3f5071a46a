import { once } from "node:events";
import { createServer, get, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { readBody } from "./kube-client.js";

describe("readBody", () => {
  const server = createServer((_, response) => response.end("x".repeat(100_000)));
  afterEach(() => {
    server.close();
  });

  it("returns the whole body and leaves no listener on the finished response (one would keep the body)", async () => {
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    const response = await new Promise<IncomingMessage>((resolve) =>
      get(`http://127.0.0.1:${port}/`, resolve),
    );
    const listeners = () => response.eventNames().map((event) => [event, response.listenerCount(event)]);
    const before = listeners();
    expect(await readBody(response)).toBe("x".repeat(100_000));
    // A keep-alive socket may keep the response reachable for its whole life, and its listeners with it.
    expect(listeners()).toEqual(before);
  });
});
