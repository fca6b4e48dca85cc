//! Synthesis of least-privilege egress policies from resolved flows.
