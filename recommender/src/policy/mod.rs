//! The NetworkPolicy evaluator (full networking.k8s.io/v1 semantics).
