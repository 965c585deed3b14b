//! Helpers for integration tests: network namespaces, veth pairs, real peers.
