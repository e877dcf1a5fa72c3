//! How frames reach an instance: the router calls a [`Link`] and knows nothing else.
//!
//! - [`link`]: the seam between routing and transport.
//! - [`inbox`](mod@inbox): the pipe transport's bounded, priority-laned queue per instance, drained by the
//!   instance's stdin writer.
//! - [`segment`]: an instance's metrics segment, mapped here or relayed from another host.
//!
//! It sits below both the registry (which holds each instance's link) and the router (which
//! sends through it), so neither needs the other for it.

pub mod inbox;
pub mod link;
pub mod segment;

pub use self::{
    inbox::{Inbox, InboxReceiver, SendError, inbox},
    link::Link,
    segment::Segment,
};
