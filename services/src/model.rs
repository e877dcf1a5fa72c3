//! The example services' messages: what user, order and notification take and answer.
//!
//! They travel as postcard between the Rust services and as JSON through the gateway, so every
//! field is always present (postcard is not self-describing) and optional ones are `Option`.
//! Only append fields at the end.

use serde::{Deserialize, Serialize};

/// A page request: ids greater than `after`, at most `limit` of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Page {
    #[serde(default)]
    pub after: i64,
    #[serde(default)]
    pub limit: Option<u32>,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn limit(&self) -> u32 {
        self.limit
            .unwrap_or(Page::DEFAULT_LIMIT)
            .clamp(1, Page::MAX_LIMIT)
    }
}

/// `{"id": N}`: what `GET /users/{id}` and friends send.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ById {
    pub id: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserUpdate {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserList {
    pub users: Vec<User>,
    pub total: i64,
    /// The `after` of the next page; `None` on the last one.
    pub next: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: i64,
    pub item: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub item: String,
    pub quantity: u32,
    pub amount_cents: i64,
    /// `accepted` while its stages run, then `completed`.
    pub status: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrderList {
    pub orders: Vec<Order>,
    pub total: i64,
    pub next: Option<i64>,
}

/// The body of `order.created` and `order.completed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrderEvent {
    /// Unique per event and stable across redeliveries: the consumer's idempotency key.
    pub event_id: String,
    pub order_id: i64,
    pub user_id: i64,
    /// `created` or `completed`.
    pub kind: String,
    pub amount_cents: i64,
    pub at_ms: i64,
}

/// `order.ack`: the consumer has durably recorded these events; stop redelivering them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    pub event_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Notification {
    pub id: i64,
    pub event_id: String,
    pub order_id: i64,
    pub user_id: i64,
    pub kind: String,
    pub message: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotificationList {
    pub notifications: Vec<Notification>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotificationStats {
    pub total: i64,
    /// Events seen more than once (redeliveries), ignored by the idempotent consumer.
    pub duplicates_ignored: u64,
    /// Group commits of this instance's database so far (each one fsync), since it started.
    #[serde(default)]
    pub commits: u64,
}
