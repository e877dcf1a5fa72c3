//! The stack file (in progress).
