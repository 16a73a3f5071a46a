/**
 * One copy of each recurring string value in the caches. JSON.parse gives every object its own copy
 * of every value: with 10,000 Devices the same condition messages and reasons, label values, owner
 * kinds and issuer names were about 9 MB of the operator's heap. Fields that are unique per object
 * (names, uids, versions, timestamps) are left alone. The table is bounded by emptying it when full:
 * strings already shared stay shared, and a value seen once never outlives the objects holding it.
 */
const TABLE_LIMIT = 10_000;
/** Longer values are messages about one object (errors, notes): not worth a table entry. */
const MAX_LENGTH = 200;
const UNIQUE_FIELDS = new Set([
  "name",
  "uid",
  "resourceVersion",
  "creationTimestamp",
  "deletionTimestamp",
  "lastTransitionTime",
]);

export class StringTable {
  private table = new Map<string, string>();

  /** The shared copy of `value`. */
  intern(value: string): string {
    if (value.length > MAX_LENGTH) return value;
    const shared = this.table.get(value);
    if (shared !== undefined) return shared;
    if (this.table.size >= TABLE_LIMIT) this.table = new Map();
    this.table.set(value, value);
    return value;
  }

  /** Replaces, in place, every string value of a freshly parsed object (one not yet shared) with its shared copy. */
  internValues(object: unknown): void {
    if (Array.isArray(object)) {
      for (let i = 0; i < object.length; i++) {
        const item: unknown = object[i];
        if (typeof item === "string") object[i] = this.intern(item);
        else this.internValues(item);
      }
      return;
    }
    if (typeof object !== "object" || object === null) return;
    const record = object as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      const value = record[key];
      if (typeof value === "string") {
        if (!UNIQUE_FIELDS.has(key)) record[key] = this.intern(value);
      } else this.internValues(value);
    }
  }

  get size(): number {
    return this.table.size;
  }
}

/** One table for every informer of the process: the same strings recur across kinds. */
export const cacheStrings = new StringTable();
