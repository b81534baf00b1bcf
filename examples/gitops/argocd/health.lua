-- Argo CD health check for gaia.dev/GaiaNamespace (docs/gitops.md).
-- Install it as `resource.customizations.health.gaia.dev_GaiaNamespace` in the argocd-cm
-- ConfigMap (argocd-cm.yaml beside this file holds the same text).
-- It reads the conditions the Gaia operator writes: Ready True -> Healthy; Ready False with
-- reason Halted -> Suspended; Failed, Invalid, Incomplete or Conflict -> Degraded (nothing
-- more will happen without a change); anything else (Running, Pending, a spec the operator
-- has not seen yet) -> Progressing. Argo CD runs it with Lua 5.1 and no string library.
local hs = {}

local function condition(kind)
  for _, found in ipairs(obj.status.conditions) do
    if found.type == kind then
      return found
    end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Gaia operator to report on this namespace"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Gaia operator to apply generation " .. tostring(generation)
  return hs
end

local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Gaia operator's Ready condition"
  return hs
end

local message = ready.message or ""
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.reason == "Halted" then
  hs.status = "Suspended"
elseif ready.reason == "Failed" or ready.reason == "Invalid"
    or ready.reason == "Incomplete" or ready.reason == "Conflict" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
if ready.reason ~= nil then
  message = ready.reason .. ": " .. message
end
hs.message = message
return hs
