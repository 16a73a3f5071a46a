import { quarantineOf } from "../desired/quarantine.js";
import type { Change } from "../runtime/controller.js";
import type { KubeObject } from "../runtime/kube-object.js";
import { Priority } from "../runtime/work-queue.js";

/**
 * Which changes take broker access away (I4): they go to the front of the queue, ahead of the
 * provisioning backlog. Everything else keeps the runtime's default priority.
 */

type WithSpec = KubeObject & { spec?: { enabled?: unknown; suspended?: unknown } };

const deleting = (object: KubeObject) => object.metadata.deletionTimestamp !== undefined;

/** Disabled, quarantined, being deleted or gone: the Device must lose its access. */
export const deviceChangePriority = (change: Change): number | undefined =>
  cutsOff(
    change,
    (device) =>
      deleting(device) || (device as WithSpec).spec?.enabled === false || quarantineOf(device) !== undefined,
  );

/** Suspended, being deleted or gone: every device of the Tenant must lose its access. */
export const tenantChangePriority = (change: Change): number | undefined =>
  cutsOff(change, (tenant) => deleting(tenant) || (tenant as WithSpec).spec?.suspended === true);

/**
 * A delete, or a change into the cut-off state. An object first seen already cut off counts too:
 * a Device disabled while the operator was down is dropped before the start-up backlog.
 */
function cutsOff(change: Change, isCutOff: (object: KubeObject) => boolean): number | undefined {
  const now = change.deleted === true || isCutOff(change.current);
  const before = change.previous !== undefined && isCutOff(change.previous);
  return now && !before ? Priority.cutOff : undefined;
}
