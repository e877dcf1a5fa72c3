//! Metrics segment (in progress).
