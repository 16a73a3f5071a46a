-- Argo CD health check for iot.tenant-operator.io Tenant and Device (the same script serves both).
-- Healthy: Ready is True for the object's current metadata.generation.
-- Degraded: Stalled is True, the operator's verdict that a condition is False for a reason only a
--   person can fix (the list is REASONS_NEEDING_A_PERSON in src/api/conditions.ts).
-- Suspended: the object is cut off on purpose (spec.enabled false, or its tenant is suspended).
-- Progressing: anything else, including no status yet and a status for an older generation.
local cutOff = { Suspended = true, Disabled = true }

local function text(value)
  if value == nil then return "" end
  return tostring(value)
end

local status = obj.status
if status == nil or status.conditions == nil then
  return { status = "Progressing", message = "Waiting for the operator to report status" }
end

local ready, stalled = nil, nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then ready = condition end
  if condition.type == "Stalled" then stalled = condition end
end
if ready == nil then
  return { status = "Progressing", message = "Waiting for the Ready condition" }
end

-- Every condition is written together with Ready, so Ready's generation dates Stalled too.
local observed = ready.observedGeneration
if observed == nil then observed = status.observedGeneration end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and observed ~= generation then
  return {
    status = "Progressing",
    message = "Waiting for the operator to observe generation " .. text(generation) .. " (status is for " .. text(observed) .. ")",
  }
end

if stalled ~= nil and stalled.status == "True" then
  return { status = "Degraded", message = text(stalled.message) }
end

if ready.status == "True" then
  return { status = "Healthy", message = text(ready.message) }
end
if cutOff[ready.reason] then
  return { status = "Suspended", message = text(ready.reason) .. ": " .. text(ready.message) }
end
return { status = "Progressing", message = text(ready.reason) .. ": " .. text(ready.message) }
