//! Batch ids (`x-batch-id`): `<node>:<start>:<sequence>`, unique per batch.
//!
//! `<start>` is the agent's start instant (Unix milliseconds, hex) followed by 32 random bits, so
//! two agents of one node (a restart within the same millisecond, a second DaemonSet) cannot
//! collide. An id is stored with its batch in the spool, so a batch keeps its id across resends and
//! across restarts, which is what lets the recommender count it once. A batch split after a 413
//! gives its halves the parent's id plus `.0` and `.1`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flow_model::{check_batch_id, BATCH_ID_MAX_LEN};

/// Characters of the node name kept in an id: node names may be 253 long, ids 128.
const NODE_PART_MAX: usize = 48;

/// Cheap to clone; clones share the sequence.
#[derive(Clone)]
pub struct BatchIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl BatchIds {
    pub fn new(node: &str) -> Self {
        let start_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        Self::with_start(node, start_ms, fastrand::u32(..))
    }

    pub fn with_start(node: &str, start_ms: u64, nonce: u32) -> Self {
        let node: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(NODE_PART_MAX)
            .collect();
        let node = if node.is_empty() { "node".into() } else { node };
        Self {
            prefix: format!("{node}:{start_ms:x}{nonce:08x}").into(),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn next_id(&self) -> String {
        let id = format!(
            "{}:{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        debug_assert!(check_batch_id(&id).is_ok(), "{id}");
        id
    }

    /// The id of half `half` (0 or 1) of the batch `parent`; a fresh id once the suffixes would
    /// make it too long (a batch split a dozen times).
    pub fn child_id(&self, parent: &str, half: u8) -> String {
        let id = format!("{parent}.{half}");
        if id.len() <= BATCH_ID_MAX_LEN {
            id
        } else {
            self.next_id()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_unique_and_derive_for_halves() {
        let ids = BatchIds::with_start(&"n".repeat(253), 0x18f, 0xdeadbeef);
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        assert_eq!(b, format!("{}:18fdeadbeef:1", "n".repeat(48)));
        assert!(check_batch_id(&a).is_ok());
        assert_eq!(ids.child_id(&a, 1), format!("{a}.1"));
        let mut long = a.clone();
        while long.len() + 2 <= BATCH_ID_MAX_LEN {
            long.push_str(".0");
        }
        let fresh = ids.child_id(&long, 0);
        assert!(
            check_batch_id(&fresh).is_ok() && fresh.ends_with(":2"),
            "{fresh}"
        );
        // Node names with characters ids do not allow.
        let odd = BatchIds::with_start("nöde/1", 1, 2);
        let id = odd.next_id();
        assert!(check_batch_id(&id).is_ok(), "{id}");
        assert!(BatchIds::new("").next_id().starts_with("node:"));
    }
}
