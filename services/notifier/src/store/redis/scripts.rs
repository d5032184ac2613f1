//! The Lua scripts of the Redis store. Each touches one partition (one hash slot) and is
//! atomic there, and declares in KEYS every key it touches; `prelude.lua` documents the key
//! layout they share.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $body:literal) => {
        pub static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(concat!(include_str!("prelude.lua"), $body)));
    };
}

// KEYS: bucket hash, P:t, P:n, P:due, the index sets of the record's explicit keys.
// ARGV: P, b, id, record, node, until_ms. Returns 1, or a CONFLICT error if the id exists.
// The node gets the dialog's turn for the first NOTIFY. (Replacement of the same instance
// is the caller's: see CLAIM.)
script!(
    INSERT,
    r#"
local P, b, id, rec = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local h = KEYS[1]
local new = parse(rec)
if not covered(P, b, new) then return redis.error_reply('UNDECLARED index keys') end
if redis.call('HEXISTS', h, id) == 1 then return redis.error_reply('CONFLICT') end
redis.call('HSET', h, id, rec)
redis.call('HSET', P .. ':t', id, ARGV[5] .. '|' .. ARGV[6] .. '|0')
for _, k in ipairs(new.explicit) do redis.call('SADD', set_key(P, b, k), id) end
redis.call('INCRBY', P .. ':n', 1)
redis.call('ZADD', P .. ':due', 'LT', expires(rec), b)
return 1
"#
);

// KEYS: bucket hash, P:t, P:due, the index sets of the stored and the new record.
// ARGV: P, b, id, record, node, now_ms, until_ms, CSeq floor. Returns the CSeq of the NOTIFY
// answering the refresh (past the stored and the given one, at least the floor), 0 when another NOTIFY of the dialog is in flight (one is then wanted after
// it), nil if gone, RETRY if the stored record's index sets are not declared.
script!(
    REFRESH,
    r#"
local P, b, id, rec = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local old = redis.call('HGET', KEYS[1], id)
if not old then return false end
local o, n = parse(old), parse(rec)
if not (covered(P, b, o) and covered(P, b, n)) then return redis.error_reply('RETRY') end
local c = next_cseq(math.max(cseq(old), cseq(rec)), ARGV[8])
rec = with_cseq(rec, c)
relink(P, b, id, o, n)
redis.call('HSET', KEYS[1], id, rec)
if expires(rec) < expires(old) then
  redis.call('ZADD', P .. ':due', 'LT', expires(rec), b)
end
if take_turn(P, id, ARGV[5], tonumber(ARGV[6]), ARGV[7], '', true) ~= true then return 0 end
return c
"#
);

// KEYS: bucket hash, P:t, and when replacing the dependencies the index sets of the stored
// and the new ones. ARGV: P, b, id, node, now_ms, until_ms, dead (a holder known to have
// left the tier, whose turn may be taken over; '' for none), CSeq floor, replace ('0'/'1'),
// then the new dependency keys. Takes the dialog's NOTIFY turn and returns the new CSeq (past
// the stored one, at least the floor); the holder's
// name when another NOTIFY of the dialog is in flight (the caller tries again); nil if gone;
// RETRY if index sets it would touch are not declared. The dependency section is rebuilt
// here (the subject is written as an implicit entry when the record is in the subject's
// bucket) and the index sets are touched only when it changed.
script!(
    BEGIN_NOTIFY,
    r#"
local P, b, id = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('HGET', KEYS[1], id)
if not old then return false end
local o = parse(old)
local section, implicit
if ARGV[9] == '1' then
  local colocated = bit.band(o.flags, 4) == 4
  implicit = 0
  local parts = { string.char(#ARGV - 9) }
  local explicit = {}
  for i = 10, #ARGV do
    local k = ARGV[i]
    if colocated and k == o.subject then
      implicit = 1
      parts[#parts + 1] = u16s(0)
    else
      parts[#parts + 1] = u16s(#k) .. k
      explicit[#explicit + 1] = k
    end
  end
  section = table.concat(parts)
  if not (covered(P, b, o) and covered(P, b, { explicit = explicit })) then
    return redis.error_reply('RETRY')
  end
end
local holder = take_turn(P, id, ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7], false)
if holder ~= true then return holder end
local c = next_cseq(cseq(old), ARGV[8])
local rec = with_cseq(old, c)
if section and section ~= string.sub(old, o.deps_at, o.deps_end - 1) then
  local flags = bit.band(o.flags, 254) + implicit
  rec = string.char(flags) .. string.sub(rec, 2, o.deps_at - 1) .. section .. string.sub(rec, o.deps_end)
  relink(P, b, id, o, parse(rec))
end
redis.call('HSET', KEYS[1], id, rec)
return c
"#
);

// KEYS: bucket hash, P:t. ARGV: P, id, node, etag ('' for none). Ends `node`'s NOTIFY turn
// in the dialog and records the confirmed entity tag. Returns 1 when a NOTIFY was wanted
// meanwhile (the caller sends the dialog's newest state), else 0.
script!(
    END_NOTIFY,
    r#"
local P, id, node, etag = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local wanted = 0
local t = redis.call('HGET', P .. ':t', id)
if t then
  local h, w = string.match(t, '^(.*)|%d+|(%d)$')
  if h == node then
    redis.call('HDEL', P .. ':t', id)
    if w == '1' then wanted = 1 end
  end
end
if etag == '' then return wanted end
local old = redis.call('HGET', KEYS[1], id)
if not old then return wanted end
local o = parse(old)
if bit.band(o.flags, 2) == 2 and o.etag == etag then return wanted end
local rec = string.char(bit.bor(o.flags, 2)) .. string.sub(old, 2, o.etag_at - 1)
  .. u16s(#etag) .. etag .. string.sub(old, o.etag_end)
redis.call('HSET', KEYS[1], id, rec)
return wanted
"#
);

// KEYS: bucket hash, P:t, P:n, P:due, the index sets of the stored record. ARGV: P, b, id.
// Returns the removed record, nil, or RETRY if the record's index sets are not declared.
script!(
    REMOVE,
    r#"
local P, b, id = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('HGET', KEYS[1], id)
if not old then return false end
local o = parse(old)
if not covered(P, b, o) then return redis.error_reply('RETRY') end
unlink(P, b, id, o)
local due = redis.call('ZSCORE', P .. ':due', b)
if due and expires(old) <= tonumber(due) then fix_due(P, b) end
return old
"#
);

// KEYS: for every bucket from `first` to 63 its hash (key '') or the index set of `key` in
// it, then the subject bucket's hash when it is among them. ARGV: P, key ('' = every
// subscription), subject bucket (-1: none here), first bucket, after, limit. Ids depending
// on `key` (or all ids), in (bucket, id) order from (first bucket, after), at most limit.
script!(
    PAGE,
    r#"
local P, key = ARGV[1], ARGV[2]
local sb, first, after, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local out = {}
for b = first, 63 do
  local ids
  if key == '' then
    ids = redis.call('HKEYS', P .. ':h:' .. b)
  else
    ids = redis.call('SMEMBERS', set_key(P, b, key))
    if b == sb then
      local all = redis.call('HGETALL', P .. ':h:' .. b)
      for i = 1, #all, 2 do
        local rec = all[i + 1]
        if bit.band(string.byte(rec, 1), 1) == 1 and field(rec, 15) == key then
          ids[#ids + 1] = all[i]
        end
      end
    end
  end
  table.sort(ids, idless)
  for _, id in ipairs(ids) do
    if b ~= first or after == '' or idless(after, id) then
      out[#out + 1] = id
      if #out >= limit then return out end
    end
  end
end
return out
"#
);

// KEYS: P:due, P:lease, P:t, P:n, the hashes of the buckets read, the index sets of the
// candidates. ARGV: P, now_ms, node, the number of buckets read, those buckets, then
// (bucket, id, record) per candidate: expired subscriptions the caller read, earliest
// first. Removes and returns [id, record, ...] of the candidates still stored as read,
// only while `node` holds the partition's lease (NOTOWNER otherwise): a node that lost its
// lease cannot end a subscription a second time. A candidate refreshed since is left alone.
script!(
    TAKE_DUE,
    r#"
local P, now, node, nb = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if redis.call('GET', P .. ':lease') ~= node then return redis.error_reply('NOTOWNER') end
local take = {}
for i = 5 + nb, #ARGV, 3 do
  local b, id, rec = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if not DECLARED[P .. ':h:' .. b] then return redis.error_reply('UNDECLARED bucket') end
  if expires(rec) <= now and redis.call('HGET', P .. ':h:' .. b, id) == rec then
    local h = parse(rec)
    if not covered(P, b, h) then return redis.error_reply('UNDECLARED index keys') end
    take[#take + 1] = { b, id, rec, h }
  end
end
local out = {}
for _, t in ipairs(take) do
  unlink(P, t[1], t[2], t[4])
  out[#out + 1] = t[2]
  out[#out + 1] = t[3]
end
for i = 5, 4 + nb do fix_due(P, ARGV[i]) end
return out
"#
);

// KEYS[1] lease; ARGV: node, ttl_ms. 1 renewed, 2 acquired, 0 held by another node.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"#,
    )
});

// KEYS[1] lease; ARGV: node. 1 if released.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

// KEYS[1] offset; ARGV: seq. Raises the offset, never lowers it.
pub static RAISE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#,
    )
});

// KEYS[1] a partition's fan-out jobs; ARGV: target field, version, value. Records the job
// unless one with a higher or equal version is pending. 1 if written.
pub static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(string.match(cur, '^(%d+)')) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"#,
    )
});

// KEYS[1] a partition's fan-out jobs; ARGV: target field, value. Removes the job if it is
// still the one the walk covered. 1 if removed.
pub static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"#,
    )
});

// KEYS[1] the set of partitions with announced fan-out work; ARGV: the caller's partitions.
// Takes the caller's partitions out of the set and returns those that were in it.
pub static TAKE_DIRTY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for i = 1, #ARGV do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 then out[#out + 1] = ARGV[i] end
end
return out
"#,
    )
});

// KEYS[1] an instance registry hash; ARGV: field (profile type and +sip.instance), id.
// Makes `id` the holder of the instance and returns the previous holder (nil for none).
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return prev
"#,
    )
});

// KEYS[1] an instance registry hash; ARGV: field, id. Forgets the instance if `id` still
// holds it. 1 if forgotten.
pub static UNCLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#,
    )
});

// KEYS[1] a source host's subscriptions (ZSET id -> expiry, ms: each lapses with its
// subscription, so a count a crashed node failed to lower heals by itself, and so does the
// key). ARGV: id, expires_ms, now_ms, cap, id of the subscription this one replaces ('' for
// none). Adds `id` unless the host holds `cap` live subscriptions besides the replaced one.
// 1 if added, 0 if refused.
pub static SOURCE_ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local n = redis.call('ZCARD', KEYS[1])
  if ARGV[5] ~= '' and redis.call('ZSCORE', KEYS[1], ARGV[5]) then n = n - 1 end
  if n >= tonumber(ARGV[4]) then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"#,
    )
});

// KEYS[1] a source host's subscriptions; ARGV: id, expires_ms. Moves a counted
// subscription's expiry on a refresh (and the key's with it). 1 if it is counted there.
pub static SOURCE_RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"#,
    )
});

// KEYS[1] a key's hint set (the partitions holding explicit index entries for it); ARGV:
// partition, until_ms, now_ms, legacy_hold_ms. Adds the partition and keeps the set until at
// least until_ms (a set without an expiry, written before hints expired, is kept for
// legacy_hold_ms from now at least). Returns until when the set is kept.
pub static HINT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local untl, now = tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 then untl = math.max(untl, now + tonumber(ARGV[4])) end
redis.call('SADD', KEYS[1], ARGV[1])
if ttl < 0 or now + ttl < untl then
  redis.call('PEXPIREAT', KEYS[1], untl)
  return untl
end
return now + ttl
"#,
    )
});

/// Every script of the store, for tests that check what the scripts do in Redis.
pub fn all() -> [&'static Script; 18] {
    [
        &INSERT,
        &REFRESH,
        &BEGIN_NOTIFY,
        &END_NOTIFY,
        &REMOVE,
        &PAGE,
        &TAKE_DUE,
        &ACQUIRE,
        &RELEASE,
        &RAISE,
        &ENQUEUE,
        &FINISH,
        &TAKE_DIRTY,
        &CLAIM,
        &UNCLAIM,
        &SOURCE_ADMIT,
        &SOURCE_RENEW,
        &HINT,
    ]
}
