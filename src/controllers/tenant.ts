import { ConditionReason, TenantConditionType } from "../api/conditions.js";
import { tenantCAName } from "../api/derived-names.js";
import type { Tenant } from "../api/tenant.js";
import type { BrokerAdapter } from "../broker/adapter.js";
import type { OperatorConfig } from "../config.js";
import { MANAGED_BY_LABEL, MANAGER, TENANT_FINALIZER, TENANT_LABEL } from "../desired/labels.js";
import {
  DEVICES_QUOTA_RESOURCE,
  type KubeObject as DesiredObject,
  desiredTenant,
  foreignAdmins,
  foreignAllowFrom,
  type NamespaceFacts,
  namespacesNamedBy,
  TenantObjectName,
  tenantNamespaces,
  tenantTopicRoot,
  topicRootConflict,
  topicRootsOverlap,
} from "../desired/tenant.js";
import { tenantConditions } from "../desired/tenant-status.js";
import { applyIfChanged, applyStatusIfChanged } from "../runtime/apply.js";
import { type ConditionUpdate, conditionsOf, isReady, setCondition } from "../runtime/conditions.js";
import {
  addedOrDeleted,
  beyondStatus,
  type ReconcileContext,
  type ReconcileRequest,
  type ReconcileResult,
} from "../runtime/controller.js";
import { ensureFinalizer, removeFinalizer } from "../runtime/finalizers.js";
import type { Informer } from "../runtime/informer.js";
import { type KubeObject, objectKey, type ResourceType, resourcePath } from "../runtime/kube-object.js";
import type { Manager } from "../runtime/manager.js";
import { tenantChangePriority } from "./cut-off.js";
import { parseTenantObject, tenantPlacement } from "./parse.js";
import { indexedByTenant, Resource, resourceOf, TENANT_INDEX } from "./resources.js";
import { TenantCA } from "./tenant-ca.js";

/** What the tenant reconciler needs from the broker side: readiness, and cleanup on deletion. */
export interface TenantBroker {
  /** BrokerReady mirrors this: is the broker reachable and in sync for this tenant? */
  tenantStatus(tenant: string): { ready: boolean; message: string };
  /** Called when the broker goes down or comes back; returns the unsubscribe function. */
  onBrokerStatusChange(listener: () => void): () => void;
  /** Removes every trace of the tenant from the broker; called by the finalizer. */
  removeTenant(tenant: string): Promise<void>;
}

const managedSelector = `${TENANT_LABEL},${MANAGED_BY_LABEL}=${MANAGER}`;
/** Kinds the reconciler creates inside tenant namespaces, and prunes when no longer desired. */
const namespacedKinds = [
  Resource.networkPolicy,
  Resource.roleBinding,
  Resource.resourceQuota,
  Resource.limitRange,
];
const pkiKinds = [Resource.certificate, Resource.issuer];
const REQUEUE_WHILE_WAITING_MS = 5_000;
/** Reasons that only say "not yet": they resolve by themselves and get no Warning of their own. */
const WAITING_REASONS = new Set<string>([
  ConditionReason.Progressing,
  ConditionReason.DependencyNotReady,
  ConditionReason.IssuerNotReady,
]);

/** Names of the other tenants whose topic root overlaps `changed`'s. */
export function overlappingTenants(tenants: Informer, changed: KubeObject): string[] {
  const root = tenantTopicRoot(tenantPlacement(changed));
  return tenants
    .list()
    .filter(
      (t) =>
        t.metadata.name !== changed.metadata.name &&
        topicRootsOverlap(root, tenantTopicRoot(tenantPlacement(t))),
    )
    .map((t) => t.metadata.name);
}

function ownedBy(object: KubeObject | undefined, uid: string | undefined): boolean {
  return Boolean(uid && object?.metadata.ownerReferences?.some((ref) => ref.uid === uid && ref.controller));
}

/**
 * Tenant → namespaces, NetworkPolicies, RBAC, quotas and a CA: gather from the caches,
 * compute the desired state, apply what differs, prune what is no longer desired (only
 * objects this Tenant owns, by UID), then write status.
 */
export class TenantReconciler {
  private readonly tenants: Informer;
  private readonly namespaces: Informer;
  private readonly devices: Informer;
  private readonly children: Map<ResourceType, Informer>;
  private readonly pki: Map<ResourceType, Informer>;
  private readonly ca: TenantCA;

  constructor(
    private readonly manager: Manager,
    private readonly config: OperatorConfig,
    private readonly broker: TenantBroker,
    /** Clears what a deleted tenant left under its topic root. */
    private readonly retained: Pick<BrokerAdapter, "purgeTenant">,
  ) {
    this.tenants = manager.informer(Resource.tenant);
    this.namespaces = indexedByTenant(manager.informer(Resource.namespace));
    this.devices = manager.informer(Resource.device);
    this.children = new Map(
      namespacedKinds.map((kind) => [
        kind,
        indexedByTenant(manager.informer(kind, { labelSelector: managedSelector })),
      ]),
    );
    this.pki = new Map(
      pkiKinds.map((kind) => [
        kind,
        manager.informer(kind, { namespace: config.OPERATOR_NAMESPACE, labelSelector: managedSelector }),
      ]),
    );
    this.ca = new TenantCA(manager, config);
  }

  register(): void {
    const byTenantLabel = (object: KubeObject) => {
      const tenant = object.metadata.labels?.[TENANT_LABEL];
      return tenant ? [tenant] : [];
    };
    // A namespace appearing, going away or changing hands can free or block a tenant's namespace,
    // allow-list entry or admin: reconcile every tenant whose spec names it, and the one it is labelled for.
    const byNamedNamespace = (namespace: KubeObject) => [
      ...new Set([
        ...byTenantLabel(namespace),
        ...this.tenants
          .list()
          .filter((t) => namespacesNamedBy(tenantPlacement(t)).includes(namespace.metadata.name))
          .map((t) => t.metadata.name),
      ]),
    ];
    const byDeviceNamespace = (device: KubeObject) => {
      const namespace = this.namespaces.get(device.metadata.namespace ?? "");
      return namespace ? byTenantLabel(namespace) : [];
    };
    const controller = this.manager.addController({
      name: "tenant",
      for: this.tenants,
      priority: tenantChangePriority,
      watches: [
        { informer: this.namespaces, map: byNamedNamespace },
        // Only the device count is the tenant's business: not each Device's status updates.
        { informer: this.devices, map: byDeviceNamespace, when: addedOrDeleted },
        // A tenant whose root overlaps this one's appearing or leaving settles who keeps the root.
        { informer: this.tenants, map: (changed) => overlappingTenants(this.tenants, changed) },
        ...[...this.children.values()].map((informer) => ({ informer, map: byTenantLabel })),
        // The Issuer's status says whether it is ready; device Certificates (same labels) only their spec.
        { informer: this.pki.get(Resource.issuer) as Informer, map: byTenantLabel },
        { informer: this.pki.get(Resource.certificate) as Informer, map: byTenantLabel, when: beyondStatus },
        // Of the tenant's Secrets only its CA is this reconciler's; device Secrets are thousands.
        {
          informer: this.ca.secrets as Informer,
          map: (secret: KubeObject) =>
            byTenantLabel(secret).filter((tenant) => secret.metadata.name === tenantCAName(tenant)),
        },
        // A new or rotated root CA re-signs every tenant's CA.
        { informer: this.ca.root, map: () => this.tenants.list().map((t) => t.metadata.name) },
      ],
      reconcile: (request, context) => this.reconcile(request, context),
    });
    // The broker is no API object to watch: its going down or coming back reaches BrokerReady this way.
    this.broker.onBrokerStatusChange(() => {
      for (const tenant of this.tenants.list()) controller.queue.add(tenant.metadata.name);
    });
  }

  async reconcile(
    request: ReconcileRequest,
    context: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const observed = this.tenants.get(request.key);
    if (!observed) return undefined;
    const tenant = parseTenantObject(observed);
    const { signal } = context;

    if (observed.metadata.deletionTimestamp) {
      await this.finalize(observed, signal);
      return undefined;
    }
    await ensureFinalizer(this.manager.client, Resource.tenant, observed, TENANT_FINALIZER, signal);

    const facts = this.namespaceFacts(tenant);
    const desired = desiredTenant(tenant, this.config, facts);
    const ready = desired.namespaces
      .map((ns) => ns.metadata.name)
      .filter((name) => {
        const namespace = this.namespaces.get(name);
        return namespace !== undefined && !namespace.metadata.deletionTimestamp;
      });

    let writes = 0;
    const apply = async (object: DesiredObject, cache: Informer | undefined) => {
      const key = objectKey({ namespace: object.metadata.namespace, name: object.metadata.name });
      if (await applyIfChanged(this.manager.client, resourceOf(object), object, cache?.get(key), signal))
        writes++;
    };
    for (const namespace of desired.namespaces) await apply(namespace, this.namespaces);
    for (const object of desired.namespaced) {
      if (ready.includes(object.metadata.namespace ?? "")) {
        await apply(object, this.children.get(resourceOf(object)));
      }
    }
    const ca = await this.ca.reconcile(tenant, context);
    for (const object of desired.pki) await apply(object, this.pki.get(resourceOf(object)));
    const pruned = await this.prune(tenant, [...desired.namespaces, ...desired.namespaced], signal);

    // Until the quota controller has counted the devices (status.used), the API server refuses every Device.
    const quotaPending = ready.filter((ns) => {
      const quota = this.children
        .get(Resource.resourceQuota)
        ?.get(objectKey({ namespace: ns, name: TenantObjectName.quota }));
      return (
        (quota as { status?: { used?: Record<string, string> } } | undefined)?.status?.used?.[
          DEVICES_QUOTA_RESOURCE
        ] === undefined
      );
    });
    const issuerReady = isReady(
      this.pki.get(Resource.issuer)?.get(objectKey(desired.pki[0]?.metadata ?? { name: "" })),
    );
    const conditions = tenantConditions({
      wantedNamespaces: desired.namespaces.length,
      readyNamespaces: ready,
      notOwned: [...facts.notOwned],
      quotaPending,
      foreignAllowFrom: foreignAllowFrom(tenant, facts),
      foreignAdmins: foreignAdmins(tenant, facts),
      pki:
        ca.ready && !issuerReady
          ? {
              ready: false,
              reason: ConditionReason.IssuerNotReady,
              message: "waiting for cert-manager to accept the tenant's CA Issuer",
            }
          : ca,
      broker: this.broker.tenantStatus(tenant.metadata.name),
      topicRoot: tenantTopicRoot(tenant),
      rootConflict: topicRootConflict(tenant, this.tenants.list().map(tenantPlacement)),
    });
    await this.writeStatus(
      observed,
      {
        namespaces: ready,
        deviceCount: ready.reduce((sum, ns) => sum + this.devices.count(ns), 0),
        topicRoot: tenantTopicRoot(tenant),
        conditions,
      },
      context,
    );

    if (writes || pruned)
      context.logger.info({ tenant: tenant.metadata.name, writes, pruned }, "tenant converged");
    const waiting = quotaPending.length > 0 || !issuerReady || ready.length < desired.namespaces.length;
    return {
      requeueAfterMs: waiting ? Math.min(REQUEUE_WHILE_WAITING_MS, ca.requeueAfterMs) : ca.requeueAfterMs,
    };
  }

  /** Which namespaces the spec names are not this tenant's: existing and not owned (I7), or another tenant's. */
  private namespaceFacts(tenant: Tenant & { metadata: KubeObject["metadata"] }): NamespaceFacts {
    const notOwned = new Set<string>();
    const ofOtherTenants = new Set<string>();
    for (const name of namespacesNamedBy(tenant)) {
      const namespace = this.namespaces.get(name);
      if (!namespace) continue;
      if (!ownedBy(namespace, tenant.metadata.uid) && tenantNamespaces(tenant).includes(name))
        notOwned.add(name);
      const owner = namespace.metadata.labels?.[TENANT_LABEL];
      if (owner && owner !== tenant.metadata.name) ofOtherTenants.add(name);
    }
    return { notOwned, ofOtherTenants };
  }

  /** Deletes what this Tenant owns (by UID) and no longer wants; returns how many objects it deleted. */
  private async prune(
    tenant: { metadata: KubeObject["metadata"] },
    desired: readonly DesiredObject[],
    signal: AbortSignal,
  ): Promise<number> {
    const wanted = new Set(desired.map((o) => `${o.kind}/${objectKey(o.metadata)}`));
    const candidates: Array<[ResourceType, KubeObject]> = [
      ...this.namespaces
        .byIndex(TENANT_INDEX, tenant.metadata.name)
        .map((ns): [ResourceType, KubeObject] => [Resource.namespace, ns]),
      ...[...this.children].flatMap(([kind, informer]) =>
        informer
          .byIndex(TENANT_INDEX, tenant.metadata.name)
          .map((o): [ResourceType, KubeObject] => [kind, o]),
      ),
    ];
    let deleted = 0;
    for (const [kind, object] of candidates) {
      if (wanted.has(`${kind.kind}/${objectKey(object.metadata)}`)) continue;
      if (!ownedBy(object, tenant.metadata.uid) || object.metadata.deletionTimestamp) continue;
      await this.manager.client.delete(kind, object.metadata, { signal });
      deleted++;
    }
    return deleted;
  }

  /**
   * What garbage collection cannot clean: broker state and the CA objects in the operator's
   * namespace (cert-manager leaves the CA Secret behind). Namespaces go by owner reference.
   */
  private async finalize(observed: KubeObject, signal: AbortSignal): Promise<void> {
    if (!observed.metadata.finalizers?.includes(TENANT_FINALIZER)) return;
    const tenant = observed.metadata.name;
    await this.broker.removeTenant(tenant);
    // A root another tenant still shares (this one was refused as overlapping it) is that tenant's.
    if (overlappingTenants(this.tenants, observed).length === 0)
      await this.retained.purgeTenant({ tenant, topicRoot: tenantTopicRoot(tenantPlacement(observed)) });
    // Labels say whose an object claims to be; only the owner reference by UID says it is this Tenant's
    // (I7). cert-manager's issued Secrets carry no owner: they are the Tenant's when an owned Certificate names them.
    const owned = (item: KubeObject) => ownedBy(item, observed.metadata.uid);
    const issuedSecrets = new Set<string>();
    for (const kind of [...pkiKinds, Resource.secret]) {
      const listed = (await this.manager.client.request({
        verb: "list",
        method: "GET",
        path: resourcePath(kind, { namespace: this.config.OPERATOR_NAMESPACE }),
        query: { labelSelector: `${TENANT_LABEL}=${tenant},${MANAGED_BY_LABEL}=${MANAGER}` },
        signal,
      })) as { items?: Array<KubeObject & { spec?: { secretName?: string } }> };
      for (const item of listed.items ?? []) {
        if (kind === Resource.certificate && owned(item) && item.spec?.secretName)
          issuedSecrets.add(item.spec.secretName);
        if (owned(item) || (kind === Resource.secret && issuedSecrets.has(item.metadata.name)))
          await this.manager.client.delete(kind, item.metadata, { signal });
      }
    }
    await removeFinalizer(this.manager.client, Resource.tenant, observed, TENANT_FINALIZER, signal);
  }

  private async writeStatus(
    observed: KubeObject,
    status: {
      namespaces: string[];
      deviceCount: number;
      topicRoot: string;
      conditions: ConditionUpdate[];
    },
    context: ReconcileContext,
  ): Promise<void> {
    const at = { generation: observed.metadata.generation, nowMs: this.manager.clock.now() };
    let conditions = conditionsOf(observed);
    for (const update of status.conditions) conditions = setCondition(conditions, update, at);
    const ready = status.conditions.find((c) => c.type === TenantConditionType.Ready);
    const allTrue = ready?.status === "True";
    const wasReady = isReady(observed);
    const written = await applyStatusIfChanged(
      this.manager.client,
      Resource.tenant,
      observed,
      {
        observedGeneration: observed.metadata.generation,
        namespaces: status.namespaces,
        deviceCount: status.deviceCount,
        topicRoot: status.topicRoot,
        conditions,
      },
      context.signal,
    );
    if (!written) return;
    // A problem only the user can fix gets its own Warning when it appears; readiness flips get one too.
    const previous = conditionsOf(observed);
    // Ready and Stalled summarise the others, which carry the reasons.
    const summaries = new Set<string>([TenantConditionType.Ready, TenantConditionType.Stalled]);
    for (const update of status.conditions.filter((c) => !summaries.has(c.type))) {
      const before = previous.find((c) => c.type === update.type);
      const userFixable = update.status === "False" && !WAITING_REASONS.has(update.reason);
      if (userFixable && (before?.status !== "False" || before.reason !== update.reason)) {
        await this.manager.events.record(observed, {
          type: "Warning",
          reason: update.reason,
          action: "Reconcile",
          note: update.message ?? update.reason,
        });
      }
    }
    if (wasReady !== allTrue) {
      await this.manager.events.record(observed, {
        type: allTrue ? "Normal" : "Warning",
        reason: allTrue ? "Ready" : "NotReady",
        action: "Reconcile",
        note: ready?.message ?? "",
      });
    }
  }
}
