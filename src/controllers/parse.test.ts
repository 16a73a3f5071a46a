import { describe, expect, it } from "vitest";
import { tenantNamespaces, tenantTopicRoot } from "../desired/tenant.js";
import { tenantPlacement } from "./parse.js";

const metadata = { name: "acme", uid: "u", resourceVersion: "1" };

describe("tenantPlacement", () => {
  it.each([
    [{ metadata }, ["acme"], "tenants/acme"],
    [
      { metadata, spec: { namespaces: ["a", "b"], broker: { topicRoot: "fleet/acme" } } },
      ["a", "b"],
      "fleet/acme",
    ],
    [{ metadata, spec: { broker: {} } }, ["acme"], "tenants/acme"],
  ])("reads where %o lives, with the API's defaults", (object, namespaces, root) => {
    const placement = tenantPlacement(object);
    expect(tenantNamespaces(placement)).toEqual(namespaces);
    expect(tenantTopicRoot(placement)).toBe(root);
  });
});
