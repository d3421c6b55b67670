//! Questions to every node, for the admin API: the asking node publishes a question on
//! `{prefix}admin` (every node subscribes to it), each live node answers on the asker's
//! `{prefix}reply:{id}` channel, and the asker gathers the answers for a bounded time. The
//! nodes expected are those of `{prefix}nodes` with a live lease.
//!
//! ```text
//! admin node A                 Redis                       node B, node C
//!   │ PUBLISH {prefix}admin "7 A\n{question}" ─────────────▶ │ (each answers from its hub)
//!   │ ◀──── PUBLISH {prefix}reply:A "7 B\n{answer}" ──────── │
//!   │ ◀──── PUBLISH {prefix}reply:A "7 C\n{answer}" ──────── │
//!   └ done when B and C answered, or after `wait`: a node that did not is reported missing
//! ```
//!
//! Nothing is written per join or per connection: a question costs its answers, and only when
//! an operator asks. What the question and answer bodies mean is the caller's (`api::admin`);
//! this module only carries bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use roomcast::NodeId;
use roomcast::broker::BrokerError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RedisBroker;

/// A question from another node.
#[derive(Debug)]
pub(super) struct Question {
    id: u64,
    from: NodeId,
    body: Vec<u8>,
}

/// Where a question's answers go: each answering node with its answer.
type Answers = mpsc::UnboundedSender<(NodeId, Vec<u8>)>;

/// The questions this node is waiting for answers to: id to where the answers go. Shared by
/// the broker (which registers a question) and the subscriber task (which hands answers in).
#[derive(Debug, Clone, Default)]
pub(super) struct Pending(Arc<Mutex<HashMap<u64, Answers>>>);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Answers>> {
        // Inserts and removes only: a panic cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An answer arrived on this node's reply channel: hands it to its question, if it is
    /// still waiting (a late answer is dropped).
    pub(super) fn received(&self, payload: &[u8]) {
        let Some((id, node, body)) = parse(payload) else {
            tracing::debug!("skipped a malformed answer");
            return;
        };
        if let Some(answers) = self.lock().get(&id) {
            let _ = answers.send((node, body.to_vec()));
        }
    }
}

/// Takes a question off [`Pending`] when its asker is done or dropped.
struct Asked<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.id);
    }
}

/// The channel every node hears questions on.
pub(super) fn question_channel(prefix: &str) -> String {
    format!("{prefix}admin")
}

/// The channel `node` hears answers on.
pub(super) fn answer_channel(prefix: &str, node: NodeId) -> String {
    format!("{prefix}reply:{}", node.0)
}

/// `"{id} {node}\n{body}"`: readable in `redis-cli SUBSCRIBE`, and the body is carried as is.
fn envelope(id: u64, node: NodeId, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{id} {}\n", node.0).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn parse(payload: &[u8]) -> Option<(u64, NodeId, &[u8])> {
    let newline = payload.iter().position(|byte| *byte == b'\n')?;
    let head = std::str::from_utf8(&payload[..newline]).ok()?;
    let (id, node) = head.split_once(' ')?;
    Some((
        id.parse().ok()?,
        NodeId(node.parse().ok()?),
        &payload[newline + 1..],
    ))
}

/// A question arrived on `{prefix}admin`: queued for [`RedisBroker::serve_queries`] unless it
/// is this node's own (the asker answers for itself without Redis). A full queue drops it:
/// the asker reports this node missing rather than the subscriber waiting.
pub(super) fn received_question(me: NodeId, payload: &[u8], questions: &mpsc::Sender<Question>) {
    let Some((id, from, body)) = parse(payload) else {
        tracing::debug!("skipped a malformed question");
        return;
    };
    if from == me {
        return;
    }
    let question = Question {
        id,
        from,
        body: body.to_vec(),
    };
    if questions.try_send(question).is_err() {
        tracing::warn!(%from, "dropped an admin question: too many waiting");
    }
}

/// What the other nodes answered to [`RedisBroker::ask`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Gathered {
    /// Each answering node with its answer, in the order they arrived.
    pub answers: Vec<(NodeId, Vec<u8>)>,
    /// Live nodes that did not answer in time.
    pub missing: Vec<NodeId>,
}

impl RedisBroker {
    /// The nodes whose lease is live now, this one included, by id.
    ///
    /// # Errors
    ///
    /// Redis did not answer.
    pub async fn live_nodes(&self) -> Result<Vec<NodeId>, BrokerError> {
        let mut members = redis::cmd("SMEMBERS");
        members.arg(format!("{}nodes", self.prefix));
        let nodes: Vec<u64> = self.query(&members).await?;
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.cmd("EXISTS").arg(self.key("lease", node));
        }
        let alive: Vec<i64> = if nodes.is_empty() {
            Vec::new()
        } else {
            self.query_pipe(&pipe).await?
        };
        let mut live: Vec<NodeId> = nodes
            .into_iter()
            .zip(alive)
            .filter(|(_, alive)| *alive == 1)
            .map(|(node, _)| NodeId(node))
            .collect();
        live.sort_by_key(|node| node.0);
        Ok(live)
    }

    /// Asks every other live node `question` and gathers their answers: until each node that
    /// was live when asked has answered, or `wait` has passed (whichever is first). Nodes
    /// that did not answer are in [`Gathered::missing`]. This node does not ask itself.
    ///
    /// ```no_run
    /// # async fn example(broker: std::sync::Arc<roomcast_server::redis_broker::RedisBroker>) {
    /// use std::time::Duration;
    /// use tokio_util::sync::CancellationToken;
    /// // On every node, once its hub is built: answer others' questions.
    /// let stop = CancellationToken::new();
    /// tokio::spawn(broker.clone().serve_queries(|question| question.to_vec(), stop));
    /// // On the node an operator asks: every other live node's answer, or who is missing.
    /// let gathered = broker.ask(b"ping", Duration::from_secs(1)).await.unwrap();
    /// for (node, answer) in &gathered.answers {
    ///     println!("{node}: {}", String::from_utf8_lossy(answer));
    /// }
    /// println!("no answer from {:?}", gathered.missing);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Redis did not answer the list of nodes or the publish.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped ask stops waiting, and answers that come later are dropped.
    pub async fn ask(&self, question: &[u8], wait: Duration) -> Result<Gathered, BrokerError> {
        let me = self.started_node()?;
        let mut expected = self.live_nodes().await?;
        expected.retain(|node| *node != me);
        if expected.is_empty() {
            return Ok(Gathered::default());
        }
        if !self.is_connected() {
            // No answer can reach this node while its subscription is down.
            return Ok(Gathered {
                answers: Vec::new(),
                missing: expected,
            });
        }
        let id = {
            let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
            high ^ low
        };
        let (answers_tx, mut answers_rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id, answers_tx);
        let _asked = Asked {
            pending: &self.pending,
            id,
        };
        let mut publish = redis::cmd("PUBLISH");
        publish
            .arg(question_channel(&self.prefix))
            .arg(envelope(id, me, question));
        self.query::<i64>(&publish).await?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut gathered = Gathered::default();
        // Bounded by `expected` answers and by the deadline.
        while gathered.answers.len() < expected.len() {
            tokio::select! {
                // An answer: kept once per expected node (a node that answers twice, or one
                // that came up after the question, is not counted).
                answer = answers_rx.recv() => {
                    let Some((node, body)) = answer else { break };
                    if expected.contains(&node) && !gathered.answers.iter().any(|(seen, _)| *seen == node) {
                        gathered.answers.push((node, body));
                    }
                }
                // The bound: whoever has not answered is missing.
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        gathered.missing = expected
            .into_iter()
            .filter(|node| !gathered.answers.iter().any(|(seen, _)| seen == node))
            .collect();
        Ok(gathered)
    }

    /// Answers other nodes' questions with `answer` (given a question's body, this node's
    /// answer's), until `stop` is cancelled. Run it once, after the hub is built.
    pub async fn serve_queries(
        self: Arc<Self>,
        answer: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
        stop: CancellationToken,
    ) {
        let Some(mut questions) = self
            .questions_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let Ok(me) = self.started_node() else {
            return;
        };
        loop {
            let question = tokio::select! {
                // Another node's question, from the subscriber.
                question = questions.recv() => question,
                // The node is stopping.
                () = stop.cancelled() => None,
            };
            let Some(Question { id, from, body }) = question else {
                return;
            };
            let mut publish = redis::cmd("PUBLISH");
            publish
                .arg(answer_channel(&self.prefix, from))
                .arg(envelope(id, me, &answer(&body)));
            if let Err(err) = self.query::<i64>(&publish).await {
                tracing::warn!(%from, error = %err, "cannot answer an admin question");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_as_written() {
        let bytes = envelope(7, NodeId(42), b"{\"k\":\"rooms\"}\nmore");
        assert_eq!(
            parse(&bytes),
            Some((7, NodeId(42), &b"{\"k\":\"rooms\"}\nmore"[..]))
        );
        assert_eq!(parse(b"no header"), None);
        assert_eq!(parse(b"7\n{}"), None);
    }
}
