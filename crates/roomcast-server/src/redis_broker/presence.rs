//! The broker's [`Presence`]: who is in which room on any node, node leases and the reaper
//! (`docs/SCALING.md`, "Presence across nodes"), and the re-assertion of this node's part
//! when Redis has lost it (restarted empty, flushed) or may have missed a write (a failed
//! heartbeat).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use roomcast::broker::{BoxFuture, Broker, BrokerError, Presence, RoomEvent, Target};
use roomcast::protocol::{Event, UserInfo};
use roomcast::{NodeId, RoomName, UserId};

use super::{CountUse, RedisBroker};

impl RedisBroker {
    /// Takes `user`'s entry in `room` off `node`'s list and the room's count; answers the
    /// user's count of nodes in the room after it (0: gone from the room).
    fn leave_cmd(&self, node: NodeId, room: &RoomName, user: &UserId) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LEAVE_SCRIPT)
            .arg(3)
            .arg(self.key("presence", room))
            .arg(self.key("names", room))
            .arg(self.key("node", node.0))
            .arg(user.as_str())
            .arg(entry(room, user));
        cmd
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.presence_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// One heartbeat: renews this node's lease (writing this node's part again if Redis lost
    /// it), then reaps every node whose lease lapsed (one surviving node per dead one, by a
    /// lock with the lease's lifetime), announcing the leaves of users who were only there.
    pub(super) async fn heartbeat(&self, node: NodeId) -> Result<(), BrokerError> {
        let ttl = self.lease_ms();
        // `GET`: the lease's previous value, `nil` when it was missing. After the first
        // heartbeat it is missing only when Redis lost it: restarted empty, flushed, or this
        // node stalled past its TTL.
        let mut lease = redis::cmd("SET");
        lease
            .arg(self.key("lease", node.0))
            .arg(1)
            .arg("PX")
            .arg(ttl)
            .arg("GET");
        let had: Option<String> = self.query(&lease).await.inspect_err(|_| {
            self.reassert_due.store(true, Ordering::Relaxed);
        })?;
        let lost = had.is_none() && self.leased.swap(true, Ordering::Relaxed);
        let due = self.reassert_due.swap(false, Ordering::Relaxed);
        if (lost || due)
            && let Err(err) = self.reassert(node, lost).await
        {
            self.reassert_due.store(true, Ordering::Relaxed);
            return Err(err);
        }
        let mut join = redis::cmd("SADD");
        join.arg(format!("{}nodes", self.prefix)).arg(node.0);
        self.query::<i64>(&join).await?;
        let mut nodes = redis::cmd("SMEMBERS");
        nodes.arg(format!("{}nodes", self.prefix));
        let nodes: Vec<u64> = self.query(&nodes).await?;
        for other in nodes.into_iter().filter(|other| *other != node.0) {
            let mut alive = redis::cmd("EXISTS");
            alive.arg(self.key("lease", other));
            if self.query::<i64>(&alive).await? == 1 {
                continue;
            }
            let mut lock = redis::cmd("SET");
            lock.arg(self.key("reaping", other))
                .arg(node.0)
                .arg("NX")
                .arg("PX")
                .arg(ttl);
            let locked: Option<String> = self.query(&lock).await?;
            if locked.is_some() {
                self.reap(NodeId(other)).await?;
            }
        }
        Ok(())
    }

    /// Takes a dead node's users out of its rooms and announces each leave that leaves a user
    /// on no node, as if the dead node had (origin: the dead node, so every live node,
    /// this one included, delivers it).
    ///
    /// A round trip per [`REAP_CHUNK`] entries, and one for their announcements: each entry's
    /// name and its leave go in one pipeline, the name read first (the leave may take it off).
    /// It was three round trips an entry, one after the other: a node that died with 10,000
    /// people in rooms took its survivor 30,000 round trips to reap.
    async fn reap(&self, dead: NodeId) -> Result<(), BrokerError> {
        let mut entries = redis::cmd("SMEMBERS");
        entries.arg(self.key("node", dead.0));
        let entries: Vec<String> = self.query(&entries).await?;
        let parsed: Vec<(RoomName, UserId)> = entries
            .iter()
            .filter_map(|entry| parse_entry(entry))
            .collect();
        let mut announced = 0;
        for chunk in parsed.chunks(REAP_CHUNK) {
            let mut pipe = redis::pipe();
            for (room, user) in chunk {
                pipe.cmd("HGET")
                    .arg(self.key("names", room))
                    .arg(user.as_str());
                pipe.add_command(self.leave_cmd(dead, room, user));
            }
            let answers: Vec<redis::Value> = self.query_pipe(&pipe).await?;
            let mut answers = answers.into_iter();
            let mut events = Vec::new();
            for (room, user) in chunk {
                let (Some(name), Some(count)) = (answers.next(), answers.next()) else {
                    return Err(BrokerError::Unavailable(
                        "Redis answered the reaper's pipeline short".into(),
                    ));
                };
                let count: i64 = redis::from_redis_value(count)
                    .map_err(|err| BrokerError::Unavailable(err.to_string()))?;
                if count != 0 {
                    continue;
                }
                // A name Redis no longer has (or that is not a string): the id stands in.
                let username: Option<String> = redis::from_redis_value(name).unwrap_or(None);
                events.push(RoomEvent {
                    origin: dead,
                    target: Target::Room(room.clone()),
                    exclude: Vec::new(),
                    event: Event::Left {
                        room: room.clone(),
                        user: UserInfo {
                            username: Arc::from(username.as_deref().unwrap_or(user.as_str())),
                            id: user.clone(),
                        },
                        timestamp_ms: roomcast::protocol::now_ms(),
                    },
                });
            }
            if !events.is_empty() {
                announced += events.len();
                self.publish_many(events).await?;
            }
        }
        let users = self.reap_user_conns(dead).await?;
        let mut forget = redis::cmd("SREM");
        forget.arg(format!("{}nodes", self.prefix)).arg(dead.0);
        self.query::<i64>(&forget).await?;
        let mut clear = redis::cmd("DEL");
        clear.arg(self.key("node", dead.0));
        self.query::<i64>(&clear).await?;
        tracing::info!(node = %dead, entries = entries.len(), announced, users, "reaped a node whose presence lease lapsed");
        Ok(())
    }

    /// Writes this node's whole part again: its lease, its place in the node set, every
    /// (room, user) entry it has with the user's name, and its users' connection counts; and
    /// takes off the entries Redis has that this node no longer does (a leave whose write
    /// failed). Idempotent (an entry still there is not counted twice: `REASSERT_SCRIPT`),
    /// and silent: no join or leave is announced, since no one joined or left. `lost`: Redis
    /// had lost the lease (logged at info; otherwise this follows a failed heartbeat).
    pub(super) async fn reassert(&self, node: NodeId, lost: bool) -> Result<(), BrokerError> {
        // Read first, outside the exclusive section: an entry added meanwhile is in `Local`
        // (so not taken off), one removed meanwhile is taken off again, which is a no-op.
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(self.key("node", node.0));
        pipe.cmd("SMEMBERS").arg(self.key("nodeusers", node.0));
        let (entries, counted): (Vec<String>, Vec<String>) = self.query_pipe(&pipe).await?;
        let (mut members, mut users, mut stale) = (0, 0, 0);
        self.exclusive::<()>(
            |local| {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(self.key("lease", node.0))
                    .arg(1)
                    .arg("PX")
                    .arg(self.lease_ms())
                    .ignore();
                pipe.cmd("SADD")
                    .arg(format!("{}nodes", self.prefix))
                    .arg(node.0)
                    .ignore();
                for ((room, user), name) in &local.members {
                    pipe.cmd("EVAL")
                        .arg(REASSERT_SCRIPT)
                        .arg(3)
                        .arg(self.key("presence", room))
                        .arg(self.key("names", room))
                        .arg(self.key("node", node.0))
                        .arg(user.as_str())
                        .arg(name.as_ref())
                        .arg(entry(room, user))
                        .ignore();
                }
                for (room, user) in entries.iter().filter_map(|entry| parse_entry(entry)) {
                    if !local.members.contains_key(&(room.clone(), user.clone())) {
                        pipe.add_command(self.leave_cmd(node, &room, &user))
                            .ignore();
                        stale += 1;
                    }
                }
                stale += self.reassert_user_conns(node, local, &counted, &mut pipe);
                (members, users) = (local.members.len(), local.user_conns.len());
                pipe
            },
            |_, _| {},
        )
        .await?;
        if lost {
            tracing::info!(
                members,
                users,
                stale,
                "Redis had lost this node's presence (restarted or flushed); wrote it again"
            );
        } else {
            tracing::debug!(
                members,
                users,
                stale,
                "wrote this node's presence again after a failed heartbeat"
            );
        }
        Ok(())
    }
}

/// Entries of a dead node reaped per pipeline (`RedisBroker::reap`): two commands each, so a
/// round trip carries 2,048 commands and their answers, a few hundred KB at most.
const REAP_CHUNK: usize = 1024;

/// The (room, user) of a node's entry; `None` for what no node writes.
fn parse_entry(entry: &str) -> Option<(RoomName, UserId)> {
    let (room, user) = entry.split_once('\n')?;
    Some((RoomName::new(room).ok()?, UserId::from(user)))
}

/// A node's entry for `user` in `room` (room names cannot hold a newline).
fn entry(room: &RoomName, user: &UserId) -> String {
    format!("{room}\n{user}")
}

/// KEYS: the room's counts, the room's names, the node's entries; ARGV: user, name, entry.
/// Returns the user's count of nodes in the room.
const JOIN_SCRIPT: &str = r"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return n";

/// KEYS and ARGV as for `JOIN_SCRIPT`. Counts the user up only if the node's entry is
/// missing (Redis lost it), so writing a node's part again never counts anyone twice.
const REASSERT_SCRIPT: &str = r"
if redis.call('SADD', KEYS[3], ARGV[3]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 0";

/// KEYS as for `JOIN_SCRIPT`; ARGV: user, entry. Takes the node's entry off and counts the
/// user down; at 0 the user is gone from the room. An entry already gone (reaped, or lost
/// with a Redis restart) only reports the count, 0 when that is gone too.
const LEAVE_SCRIPT: &str = r"
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then
  return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
return n";

impl RedisBroker {
    /// Renews this node's presence lease every third of its lifetime and reaps dead nodes,
    /// until `stop` is cancelled. Run it once, after the hub is built.
    pub async fn keep_presence(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let Ok(node) = self.started_node() else {
            return;
        };
        let mut ticks =
            tokio::time::interval((self.presence_ttl / 3).max(Duration::from_millis(100)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => break,
            }
            match self.heartbeat(node).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("presence heartbeats reach Redis again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "cannot renew the presence lease");
                }
                Err(_) => {}
            }
        }
        // A node that stops says so at once rather than after its lease.
        let mut release = redis::cmd("DEL");
        release.arg(self.key("lease", node.0));
        let _ = self.query::<i64>(&release).await;
    }
}

impl Presence for RedisBroker {
    fn joined(&self, room: &RoomName, user: &UserInfo) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let (room, user) = (room.clone(), user.clone());
        Box::pin(async move {
            let node = self.started_node()?;
            // Kept whether or not Redis answers: the member is here, and the next
            // re-assertion writes what Redis missed.
            let nodes: i64 = self
                .batched(
                    CountUse::None,
                    move |broker, local| {
                        let mut cmd = redis::cmd("EVAL");
                        cmd.arg(JOIN_SCRIPT)
                            .arg(3)
                            .arg(broker.key("presence", &room))
                            .arg(broker.key("names", &room))
                            .arg(broker.key("node", node.0))
                            .arg(user.id.as_str())
                            .arg(user.username.as_ref())
                            .arg(entry(&room, &user.id));
                        local.members.insert((room, user.id), user.username);
                        cmd
                    },
                    |_, _| {},
                )
                .await
                .inspect_err(|_| self.reassert_due.store(true, Ordering::Relaxed))?;
            Ok(nodes == 1)
        })
    }

    fn left(&self, room: &RoomName, user: &UserId) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let (room, user) = (room.clone(), user.clone());
        Box::pin(async move {
            let node = self.started_node()?;
            let nodes: i64 = self
                .batched(
                    CountUse::None,
                    move |broker, local| {
                        let cmd = broker.leave_cmd(node, &room, &user);
                        local.members.remove(&(room, user));
                        cmd
                    },
                    |_, _| {},
                )
                .await
                .inspect_err(|_| self.reassert_due.store(true, Ordering::Relaxed))?;
            Ok(nodes == 0)
        })
    }

    fn members(&self, room: &RoomName) -> BoxFuture<'_, Result<Vec<UserInfo>, BrokerError>> {
        let room = room.clone();
        Box::pin(async move {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(self.key("names", &room));
            let names: HashMap<String, String> = self.query(&cmd).await?;
            let mut users: Vec<UserInfo> = names
                .into_iter()
                .map(|(id, username)| UserInfo {
                    id: UserId::from(id),
                    username: Arc::from(username),
                })
                .collect();
            users.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(users)
        })
    }

    /// `HLEN` of the hash [`Presence::members`] lists (`{prefix}names:{room}`): one answer
    /// whatever the room's size. The join and leave scripts write and delete a user's name
    /// with their count, so it has the same users as `{prefix}presence:{room}`.
    fn member_count(&self, room: &RoomName) -> BoxFuture<'_, Result<usize, BrokerError>> {
        let room = room.clone();
        Box::pin(async move {
            let mut cmd = redis::cmd("HLEN");
            cmd.arg(self.key("names", &room));
            self.query(&cmd).await
        })
    }
}
