import { describe, expect, it } from "vitest";
import {
  TOPIC_FILTER_MAX_DEPTH,
  TOPIC_FILTER_MAX_LENGTH,
  TOPIC_ROOT_PATTERN,
  topicFilterProblem,
  topicFilterSchema,
} from "./topics.js";

const levels = (count: number) => Array(count).fill("l").join("/");

describe("topicFilterProblem", () => {
  it.each([
    "#",
    "+",
    "devices/sensor-1/#",
    "sites/+/floors/+/telemetry",
    "+/#",
    "a$b/c",
    "émoji/😀",
    "with space/ok",
    levels(TOPIC_FILTER_MAX_DEPTH),
    "a".repeat(TOPIC_FILTER_MAX_LENGTH),
    // 256 code points but 512 UTF-16 units: the API server counts code points.
    "😀".repeat(TOPIC_FILTER_MAX_LENGTH),
  ])("accepts %j", (filter) => {
    expect(topicFilterProblem(filter)).toBeUndefined();
    expect(topicFilterSchema.safeParse(filter).success).toBe(true);
  });

  it.each([
    ["", "1 to 256"],
    ["a".repeat(TOPIC_FILTER_MAX_LENGTH + 1), "1 to 256"],
    ["$SYS/#", "no leading '$'"],
    ["$share/group/#", "no leading '$'"],
    ["a/#/b", "'#' only as the last level"],
    ["a/b#", "'#' only as the last level"],
    ["#/a", "'#' only as the last level"],
    ["a+/b", "'+' and '#' only as whole levels"],
    ["a/+b", "'+' and '#' only as whole levels"],
    ["/a", "non-empty levels"],
    ["a/", "non-empty levels"],
    ["a//b", "non-empty levels"],
    ["a\u0000b", "no NUL"],
    ["line\nbreak", "control characters"],
    [levels(TOPIC_FILTER_MAX_DEPTH + 1), `at most ${TOPIC_FILTER_MAX_DEPTH} levels`],
  ])("refuses %j: %s", (filter, reason) => {
    expect(topicFilterProblem(filter)).toContain(reason);
    expect(topicFilterSchema.safeParse(filter).error?.issues[0]?.message).toContain(reason);
  });
});

describe("topic root pattern", () => {
  const root = new RegExp(TOPIC_ROOT_PATTERN);
  it.each(["tenants/acme", "acme", "eu-west.1/acme_corp", levels(8)])("accepts %j", (value) => {
    expect(value).toMatch(root);
  });
  it.each([
    "",
    "/tenants",
    "tenants/",
    "tenants//acme",
    "tenants/+",
    "tenants/#",
    "$SYS",
    "a b",
    "%u",
    levels(9),
  ])("refuses %j", (value) => {
    expect(value).not.toMatch(root);
  });
});
