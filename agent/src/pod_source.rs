//! Where pod metadata comes from: a pods file, the API watch of this node's pods, or nowhere.

use crate::metrics::Metrics;
use crate::pods::{PodIndex, PodsFile, Reload};
#[cfg(feature = "api")]
use crate::pods_api::ApiPods;

pub enum PodSource {
    /// Pods are known by what their cgroup path says (UID, container id) only.
    None,
    /// `--pods-file`, re-read when it changes.
    File(PodsFile),
    /// The API watch of this node's pods.
    #[cfg(feature = "api")]
    Api(ApiPods),
}

impl PodSource {
    /// The current index (for a file, after checking whether it changed).
    pub fn index(&mut self, metrics: &Metrics) -> PodIndex {
        match self {
            PodSource::None => PodIndex::default(),
            PodSource::File(file) => {
                if file.reload_if_changed() == Reload::Failed {
                    metrics.pods_file_reload_error();
                }
                let index = file.index();
                metrics.pods_known(index.len());
                index
            }
            #[cfg(feature = "api")]
            PodSource::Api(api) => api.index(),
        }
    }

    /// Whether a pod missing from the index now may be added without anyone's help, so that its
    /// flows are worth holding: the API's new pods arrive on their own; a pods file changes only
    /// when someone edits it.
    pub fn follows_the_cluster(&self) -> bool {
        #[cfg(feature = "api")]
        return matches!(self, PodSource::Api(_));
        #[cfg(not(feature = "api"))]
        false
    }
}
