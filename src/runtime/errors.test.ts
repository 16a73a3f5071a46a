import { ApiException } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { classifyError, TerminalError, terminalReason } from "./errors.js";
import { KubeApiError } from "./kube-client.js";

const apiError = (code: number) => new KubeApiError(code, "Reason", "message", "apply", "/api/v1/configmaps");

describe("classifyError", () => {
  it.each([
    { name: "TerminalError", error: new TerminalError("bad spec"), expected: "terminal" },
    { name: "409 Conflict", error: apiError(409), expected: "conflict" },
    { name: "400 Bad Request", error: apiError(400), expected: "terminal" },
    { name: "422 Invalid", error: apiError(422), expected: "terminal" },
    { name: "404 Not Found", error: apiError(404), expected: "transient" },
    { name: "429 Too Many Requests", error: apiError(429), expected: "transient" },
    { name: "500 Internal Error", error: apiError(500), expected: "transient" },
    { name: "503 Unavailable", error: apiError(503), expected: "transient" },
    {
      name: "client-node ApiException 409",
      error: new ApiException(409, "conflict", {}, {}),
      expected: "conflict",
    },
    {
      name: "client-node ApiException 422",
      error: new ApiException(422, "invalid", {}, {}),
      expected: "terminal",
    },
    {
      name: "watch error with statusCode",
      error: Object.assign(new Error("Gone"), { statusCode: 503 }),
      expected: "transient",
    },
    {
      name: "network error (string code)",
      error: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }),
      expected: "transient",
    },
    { name: "a thrown string", error: "boom", expected: "transient" },
  ])("$name → $expected", ({ error, expected }) => {
    expect(classifyError(error)).toBe(expected);
  });
});

describe("terminalReason", () => {
  it("uses the TerminalError's reason, else names the HTTP failure", () => {
    expect(terminalReason(new TerminalError("x", { reason: "InvalidSpec" }))).toBe("InvalidSpec");
    expect(terminalReason(apiError(422))).toBe("Invalid");
    expect(terminalReason(apiError(400))).toBe("BadRequest");
  });
});
