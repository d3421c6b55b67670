//! `ROOMCAST_MAX_CONNECTIONS_PER_USER` over every node: each node keeps, per user, how many
//! of the user's connections it admitted, in one hash per user (`{prefix}conns:{user}`, field:
//! the node), and a connection is admitted only if the sum over live nodes stays within the
//! bound, decided in one Lua script so two nodes admitting at once cannot both pass it.
//!
//! A node's fields are written from [`Local`] (absolute counts, not increments), so writing
//! them again after Redis lost them is the same write; a dead node's are taken off by the
//! reaper with the rest of its entries (`{prefix}nodeusers:{id}` lists its users), and a node
//! whose lease lapsed is not counted even before it is reaped.

use std::sync::atomic::Ordering;

use roomcast::broker::BrokerError;
use roomcast::{ConnId, NodeId, UserId};

use super::{CountUse, Local, RedisBroker};

/// KEYS: the user's counts, the node's users. ARGV: node, bound, the node's count with this
/// connection, user, the lease keys' prefix. Admits (1) when the other live nodes' counts
/// plus this node's stay within the bound, and records this node's count; refuses (0)
/// otherwise, changing nothing. (The lease keys are read by name, not passed as KEYS: the
/// set of nodes is in the hash. Fine on one Redis; a Redis Cluster would need the keys under
/// one hash tag.)
const ADMIT_SCRIPT: &str = r"
local fields = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #fields, 2 do
  if fields[i] ~= ARGV[1] and redis.call('EXISTS', ARGV[5] .. fields[i]) == 1 then
    others = others + tonumber(fields[i + 1])
  end
end
if others + tonumber(ARGV[3]) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1";

/// KEYS as for `ADMIT_SCRIPT`. ARGV: node, the node's count now, user. Records the count; at
/// 0 the node's field and its entry in the node's users go.
const SET_SCRIPT: &str = r"
if tonumber(ARGV[2]) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[3])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
end
return 1";

impl RedisBroker {
    /// Admits `conn`, a connection of `user`, if the user has fewer than `max` connections on
    /// all live nodes together; counts it on this node when admitted. Call
    /// [`RedisBroker::release_user_conn`] when the connection ends, admitted or not.
    ///
    /// # Errors
    ///
    /// Redis did not answer. The connection is then counted here (it is open) and Redis is
    /// told at the next re-assertion; whether to admit it is the caller's choice.
    pub async fn admit_user_conn(
        &self,
        conn: ConnId,
        user: &UserId,
        max: usize,
    ) -> Result<bool, BrokerError> {
        let node = self.started_node()?;
        let user = user.clone();
        let admitted: i64 = self
            .batched(
                CountUse::MayUndo(user.clone()),
                {
                    let user = user.clone();
                    move |broker, local| {
                        let count = local.user_conns.entry(user.clone()).or_insert(0);
                        *count += 1;
                        local.admitted.insert(conn);
                        let mut cmd = redis::cmd("EVAL");
                        cmd.arg(ADMIT_SCRIPT)
                            .arg(2)
                            .arg(broker.key("conns", user.as_str()))
                            .arg(broker.key("nodeusers", node.0))
                            .arg(node.0)
                            .arg(max)
                            .arg(*count)
                            .arg(user.as_str())
                            .arg(broker.key("lease", ""));
                        cmd
                    }
                },
                move |local, answer| {
                    // Refused: as if never counted (nothing was written).
                    if matches!(answer, Ok(0)) {
                        forget(local, conn, &user);
                    }
                },
            )
            .await
            .inspect_err(|_| self.reassert_due.store(true, Ordering::Relaxed))?;
        Ok(admitted == 1)
    }

    /// `conn` of `user` has ended: if it was admitted, counts it down. A connection that was
    /// never admitted changes nothing (and costs no Redis call).
    ///
    /// # Errors
    ///
    /// Redis did not answer; the count is corrected at the next re-assertion.
    pub async fn release_user_conn(&self, conn: ConnId, user: &UserId) -> Result<(), BrokerError> {
        if !self.local().admitted.contains(&conn) {
            return Ok(());
        }
        let node = self.started_node()?;
        let user = user.clone();
        let _: i64 = self
            .batched(
                CountUse::Reads(user.clone()),
                move |broker, local| {
                    // Not admitted after all (cannot happen: one release per connection):
                    // the count as it is, which is as right to write.
                    let count = forget(local, conn, &user)
                        .unwrap_or_else(|| local.user_conns.get(&user).copied().unwrap_or(0));
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(SET_SCRIPT)
                        .arg(2)
                        .arg(broker.key("conns", user.as_str()))
                        .arg(broker.key("nodeusers", node.0))
                        .arg(node.0)
                        .arg(count)
                        .arg(user.as_str());
                    cmd
                },
                |_, _| {},
            )
            .await
            .inspect_err(|_| self.reassert_due.store(true, Ordering::Relaxed))?;
        Ok(())
    }

    /// Adds to `pipe` the writes of this node's users' connection counts, and the removal of
    /// those Redis has for users this node no longer counts (`counted`: the node's users as
    /// Redis lists them). Returns how many were removed.
    pub(super) fn reassert_user_conns(
        &self,
        node: NodeId,
        local: &Local,
        counted: &[String],
        pipe: &mut redis::Pipeline,
    ) -> usize {
        for (user, count) in &local.user_conns {
            pipe.cmd("EVAL")
                .arg(SET_SCRIPT)
                .arg(2)
                .arg(self.key("conns", user.as_str()))
                .arg(self.key("nodeusers", node.0))
                .arg(node.0)
                .arg(*count)
                .arg(user.as_str())
                .ignore();
        }
        let mut stale = 0;
        for user in counted {
            if !local.user_conns.contains_key(&UserId::from(user.as_str())) {
                pipe.cmd("EVAL")
                    .arg(SET_SCRIPT)
                    .arg(2)
                    .arg(self.key("conns", user))
                    .arg(self.key("nodeusers", node.0))
                    .arg(node.0)
                    .arg(0)
                    .arg(user)
                    .ignore();
                stale += 1;
            }
        }
        stale
    }

    /// Takes a dead node's connection counts off its users. Returns how many users it had.
    pub(super) async fn reap_user_conns(&self, dead: NodeId) -> Result<usize, BrokerError> {
        let mut users = redis::cmd("SMEMBERS");
        users.arg(self.key("nodeusers", dead.0));
        let users: Vec<String> = self.query(&users).await?;
        let mut pipe = redis::pipe();
        for user in &users {
            pipe.cmd("HDEL")
                .arg(self.key("conns", user))
                .arg(dead.0)
                .ignore();
        }
        pipe.cmd("DEL").arg(self.key("nodeusers", dead.0)).ignore();
        self.query_pipe::<()>(&pipe).await?;
        Ok(users.len())
    }
}

/// Takes `conn` off `local`'s admitted connections and counts `user` down; returns the
/// user's count after it, or `None` when `conn` was not admitted.
fn forget(local: &mut Local, conn: ConnId, user: &UserId) -> Option<u64> {
    if !local.admitted.remove(&conn) {
        return None;
    }
    let count = local.user_conns.get_mut(user)?;
    *count = count.saturating_sub(1);
    let left = *count;
    if left == 0 {
        local.user_conns.remove(user);
    }
    Some(left)
}
