//! Root integration tests: the agent binary against hosts the tests build themselves.

mod support;
