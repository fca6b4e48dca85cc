//! The bearer token, read from `--token-file` and read again when the file changes.
//!
//! A projected ServiceAccount token is rotated by the kubelet, which swaps the volume's `..data`
//! symlink: the path then names a new inode. Each request compares the file's identity (device,
//! inode, size, mtime) with the one the cached token came from, a `stat` of a tmpfs file; a 401 or
//! 403 also forces a fresh read. The token never appears in logs or errors.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use http::HeaderValue;

/// Why no token could be had; never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--token-file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--token-file {path}: the file is empty")]
    Empty { path: PathBuf },
    #[error("--token-file {path}: the token holds characters an HTTP header cannot carry")]
    Invalid { path: PathBuf },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, HeaderValue)>>,
}

impl TokenFile {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            cached: Mutex::new(None),
        }
    }

    /// `Bearer <token>`, marked sensitive (hyper then never prints it).
    pub fn header(&self) -> Result<HeaderValue, TokenError> {
        let meta = std::fs::metadata(&self.path).map_err(|source| self.read_error(source))?;
        let stamp = Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        };
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, value)) = cached.as_ref() {
            if *seen == stamp {
                return Ok(value.clone());
            }
        }
        let text = std::fs::read_to_string(&self.path).map_err(|source| self.read_error(source))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: self.path.clone(),
            });
        }
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| TokenError::Invalid {
                path: self.path.clone(),
            })?;
        value.set_sensitive(true);
        *cached = Some((stamp, value.clone()));
        Ok(value)
    }

    /// Forgets the cached token: the next request reads the file again.
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn read_error(&self, source: std::io::Error) -> TokenError {
        TokenError::Read {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rotation_and_never_shows_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let t = TokenFile::new(&path);
        let err = t.header().unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");

        std::fs::write(&path, "first-secret\n").unwrap();
        let h = t.header().unwrap();
        assert_eq!(h.to_str().unwrap(), "Bearer first-secret");
        assert!(h.is_sensitive());
        // Rotation as the kubelet does it: a new file renamed over the old one.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second-secret").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(
            t.header().unwrap().to_str().unwrap(),
            "Bearer second-secret"
        );

        std::fs::write(&path, "  \n").unwrap();
        let err = t.header().unwrap_err();
        assert!(matches!(err, TokenError::Empty { .. }));
        std::fs::write(&path, "bad\u{7f}token").unwrap();
        let err = t.header().unwrap_err();
        assert!(!err.to_string().contains("bad"), "{err}");
    }
}
