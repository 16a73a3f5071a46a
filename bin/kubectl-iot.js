#!/usr/bin/env node
// kubectl runs `kubectl-iot` on PATH for `kubectl iot …`; help and errors name it that way.
import { main } from "../dist/cli/main.js";

process.exitCode = await main(process.argv.slice(2), undefined, "kubectl iot");
