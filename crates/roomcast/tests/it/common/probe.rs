//! The probe: the test `Handler`. It speaks a small JSON protocol so tests can drive a session
//! from the client side, and reports `on_disconnect` calls on a channel:
//!
//! ```text
//! (on connect)                      ← {"type":"welcome","user_id","username","guest","room","registered"}
//! (on connect to /ws/missing)       → on_connect returns Error::close(4000, "room not found")
//! {"cmd":"join","room":"r"}         ← {"type":"joined","room":"r","announced":…,"already_member":…}
//! {"cmd":"leave","room":"r"}        ← {"type":"left","room":"r","was_member":…}
//! {"cmd":"fail","code":4000}        → on_message returns Error::close(4000, "told to fail")
//! {"cmd":"fail"}                    → on_message returns Error::other("told to fail")
//! {"cmd":"panic"}                   → on_message panics
//! {"cmd":"keep_sender"}             ← {"type":"kept"}; the session's `Sender` is kept for the test
//! any other text                    ← {"type":"got","kind":"text","payload":"<text>"}
//! any binary                        ← {"type":"got","kind":"binary","payload":[bytes…]}
//! (on disconnect)                   → a `Disconnected` on the server's channel
//! ```

use std::sync::{Arc, Mutex};

use roomcast::{CloseReason, Error, Handler, Incoming, RoomName, Sender, Session, UserId};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::room;

/// What `on_disconnect` saw.
#[derive(Debug, Clone)]
pub(crate) struct Disconnected {
    pub(crate) user: UserId,
    pub(crate) reason: CloseReason,
    /// `cx.rooms()` inside the hook.
    pub(crate) rooms: Vec<RoomName>,
}

/// The test handler: see the module docs for its protocol.
pub(crate) struct Probe {
    pub(super) disconnected_tx: mpsc::UnboundedSender<Disconnected>,
    /// Senders handed out by `keep_sender`, for tests that send after the hook returned.
    pub(super) senders: Arc<Mutex<Vec<Sender>>>,
}

impl Probe {
    async fn command(&self, cx: &Session, command: &Value) -> roomcast::Result<()> {
        let room_arg = || {
            let name = command["room"].as_str().expect("the command names a room");
            room(name)
        };
        match command["cmd"].as_str() {
            Some("join") => {
                let room = room_arg();
                let outcome = cx.join(&room).await?;
                cx.send_json(&json!({
                    "type": "joined",
                    "room": room,
                    "announced": outcome.announced,
                    "already_member": outcome.already_member,
                }))
            }
            Some("leave") => {
                let room = room_arg();
                let was_member = cx.leave(&room).await?;
                cx.send_json(&json!({ "type": "left", "room": room, "was_member": was_member }))
            }
            Some("fail") => match command["code"].as_u64() {
                Some(code) => Err(Error::close(
                    u16::try_from(code).expect("close codes fit in u16"),
                    "told to fail",
                )),
                None => Err(Error::other("told to fail")),
            },
            Some("panic") => panic!("told to panic"),
            Some("keep_sender") => {
                self.senders.lock().unwrap().push(cx.sender());
                cx.send_json(&json!({ "type": "kept" }))
            }
            other => panic!("the probe has no command {other:?}"),
        }
    }
}

impl Handler for Probe {
    async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
        if cx.path_param("room") == Some("missing") {
            return Err(Error::close(4000, "room not found"));
        }
        cx.send_json(&json!({
            "type": "welcome",
            "user_id": cx.user_id(),
            "username": cx.username(),
            "guest": cx.is_guest(),
            "room": cx.path_param("room"),
            "registered": cx.hub().is_connected(cx.user_id()),
        }))
    }

    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        if let Some(command) = msg
            .json::<Value>()
            .ok()
            .filter(|value| value.get("cmd").is_some())
        {
            return self.command(cx, &command).await;
        }
        let (kind, payload) = match &msg {
            Incoming::Text(text) => ("text", json!(text.as_str())),
            Incoming::Binary(bytes) => ("binary", json!(bytes.to_vec())),
        };
        cx.send_json(&json!({ "type": "got", "kind": kind, "payload": payload }))
    }

    async fn on_disconnect(&self, cx: &Session, reason: &CloseReason) {
        let _ = self.disconnected_tx.send(Disconnected {
            user: cx.user_id().clone(),
            reason: reason.clone(),
            rooms: cx.rooms(),
        });
    }
}
