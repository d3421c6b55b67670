//! The admin API's views over every node: the question this node asks the others through
//! Redis (`RedisBroker::ask`), the answer it gives theirs (from its hub), and the merge.
//! On a single node (`AppState::cluster` is `None`) the local view is the answer, as it was.

use std::collections::BTreeMap;
use std::time::Duration;

use roomcast::{Hub, NodeId, RoomName};
use serde::{Deserialize, Serialize};

use super::{AdminConnection, AdminConnections, AdminRoom, AdminRooms, Coverage, OnlineMember};
use crate::AppState;

/// Longest the admin API waits for other nodes' answers. An answer is a lock and a walk of
/// the node's registry, then one publish: a live node answers in milliseconds; a node that
/// has not answered in a second is stalled, and an operator would rather see the others'
/// connections now, marked partial.
const WAIT: Duration = Duration::from_secs(1);

/// What one node asks the others, as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Question {
    /// Their rooms with someone in them (`GET /admin/rooms`).
    Rooms,
    /// Their connections in a room (`GET /admin/rooms/{room}/connections`).
    Connections { room: String },
}

/// This node's answer to another node's question (the body of a question from
/// `RedisBroker::serve_queries`): its own rooms or connections, as JSON. A question it cannot
/// read gets `null`, and the asker reports this node as missing.
pub(crate) fn answer(hub: &Hub, question: &[u8]) -> Vec<u8> {
    let node = Some(hub.node_id().to_string());
    let answer = match serde_json::from_slice::<Question>(question) {
        Ok(Question::Rooms) => serde_json::to_vec(&super::local_rooms(hub)),
        Ok(Question::Connections { room }) => match RoomName::new(&room) {
            Ok(room) => serde_json::to_vec(
                &hub.room_connections(&room)
                    .into_iter()
                    .map(|conn| super::view(conn, node.clone()))
                    .collect::<Vec<_>>(),
            ),
            Err(_) => serde_json::to_vec(&Vec::<AdminConnection>::new()),
        },
        Err(err) => {
            tracing::debug!(error = %err, "skipped an admin question this node cannot read");
            return b"null".to_vec();
        }
    };
    answer.unwrap_or_else(|_| b"null".to_vec())
}

/// Asks every other node `question`; returns their answers read as `T`, and which nodes the
/// answer covers. `None` on a single node.
async fn ask<T: serde::de::DeserializeOwned>(
    state: &AppState,
    question: &Question,
) -> Option<(Vec<T>, Coverage)> {
    let cluster = state.cluster.as_ref()?;
    let me = state.hub.node_id();
    let body = serde_json::to_vec(question).expect("a question serializes");
    let gathered = match cluster.ask(&body, WAIT).await {
        Ok(gathered) => gathered,
        Err(err) => {
            tracing::warn!(error = %err, "cannot ask the other nodes; answering with this node's only");
            return Some((
                Vec::new(),
                Coverage {
                    nodes: Some(vec![me.to_string()]),
                    missing: Some(Vec::new()),
                    partial: Some(true),
                },
            ));
        }
    };
    let mut nodes = vec![me.to_string()];
    let mut missing: Vec<NodeId> = gathered.missing;
    let mut answers = Vec::new();
    for (node, body) in gathered.answers {
        match serde_json::from_slice::<T>(&body) {
            Ok(answer) => {
                nodes.push(node.to_string());
                answers.push(answer);
            }
            Err(err) => {
                tracing::warn!(%node, error = %err, "a node's answer could not be read");
                missing.push(node);
            }
        }
    }
    if !missing.is_empty() {
        tracing::warn!(
            missing = missing.len(),
            "some nodes did not answer an admin question in time"
        );
    }
    let coverage = Coverage {
        nodes: Some(nodes),
        partial: Some(!missing.is_empty()),
        missing: Some(missing.iter().map(ToString::to_string).collect()),
    };
    Some((answers, coverage))
}

/// `GET /admin/rooms` over every node: `local` with the other nodes' rooms merged in (a room's
/// connections added up, a user's connections added up across nodes).
pub(super) async fn rooms(state: &AppState, local: Vec<AdminRoom>) -> AdminRooms {
    let Some((theirs, coverage)) = ask::<Vec<AdminRoom>>(state, &Question::Rooms).await else {
        return AdminRooms {
            rooms: local,
            coverage: Coverage::default(),
        };
    };
    AdminRooms {
        rooms: merge_rooms(std::iter::once(local).chain(theirs)),
        coverage,
    }
}

fn merge_rooms(views: impl Iterator<Item = Vec<AdminRoom>>) -> Vec<AdminRoom> {
    let mut rooms: BTreeMap<String, (usize, BTreeMap<String, OnlineMember>)> = BTreeMap::new();
    for room in views.flatten() {
        let (connections, members) = rooms.entry(room.room).or_default();
        *connections += room.connections;
        for member in room.members {
            members
                .entry(member.user_id.clone())
                .and_modify(|seen| seen.connections += member.connections)
                .or_insert(member);
        }
    }
    rooms
        .into_iter()
        .map(|(room, (connections, members))| AdminRoom {
            room,
            connections,
            members: members.into_values().collect(),
        })
        .collect()
}

/// `GET /admin/rooms/{room}/connections` over every node: `local` and the other nodes'
/// connections in `room`, oldest first.
pub(super) async fn connections(
    state: &AppState,
    room: &RoomName,
    local: Vec<AdminConnection>,
) -> AdminConnections {
    let question = Question::Connections {
        room: room.as_str().to_owned(),
    };
    let (mut connections, coverage) = match ask::<Vec<AdminConnection>>(state, &question).await {
        None => (local, Coverage::default()),
        Some((theirs, coverage)) => {
            let mut all = local;
            all.extend(theirs.into_iter().flatten());
            (all, coverage)
        }
    };
    connections
        .sort_by(|a, b| (a.connected_at, &a.node, a.id).cmp(&(b.connected_at, &b.node, b.id)));
    AdminConnections {
        room: room.as_str().to_owned(),
        connections,
        coverage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, members: &[(&str, usize)]) -> AdminRoom {
        AdminRoom {
            room: name.to_owned(),
            connections: members.iter().map(|(_, n)| n).sum(),
            members: members
                .iter()
                .map(|(user, connections)| OnlineMember {
                    user_id: (*user).to_owned(),
                    username: (*user).to_owned(),
                    connections: *connections,
                })
                .collect(),
        }
    }

    #[test]
    fn rooms_from_several_nodes_add_up_by_room_and_by_user() {
        let merged = merge_rooms(
            [
                vec![room("lobby", &[("ann", 1), ("bob", 1)])],
                vec![room("garden", &[("cat", 1)]), room("lobby", &[("ann", 2)])],
            ]
            .into_iter(),
        );
        type Seen<'a> = (&'a str, usize, Vec<(&'a str, usize)>);
        let seen: Vec<Seen<'_>> = merged
            .iter()
            .map(|room| {
                (
                    room.room.as_str(),
                    room.connections,
                    room.members
                        .iter()
                        .map(|m| (m.user_id.as_str(), m.connections))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("garden", 1, vec![("cat", 1)]),
                ("lobby", 4, vec![("ann", 3), ("bob", 1)]),
            ]
        );
    }
}
