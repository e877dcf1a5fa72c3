//! Service SDK (in progress).
