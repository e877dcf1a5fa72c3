//! Example services (placeholder until the example-services issue).
