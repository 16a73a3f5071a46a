/**
 * Prints the README's performance table (markdown) from the committed files in bench/results/.
 *   npm run perf:table
 */
import { fileURLToPath } from "node:url";
import { performanceTable, readResults } from "../bench/support/results.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
process.stdout.write(performanceTable(await readResults(repoRoot)));
