//! OCF resource agents (placeholder, being written).
