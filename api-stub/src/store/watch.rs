//! Watches on the store: opening one (replaying history or answering 410 Expired), bookmarks,
//! and the faults tests ask for (broken streams, compacted history).

use super::*;
use crate::wire::{event_line, sees};

impl Store {
    /// Opens a watch. Returns the stream's receiver, already holding the events it starts with.
    #[allow(clippy::too_many_arguments)]
    pub fn watch(
        &mut self,
        resource: &Resource,
        namespace: Option<String>,
        selector: Selector,
        from: Option<u64>,
        bookmarks: bool,
        initial_events: bool,
    ) -> mpsc::UnboundedReceiver<WatchMsg> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = Watcher {
            resource: resource.clone(),
            namespace,
            selector,
            bookmarks,
            tx,
        };
        match from {
            Some(rv) if !initial_events => {
                if rv < self.floor {
                    let err =
                        status::expired(format!("too old resource version: {rv} ({})", self.floor));
                    let _ = watcher
                        .tx
                        .send(WatchMsg::Line(event_line("ERROR", &err.body)));
                    return rx;
                }
                for change in self.history.iter().filter(|c| c.rv > rv) {
                    if let Some(line) = event_for(&watcher, change) {
                        let _ = watcher.tx.send(WatchMsg::Line(line));
                    }
                }
            }
            // No version (or "0"), or a streaming list: the current state as ADDED events.
            _ => {
                for object in self
                    .objects
                    .get(resource)
                    .into_iter()
                    .flat_map(|m| m.values())
                {
                    if sees(&watcher, object) {
                        let _ = watcher.tx.send(WatchMsg::Line(event_line("ADDED", object)));
                    }
                }
            }
        }
        if initial_events {
            let _ = watcher
                .tx
                .send(WatchMsg::Line(self.bookmark_line(resource, true)));
        } else if bookmarks {
            let _ = watcher
                .tx
                .send(WatchMsg::Line(self.bookmark_line(resource, false)));
        }
        self.watchers.push(watcher);
        rx
    }

    /// A BOOKMARK event: the kind and apiVersion, and metadata holding only the resourceVersion
    /// (and, at the end of a streaming list's initial events, the annotation that marks it).
    fn bookmark_line(&self, resource: &Resource, initial_end: bool) -> Bytes {
        let mut metadata = json!({ "resourceVersion": self.rv.to_string() });
        if initial_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let kind = self.kind_of(resource);
        event_line(
            "BOOKMARK",
            &json!({ "kind": kind, "apiVersion": resource.api_version(), "metadata": metadata }),
        )
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that asked for bookmarks.
    pub fn send_bookmarks(&mut self) {
        let lines: Vec<Bytes> = self
            .watchers
            .iter()
            .map(|w| self.bookmark_line(&w.resource, false))
            .collect();
        for (w, line) in self.watchers.iter().zip(lines) {
            if w.bookmarks {
                let _ = w.tx.send(WatchMsg::Line(line));
            }
        }
    }

    /// Breaks every open watch (of `resource`, or all) in the middle of a line.
    pub fn break_watches(&mut self, resource: Option<&Resource>) {
        self.watchers.retain(|w| {
            if resource.is_some_and(|r| *r != w.resource) {
                return true;
            }
            let _ = w.tx.send(WatchMsg::Break);
            false
        });
    }

    /// Forgets the history: a watch or list continuation from before now answers 410 Gone.
    pub fn compact(&mut self) {
        self.floor = self.rv;
        self.history.clear();
        self.snapshots.clear();
    }

    pub fn open_watches(&mut self, resource: &Resource) -> usize {
        self.watchers.retain(|w| !w.tx.is_closed());
        self.watchers
            .iter()
            .filter(|w| w.resource == *resource)
            .count()
    }
}
