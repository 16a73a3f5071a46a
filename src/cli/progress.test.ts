import { describe, expect, it } from "vitest";
import { progress, progressLine } from "./progress.js";

describe("import progress", () => {
  it.each([
    {
      state: { done: 0, failed: 0, total: 10, elapsedMs: 0 },
      bar: true,
      line: `[${".".repeat(30)}] 0/10 (0%), 0 failed, 0/s`,
    },
    {
      state: { done: 5, failed: 1, total: 10, elapsedMs: 2_000 },
      bar: true,
      line: `[${"#".repeat(15)}${".".repeat(15)}] 5/10 (50%), 1 failed, 3/s`,
    },
    {
      state: { done: 10, failed: 0, total: 10, elapsedMs: 1_000 },
      bar: false,
      line: "10/10 (100%), 0 failed, 10/s",
    },
    { state: { done: 0, failed: 0, total: 0, elapsedMs: 5 }, bar: false, line: "0/0 (100%), 0 failed, 0/s" },
  ])("shows $state as $line", ({ state, bar, line }) => {
    expect(progressLine(state, bar)).toBe(line);
  });

  it("redraws a bar in place on a terminal and writes plain lines every few seconds elsewhere", () => {
    let clock = 0;
    const run = (isTTY: boolean) => {
      const written: string[] = [];
      const p = progress({ write: (t: string) => written.push(t), isTTY }, "importing", 100, () => clock);
      for (let i = 0; i < 100; i++) {
        clock += 100;
        p.advance(i === 7);
      }
      p.finish();
      return written;
    };
    const tty = run(true);
    expect(tty.length).toBeGreaterThan(50);
    expect(tty.every((t) => t.startsWith("\r\x1b[2K"))).toBe(true);
    expect(tty.at(-1)).toMatch(/\[#{30}\] 100\/100 \(100%\), 1 failed.*\n$/);
    const log = run(false);
    expect(log).toHaveLength(2 + 1);
    expect(log.every((t) => /^importing \d+\/100 .*\n$/.test(t))).toBe(true);
  });
});
