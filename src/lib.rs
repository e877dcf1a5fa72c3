//! Switchboard console.

pub mod stack;
