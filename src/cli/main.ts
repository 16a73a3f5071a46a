import { createRequire } from "node:module";
import { Command, CommanderError } from "commander";
import { auditCommand } from "./commands/audit.js";
import { devicesCommand } from "./commands/devices.js";
import { installCommand } from "./commands/install.js";
import { renderCommand } from "./commands/render.js";
import { runCommand } from "./commands/run.js";
import { verifyCommand } from "./commands/verify.js";
import { CheckFailed, type CliIo, type CommandFactory, ExitCode, UsageError } from "./io.js";

/** Every command; a new one is a module under commands/ and a line here. */
const COMMANDS: readonly CommandFactory[] = [
  runCommand,
  installCommand,
  verifyCommand,
  renderCommand,
  devicesCommand,
  auditCommand,
];

/**
 * The command line. Works as `iot-tenant-operator` and as the kubectl plugin `kubectl iot`.
 * Exit codes: 0 done, 1 a check or an operation failed, 2 the command line or a setting is wrong.
 */
export function program(io: CliIo, name = "iot-tenant-operator"): Command {
  const root = new Command(name)
    .description("Kubernetes operator that enforces IoT tenant isolation, and the tools to check and feed it")
    .version(packageVersion());
  for (const factory of COMMANDS) root.addCommand(factory(io));
  configure(root, io);
  return root;
}

/** Help on stdout, errors on stderr with a pointer to --help, and no process.exit: main decides. */
function configure(command: Command, io: CliIo): void {
  command
    .exitOverride()
    .showHelpAfterError(`(run ${commandPath(command)} --help for usage)`)
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
    });
  for (const sub of command.commands) configure(sub, io);
}

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

export async function main(args: readonly string[], io: CliIo = processIo(), name?: string): Promise<number> {
  try {
    await program(io, name).parseAsync([...args], { from: "user" });
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has already printed the message (or the help that was asked for).
      return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    const message = error instanceof Error ? error.message : String(error);
    io.stderr.write(`${name ?? "iot-tenant-operator"}: ${message}\n`);
    if (error instanceof UsageError) return ExitCode.usage;
    if (!(error instanceof CheckFailed) && io.env.DEBUG && error instanceof Error)
      io.stderr.write(`${error.stack}\n`);
    return ExitCode.failed;
  }
}

/** From src/cli and dist/cli alike, the package's manifest is two folders up. */
function packageVersion(): string {
  return (createRequire(import.meta.url)("../../package.json") as { version: string }).version;
}

export function processIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env };
}
