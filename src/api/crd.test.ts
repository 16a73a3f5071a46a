import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { customResourceDefinition, RESOURCES, renderCrdFiles } from "./crd.js";
import type { OpenApiSchema } from "./openapi.js";

const repoRoot = join(import.meta.dirname, "../..");

/** Every property below `schema`, with its dotted path. */
function* properties(schema: OpenApiSchema, path: string): Generator<[string, OpenApiSchema]> {
  for (const [name, child] of Object.entries(schema.properties ?? {})) {
    yield [`${path}.${name}`, child];
    yield* properties(child, `${path}.${name}`);
  }
  if (schema.items) yield* properties(schema.items, `${path}[]`);
  if (schema.additionalProperties) yield* properties(schema.additionalProperties, `${path}{}`);
}

describe("generated CRDs", () => {
  it.each([
    ...renderCrdFiles(),
  ])("crds/%s is what `npm run generate:crds` writes", async (name, generated) => {
    const committed = await readFile(join(repoRoot, "crds", name), "utf8");
    expect(committed, "crds/ is stale: run `npm run generate:crds`").toBe(generated);
  });

  describe.each(RESOURCES.map((resource) => [resource.kind, resource] as const))("%s", (_, resource) => {
    const { openAPIV3Schema } = customResourceDefinition(resource).spec.versions[0]?.schema ?? {};
    const root = openAPIV3Schema as OpenApiSchema;

    it("describes every field, so that kubectl explain teaches", () => {
      const undescribed = [...properties(root, resource.kind.toLowerCase())]
        .filter(([path, schema]) => !schema.description && !path.endsWith(".metadata"))
        .map(([path]) => path);
      expect(undescribed).toEqual([]);
    });

    it("bounds every string, list and map, so CEL stays within its cost budget", () => {
      const kind = resource.kind.toLowerCase();
      const typeMeta = [`${kind}.apiVersion`, `${kind}.kind`];
      const unbounded = [...properties(root, kind)]
        .filter(([path, schema]) => {
          if (typeMeta.includes(path)) return false;
          if (schema.type === "string")
            return schema.maxLength === undefined && !schema.enum && !schema.format;
          if (schema.type === "array") return schema.maxItems === undefined;
          if (schema.additionalProperties) return schema.maxProperties === undefined;
          return false;
        })
        .map(([path]) => path);
      expect(unbounded).toEqual([]);
    });
  });
});
