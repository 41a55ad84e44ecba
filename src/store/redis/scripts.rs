//! The Lua scripts of the shared store: enforce's per-resource lease, and guard's facts (`JUDGE`,
//! `TEACH`; the hash they keep is described in [`super::facts`]). Each runs atomically on the Redis
//! server; every key of one resource carries the same hash tag (`{id}`), so on Redis Cluster they
//! live in one slot and a script may touch them all.
//!
//! Keys of a resource `id`: `precond:{id}:lease` (the holder's token, with a TTL) and
//! `precond:{id}:state`, a hash: `n`, the fence counter (incremented by every acquisition);
//! `fence`, the number of the last holder that published; `quiet`, until when a write an earlier
//! holder forwarded may still be in flight; one snapshot per caller partition, field `p:<hex>`.
//! The counter lives in the same key as what it is compared with, so that they expire together
//! (a counter that restarted could otherwise match an old published number).

/// Acquire: `SET lease token NX PX ttl`; on success the holder's fence number (`INCR fence`),
/// whether the chain is unbroken (the state's `fence` is this one minus one: the previous holder
/// published, nobody in between died or left an unknown outcome), and then the caller's snapshot;
/// when it is broken, how long (ms, by the server's clock) until every write an earlier holder
/// forwarded is past precond's own bound on it (`quiet`, set by `MARK`): the new holder must not
/// forward before. Returns nil when the lease is held by another.
///
/// KEYS: lease, state. ARGV: token, lease TTL (ms), snapshot field, state TTL (ms).
pub(super) const ACQUIRE: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local f = redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local published = tonumber(redis.call('HGET', KEYS[2], 'fence') or '-1')
if published == f - 1 then
  local snap = redis.call('HGET', KEYS[2], ARGV[3])
  if snap then
    return {f, 1, 0, snap}
  end
  return {f, 1, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local quiet = tonumber(redis.call('HGET', KEYS[2], 'quiet') or '0')
return {f, 0, math.max(0, quiet - now)}
";

/// Mark: the holder is about to forward its write; until `now + hold` (precond's bound on how
/// long it waits for the origin's answer) a holder after it whose chain is broken must not
/// forward. Returns 1, or 0 when the lease is no longer the holder's (then it must not forward).
///
/// Also records the holder's number as `marked`: from now on its write may change the resource,
/// so `PEEK` no longer answers from the published state.
///
/// KEYS: lease, state. ARGV: token, hold (ms), state TTL (ms), the holder's fence number.
pub(super) const MARK: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], 'marked', ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local quiet = tonumber(redis.call('HGET', KEYS[2], 'quiet') or '0')
redis.call('HSET', KEYS[2], 'quiet', math.max(quiet, now + tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

/// Renew: extend the lease's TTL while the holder still owns it. Returns 1, or 0 when the lease
/// was lost (expired, taken by another).
///
/// KEYS: lease. ARGV: token, lease TTL (ms).
pub(super) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Publish and release: only while the holder still owns the lease (a holder whose lease
/// expired cannot publish over a newer holder's result). `changed` drops every partition's
/// snapshot (the resource was written, or the holder found the chain broken: what other
/// partitions were shown before may be stale); the state's `fence` becomes the holder's number,
/// so the next holder knows the chain is unbroken; a snapshot given is stored for its partition,
/// unless the state already holds the most partitions' snapshots and not this one's (a caller
/// beyond them only loses the peek: its next write probes; no caller's credentials can grow the
/// hash without bound). Returns 1 when published, 0 when the lease was no longer the holder's.
///
/// KEYS: lease, state. ARGV: token, fence, "changed" | "unchanged", snapshot field ("" for
/// none), snapshot, state TTL (ms), most partitions' snapshots.
pub(super) const PUBLISH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] == 'changed' then
  local fields = redis.call('HKEYS', KEYS[2])
  for _, k in ipairs(fields) do
    if string.sub(k, 1, 2) == 'p:' then
      redis.call('HDEL', KEYS[2], k)
    end
  end
end
redis.call('HSET', KEYS[2], 'fence', ARGV[2])
if ARGV[4] ~= '' then
  local room = redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1
  if not room then
    local n = 0
    for _, k in ipairs(redis.call('HKEYS', KEYS[2])) do
      if string.sub(k, 1, 2) == 'p:' then n = n + 1 end
    end
    room = n < tonumber(ARGV[7])
  end
  if room then redis.call('HSET', KEYS[2], ARGV[4], ARGV[5]) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('DEL', KEYS[1])
return 1
";

/// Release without publishing (compare-and-delete): the state's `fence` is left behind, so the
/// next holder sees the chain broken and probes the origin. Returns 1 when released.
///
/// KEYS: lease. ARGV: token.
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Peek: the caller's snapshot as the resource's state at this instant, good enough to refuse a
/// write without taking the lease: when the last holder published (the state's `fence` equals the
/// counter), or when the current holder's predecessor published and the holder has not marked its
/// write as forwarded (nothing it does has reached the origin yet). nil otherwise.
///
/// KEYS: lease, state. ARGV: snapshot field.
pub(super) const PEEK: &str = r"
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '-1')
local published = tonumber(redis.call('HGET', KEYS[2], 'fence') or '-2')
if published == n then
  return redis.call('HGET', KEYS[2], ARGV[1])
end
local marked = tonumber(redis.call('HGET', KEYS[2], 'marked') or '-1')
if published == n - 1 and marked ~= n and redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGET', KEYS[2], ARGV[1])
end
return false
";

/// Judge (`guard`): takes a write's ticket (a stamp above every stamp issued before, and not
/// below the server's clock in microseconds) and returns what is known of the tags it names, for
/// its caller: `{ticket, admitted, private, forgot, then per tag: replaced for every caller,
/// replaced for this caller, shown current, shown to this caller}` (0 for unknown). Creates nothing: a resource without
/// facts gets a ticket from the clock alone, and a hash created after it voids that ticket's
/// replacement (see `TEACH`). Renews nothing either.
///
/// KEYS: the resource's guard facts. ARGV: caller, then per tag its exact field suffix and its
/// shown-current field.
pub(super) const JUDGE: &str = r#"
local h = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ticket = math.max(tonumber(redis.call('HGET', h, 'seq') or '0') + 1, now)
if redis.call('EXISTS', h) == 1 then
  redis.call('HSET', h, 'seq', string.format('%.0f', ticket))
end
local p = ARGV[1]
local function num(f) return tonumber(redis.call('HGET', h, f) or '0') or 0 end
local out = {ticket, num('a:' .. p), num('private'), num('f')}
local known = '"' .. (redis.call('HGET', h, 'k:' .. p) or '')
for i = 2, #ARGV, 2 do
  out[#out + 1] = num('r:*:' .. ARGV[i])
  out[#out + 1] = num('r:' .. p .. ':' .. ARGV[i])
  out[#out + 1] = num(ARGV[i + 1])
  local op = string.sub(ARGV[i + 1], 3)
  out[#out + 1] = string.find(known, '"' .. op .. '"', 1, true) and 1 or 0
end
return out
"#;

/// Teach (`guard`): publishes what one exchange showed, stamped now (not below any stamp issued
/// before): admission (at most a bound of callers per resource: not admitting is safe), a
/// forget (`f`), the per-caller mark, a replacement stamped with the write's ticket (kept when
/// later than the last forget and than the one recorded), a tag shown current, and (for an
/// admitted caller) that the caller knows the tag shown and the tag its write named.
///
/// A hash that does not exist (new, expired, evicted, lost with a restart) is created with `f` at
/// the stamp: a replacement decided before it (whose showings may have been lost with the old
/// hash) is void. A hash past the field bound loses its replacements and showings (`f` at the
/// stamp), never its admissions, its per-caller mark nor what each caller knows.
///
/// KEYS: the resource's guard facts. ARGV: TTL (ms), caller, admit (0|1), forget (0|1), private
/// (0|1), ticket (or empty), replaced field (or empty), shown-current field (or empty), field
/// bound, most callers admitted, most tags known per caller, then the opaque parts the caller
/// now knows (zero to two).
pub(super) const TEACH: &str = r#"
local h = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stamp = string.format('%.0f', math.max(tonumber(redis.call('HGET', h, 'seq') or '0'), now))
local function num(f) return tonumber(redis.call('HGET', h, f) or '0') or 0 end
if redis.call('EXISTS', h) == 0 then
  redis.call('HSET', h, 'f', stamp)
elseif redis.call('HLEN', h) > tonumber(ARGV[9]) then
  for _, k in ipairs(redis.call('HKEYS', h)) do
    local kind = string.sub(k, 1, 2)
    -- (s: fields are an earlier version's per-tag knowledge: dropped with the rest.)
    if kind == 'r:' or kind == 'c:' or kind == 's:' then redis.call('HDEL', h, k) end
  end
  redis.call('HSET', h, 'f', stamp)
end
redis.call('HSET', h, 'seq', stamp)
local p = ARGV[2]
if ARGV[3] == '1' and not redis.call('HGET', h, 'a:' .. p) and num('na') < tonumber(ARGV[10]) then
  redis.call('HSET', h, 'a:' .. p, '1')
  redis.call('HINCRBY', h, 'na', 1)
end
if ARGV[4] == '1' then redis.call('HSET', h, 'f', stamp) end
if ARGV[5] == '1' then redis.call('HSET', h, 'private', '1') end
if ARGV[6] ~= '' and ARGV[7] ~= '' then
  local ticket = tonumber(ARGV[6])
  if ticket > num('f') and ticket > num(ARGV[7]) then
    redis.call('HSET', h, ARGV[7], ARGV[6])
  end
end
if ARGV[8] ~= '' then redis.call('HSET', h, ARGV[8], stamp) end
if #ARGV >= 12 and redis.call('HGET', h, 'a:' .. p) then
  -- k:<p>: the newest tags the caller knows, each followed by '"' (never in an opaque part).
  local f = 'k:' .. p
  local known = redis.call('HGET', h, f) or ''
  for i = 12, #ARGV do
    local items = {}
    for item in string.gmatch(known, '([^"]*)"') do
      if item ~= ARGV[i] then items[#items + 1] = item end
    end
    items[#items + 1] = ARGV[i]
    local from = math.max(1, #items - tonumber(ARGV[11]) + 1)
    known = table.concat(items, '"', from) .. '"'
  end
  redis.call('HSET', h, f, known)
end
redis.call('PEXPIRE', h, ARGV[1])
return 1
"#;
