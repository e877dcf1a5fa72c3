//! Framing (in progress).
