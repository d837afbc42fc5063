//! HTTP helpers for the session API: a client with one method per route ([`Api`]) and a real
//! SSE reader ([`Events`], `reqwest` + `eventsource-stream`) whose expectations wait with a
//! timeout and say what came instead.

use std::pin::Pin;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::time::timeout;

use super::{TIMEOUT, TestServer};

type EventResult = Result<Event, EventStreamError<reqwest::Error>>;

/// A client of one server's session API.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
}

/// A status and its JSON body (`Value::Null` if the body is not JSON).
pub(crate) type Reply = (u16, Value);

impl Api {
    pub(crate) fn new(server: &TestServer) -> Self {
        Self {
            base: format!("http://{}", server.player),
            client: reqwest::Client::new(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn reply(response: reqwest::RequestBuilder) -> Reply {
        let response = timeout(TIMEOUT, response.send())
            .await
            .expect("reply within the timeout")
            .expect("HTTP request");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        Self::reply(self.client.get(self.url(path))).await
    }

    pub(crate) async fn post_path(&self, path: &str) -> Reply {
        Self::reply(self.client.post(self.url(path))).await
    }

    pub(crate) async fn try_register(&self, session: &str, peer: &str) -> Reply {
        Self::reply(
            self.client
                .post(self.url(&format!("/register/{session}/{peer}"))),
        )
        .await
    }

    pub(crate) async fn register(&self, session: &str, peer: &str) {
        assert_eq!(
            self.try_register(session, peer).await,
            (200, json!({"message": "session registered successfully"})),
            "register {session}/{peer}"
        );
    }

    pub(crate) async fn unregister(&self, session: &str, peer: &str) -> Reply {
        Self::reply(
            self.client
                .delete(self.url(&format!("/register/{session}/{peer}"))),
        )
        .await
    }

    pub(crate) async fn post_raw(&self, session: &str, peer: &str, body: Vec<u8>) -> Reply {
        Self::reply(
            self.client
                .post(self.url(&format!("/message/{session}/{peer}")))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub(crate) async fn try_send(
        &self,
        session: &str,
        from: &str,
        target: &str,
        kind: &str,
        payload: Value,
    ) -> Reply {
        let body = json!({"target": target, "type": kind, "payload": payload});
        self.post_raw(session, from, body.to_string().into_bytes())
            .await
    }

    pub(crate) async fn send(
        &self,
        session: &str,
        from: &str,
        target: &str,
        kind: &str,
        payload: Value,
    ) {
        assert_eq!(
            self.try_send(session, from, target, kind, payload).await,
            (200, json!({"message": "Message sent"})),
            "message {session}/{from} → {target}"
        );
    }

    /// Opens a peer's event stream; panics unless it answers 200 `text/event-stream`.
    pub(crate) async fn events(&self, session: &str, peer: &str) -> Events {
        self.events_after(session, peer, None).await
    }

    pub(crate) async fn events_after(
        &self,
        session: &str,
        peer: &str,
        last_event_id: Option<&str>,
    ) -> Events {
        let response = self.open_events(session, peer, last_event_id).await;
        assert_eq!(response.status(), 200, "events {session}/{peer}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Events {
            name: format!("{session}/{peer}"),
            stream: Box::pin(response.bytes_stream().eventsource()),
        }
    }

    pub(crate) async fn open_events(
        &self,
        session: &str,
        peer: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .get(self.url(&format!("/events/{session}/{peer}")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        timeout(TIMEOUT, request.send())
            .await
            .expect("events answer within the timeout")
            .expect("events request")
    }
}

/// One peer's open event stream.
pub(crate) struct Events {
    name: String,
    stream: Pin<Box<dyn Stream<Item = EventResult> + Send>>,
}

impl Events {
    /// The next event: its id and its data parsed as JSON.
    pub(crate) async fn next(&mut self) -> (String, Value) {
        let event = timeout(TIMEOUT, self.stream.next())
            .await
            .unwrap_or_else(|_| panic!("{}: no event within {TIMEOUT:?}", self.name))
            .unwrap_or_else(|| panic!("{}: stream ended instead of an event", self.name))
            .unwrap_or_else(|e| panic!("{}: stream error {e}", self.name));
        assert!(!event.id.is_empty(), "{}: event without id", self.name);
        assert!(
            !event.data.contains('\n'),
            "{}: data on one line: {:?}",
            self.name,
            event.data
        );
        let data = serde_json::from_str(&event.data)
            .unwrap_or_else(|e| panic!("{}: data is not JSON ({e}): {}", self.name, event.data));
        (event.id, data)
    }

    /// The next event must be exactly `expected`; returns its id.
    pub(crate) async fn expect(&mut self, expected: Value) -> String {
        let (id, data) = self.next().await;
        assert_eq!(data, expected, "{}: event {id}", self.name);
        id
    }

    /// The server must end the stream (a newer stream replaced it, or the peer left).
    pub(crate) async fn expect_end(&mut self) {
        match timeout(TIMEOUT, self.stream.next()).await {
            Err(_) => panic!("{}: still open after {TIMEOUT:?}", self.name),
            Ok(None) => {}
            Ok(Some(Ok(event))) => panic!("{}: event {event:?} instead of the end", self.name),
            // The body may end with a connection error rather than a clean end.
            Ok(Some(Err(_))) => {}
        }
    }
}

pub(crate) fn event(sender: &str, kind: &str) -> Value {
    json!({"senderId": sender, "type": kind})
}

pub(crate) fn event_with(sender: &str, kind: &str, payload: Value) -> Value {
    json!({"senderId": sender, "type": kind, "payload": payload})
}
