import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { buildWith } from "./stack.js";

export interface Verdict {
  readonly status: string;
  readonly message: string;
}

export interface GitOpsHealth {
  /** Argo CD's verdict: the health Lua script run by gopher-lua, the interpreter Argo CD embeds. */
  argo(script: string, object: object): Verdict;
  /** kstatus' Compute, what Flux's health checks and the cli-utils appliers read. */
  kstatus(object: object): Verdict;
}

/** Builds (or finds cached) test/tools/gitops and returns its two judges. */
export async function gitOpsHealth(): Promise<GitOpsHealth> {
  const binary = join(await buildWith("build-gitops.sh"), "gitops-health");
  const judge = (args: string[], object: object): Verdict =>
    JSON.parse(execFileSync(binary, args, { input: JSON.stringify(object), encoding: "utf8" })) as Verdict;
  return {
    argo: (script, object) => judge(["lua", script], object),
    kstatus: (object) => judge(["kstatus"], object),
  };
}
