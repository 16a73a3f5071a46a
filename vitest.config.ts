import { defineConfig } from "vitest/config";

// Unit tests (`*.test.ts`) need nothing running. Integration tests (`*.int.test.ts`) share one real
// stack (control plane, cert-manager, Mosquitto) started by the global setup. Tests that run the
// operator itself go last and one file at a time: an operator reconciles every Tenant in the
// cluster, so it must not run beside tests that create Tenants for other reasons.
const operatorTests = [
  "src/audit/security-events.int.test.ts",
  "src/audit/security-event-kinds.int.test.ts",
  "src/controllers/**/*.int.test.ts",
  "src/verify/**/*.int.test.ts",
  "src/cli/**/*.int.test.ts",
  "src/desired/operator-rbac.int.test.ts",
  "src/operator.int.test.ts",
  "src/broker/nats-operator.int.test.ts",
  "src/converged.int.test.ts",
  "src/faults.int.test.ts",
  "src/faults-outages.int.test.ts",
];
const integration = {
  testTimeout: 120_000,
  hookTimeout: 300_000,
};

export default defineConfig({
  test: {
    globalSetup: ["test/harness/global-setup.ts"],
    projects: [
      {
        test: {
          name: "unit",
          include: ["src/**/*.test.ts", "test/**/*.test.ts", "bench/**/*.test.ts"],
          exclude: ["**/*.int.test.ts", "**/*.node.test.ts", "**/node_modules/**"],
        },
      },
      {
        test: {
          ...integration,
          name: "integration",
          include: ["src/**/*.int.test.ts", "test/**/*.int.test.ts"],
          exclude: [...operatorTests, "**/node_modules/**"],
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          ...integration,
          name: "operator",
          include: operatorTests,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
      {
        // Packet-level tests on a real node (`*.node.test.ts`): a stack of their own, one file at a time.
        test: {
          ...integration,
          name: "node",
          include: ["src/**/*.node.test.ts", "test/**/*.node.test.ts", "scripts/**/*.node.test.ts"],
          globalSetup: ["test/harness/global-setup-node.ts"],
          fileParallelism: false,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
