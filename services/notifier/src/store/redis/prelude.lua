-- Shared helpers of the subscription store scripts (prepended to each script).
--
-- Every script runs in one partition, whose keys share the hash tag in ARGV[1] (the
-- partition prefix, e.g. "uaprof:{17}"), so each script is atomic on a Redis Cluster too.
-- Every key a script touches is declared in KEYS (a Cluster migrating a slot and proxies
-- that route by KEYS rely on it). Keys that depend on data the script reads — the index
-- sets of a stored record — are declared by the caller from its own read of the record;
-- a script that finds them undeclared (the record changed since) changes nothing and
-- answers RETRY, and the caller reads again.
--   P..':h:'..b          HASH  id -> record (bucket b of the partition)
--   P..':k:'..b..':'..K  SET   ids in bucket b that depend on key K (explicit index entries)
--   P..':due'            ZSET  bucket -> earliest expiry in it (may be early, never late)
--   P..':n'              count of subscriptions in the partition
--   P..':lease'          the node that owns the partition's timed duties
--   P..':t'              HASH  id -> "node|until_ms|wanted": the dialog's NOTIFY turn
--   P..':jobs'           HASH  key -> "version:effective_by": pending fan-out work
--   P..':i:'..b          HASH  type byte .. +sip.instance -> id of the subscription holding it,
--                        in the bucket the instance hashes to (not the holder's: replacement
--                        is global, so the registry is found from the instance alone)
-- Records: see codec.rs (flags, expires, cseq, type, subject, etag, instance, deps, tail).

local MAX_CSEQ = 2147483647

local function u16(s, pos)
  return string.byte(s, pos) * 256 + string.byte(s, pos + 1)
end

local function field(s, pos)
  local n = u16(s, pos)
  return string.sub(s, pos + 2, pos + 1 + n), pos + 2 + n
end

local function be(s, from, to)
  local v = 0
  for i = from, to do v = v * 256 + string.byte(s, i) end
  return v
end

local function expires(rec) return be(rec, 2, 9) end
local function cseq(rec) return be(rec, 10, 13) end

-- The CSeq after `last`, at least `floor` (the caller's cseq_floor: a CSeq a failover's lost
-- write cannot make us reuse), below 2**31.
local function next_cseq(last, floor)
  return math.min(math.max(last + 1, tonumber(floor)), MAX_CSEQ)
end

local function with_cseq(rec, c)
  local b = {}
  for i = 4, 1, -1 do
    b[i] = string.char(c % 256)
    c = math.floor(c / 256)
  end
  return string.sub(rec, 1, 9) .. table.concat(b) .. string.sub(rec, 14)
end

-- The +sip.instance field alone (cheap: no dependency walk).
local function instance_of(rec)
  local _, pos = field(rec, 15)
  _, pos = field(rec, pos)
  return (field(rec, pos))
end

local function parse(rec)
  local h = { flags = string.byte(rec, 1), ptype = string.byte(rec, 14) }
  local pos = 15
  h.subject, pos = field(rec, pos)
  h.etag_at = pos
  h.etag, pos = field(rec, pos)
  h.etag_end = pos
  h.instance, pos = field(rec, pos)
  h.deps_at = pos
  local n = string.byte(rec, pos)
  pos = pos + 1
  h.explicit = {}
  for _ = 1, n do
    local k
    k, pos = field(rec, pos)
    if k ~= '' then h.explicit[#h.explicit + 1] = k end
  end
  h.deps_end = pos
  return h
end

-- Ids are decimal u64 strings: numeric order is (length, bytes).
local function idless(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

local function set_key(P, b, k) return P .. ':k:' .. b .. ':' .. k end

local DECLARED = {}
for _, k in ipairs(KEYS) do DECLARED[k] = true end

-- Whether the index sets of parsed record `h` in bucket b are all declared.
local function covered(P, b, h)
  for _, k in ipairs(h.explicit) do
    if not DECLARED[set_key(P, b, k)] then return false end
  end
  return true
end

local function fix_due(P, b)
  local recs = redis.call('HVALS', P .. ':h:' .. b)
  local min = nil
  for _, rec in ipairs(recs) do
    local e = expires(rec)
    if min == nil or e < min then min = e end
  end
  if min == nil then
    redis.call('ZREM', P .. ':due', b)
  else
    redis.call('ZADD', P .. ':due', min, b)
  end
end

local function unlink(P, b, id, h)
  redis.call('HDEL', P .. ':h:' .. b, id)
  redis.call('HDEL', P .. ':t', id)
  for _, k in ipairs(h.explicit) do redis.call('SREM', set_key(P, b, k), id) end
  redis.call('INCRBY', P .. ':n', -1)
end

local function relink(P, b, id, old, new)
  local keep = {}
  for _, k in ipairs(new.explicit) do keep[k] = true end
  for _, k in ipairs(old.explicit) do
    if not keep[k] then redis.call('SREM', set_key(P, b, k), id) end
  end
  for _, k in ipairs(new.explicit) do redis.call('SADD', set_key(P, b, k), id) end
end

local function u16s(n) return string.char(math.floor(n / 256), n % 256) end

-- The dialog's NOTIFY turn: takes it for `node` until `untl` unless another is held at
-- `now` (by a node other than `dead`, whose turns may be taken over), in which case, with
-- `mark`, it records that a NOTIFY is wanted after it. Returns true when taken, else the
-- holder.
local function take_turn(P, id, node, now, untl, dead, mark)
  local t = redis.call('HGET', P .. ':t', id)
  if t then
    local h, u, w = string.match(t, '^(.*)|(%d+)|(%d)$')
    if u and tonumber(u) > now and h ~= dead then
      if mark and w ~= '1' then redis.call('HSET', P .. ':t', id, h .. '|' .. u .. '|1') end
      return h
    end
  end
  redis.call('HSET', P .. ':t', id, node .. '|' .. untl .. '|0')
  return true
end
