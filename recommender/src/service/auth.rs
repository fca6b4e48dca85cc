//! Who may send flows: the `Authorization: Bearer <token>` of `POST /v1/flows` (and of the read
//! endpoints), checked by an [`Authenticator`]. [`TokenFile`] accepts the tokens of a file;
//! a ServiceAccount TokenReview authenticator (issue 7) implements the same trait.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use subtle::ConstantTimeEq;

use super::metrics::Refusal;
use crate::store::BoxFuture;

/// Decides whether a bearer token may use the API.
pub trait Authenticator: Send + Sync {
    /// `Ok` when `token` (the `Authorization: Bearer` value; `None` when absent) is accepted, else
    /// why not ([`Refusal::MissingToken`], [`Refusal::InvalidToken`] or
    /// [`Refusal::AuthUnavailable`]).
    fn authenticate<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, Result<(), Refusal>>;
}

/// Longest token accepted. Comparisons run over this many bytes whatever the lengths, so that
/// neither a token's content nor its length leaks through timing. ServiceAccount tokens (JWTs)
/// are 1–2 KiB.
pub const MAX_TOKEN_LEN: usize = 8192;

/// The tokens of a file: one per non-empty line (surrounding whitespace ignored), so that a
/// rotation can accept the old and the new token for a while. The file is read again whenever it
/// changes (size, modification time or inode: a Secret volume swaps a symlink), checked on every
/// request.
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    stamp: Option<(u64, i64, i64, u64)>,
    tokens: Vec<Box<[u8; MAX_TOKEN_LEN]>>,
    lengths: Vec<usize>,
}

/// Why a token file is unusable at start.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("--token-file {path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("--token-file {path}: no token in it (one token per line)")]
    Empty { path: String },
    #[error("--token-file {path}:{line}: token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong { path: String, line: usize },
}

impl TokenFile {
    /// Reads the file once, so that a bad file stops the service at start.
    pub fn new(path: &Path) -> Result<TokenFile, TokenFileError> {
        let file = TokenFile {
            path: path.to_path_buf(),
            cached: Mutex::new(Cached::default()),
        };
        file.refresh(&mut file.cached.lock().expect("token lock"))?;
        Ok(file)
    }

    fn refresh(&self, cached: &mut Cached) -> Result<(), TokenFileError> {
        let name = || self.path.display().to_string();
        let meta = std::fs::metadata(&self.path).map_err(|source| TokenFileError::Read {
            path: name(),
            source,
        })?;
        let stamp = (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino());
        if cached.stamp == Some(stamp) {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|source| TokenFileError::Read {
            path: name(),
            source,
        })?;
        let mut tokens = Vec::new();
        let mut lengths = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() {
                continue;
            }
            if token.len() > MAX_TOKEN_LEN {
                return Err(TokenFileError::TooLong {
                    path: name(),
                    line: i + 1,
                });
            }
            tokens.push(padded(token.as_bytes()));
            lengths.push(token.len());
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty { path: name() });
        }
        *cached = Cached {
            stamp: Some(stamp),
            tokens,
            lengths,
        };
        tracing::info!(path = %self.path.display(), "token file read");
        Ok(())
    }

    fn check(&self, presented: Option<&str>) -> Result<(), Refusal> {
        let presented = presented.ok_or(Refusal::MissingToken)?;
        let mut cached = self.cached.lock().expect("token lock");
        if let Err(e) = self.refresh(&mut cached) {
            // Keep serving with the tokens read last; with none, nobody can be let in.
            tracing::warn!("{e}; keeping the tokens read before");
            if cached.tokens.is_empty() {
                return Err(Refusal::AuthUnavailable);
            }
        }
        if presented.len() > MAX_TOKEN_LEN {
            return Err(Refusal::InvalidToken);
        }
        let candidate = padded(presented.as_bytes());
        let mut accepted = subtle::Choice::from(0);
        for (token, len) in cached.tokens.iter().zip(&cached.lengths) {
            accepted |= token.as_slice().ct_eq(candidate.as_slice())
                & (*len as u64).ct_eq(&(presented.len() as u64));
        }
        if bool::from(accepted) {
            Ok(())
        } else {
            Err(Refusal::InvalidToken)
        }
    }
}

fn padded(token: &[u8]) -> Box<[u8; MAX_TOKEN_LEN]> {
    let mut out = Box::new([0u8; MAX_TOKEN_LEN]);
    out[..token.len()].copy_from_slice(token);
    out
}

impl Authenticator for TokenFile {
    fn authenticate<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, Result<(), Refusal>> {
        let result = self.check(token);
        Box::pin(std::future::ready(result))
    }
}

/// The token of an `Authorization` header value: `Bearer <token>` (scheme case-insensitive).
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_the_file_are_accepted_and_reread_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n\n  second  \n").unwrap();
        let file = TokenFile::new(&path).unwrap();
        assert_eq!(file.check(Some("first")), Ok(()));
        assert_eq!(file.check(Some("second")), Ok(()));
        assert_eq!(file.check(Some("firs")), Err(Refusal::InvalidToken));
        assert_eq!(file.check(Some("first\0")), Err(Refusal::InvalidToken));
        assert_eq!(file.check(None), Err(Refusal::MissingToken));
        std::fs::write(&path, "third-token\n").unwrap();
        assert_eq!(file.check(Some("third-token")), Ok(()));
        assert_eq!(file.check(Some("first")), Err(Refusal::InvalidToken));
        // A file that disappears keeps the last tokens.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.check(Some("third-token")), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
