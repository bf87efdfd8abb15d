//! A node's static X25519 key: its public half is published in the node's LocalStorageNode
//! status, its secret half never leaves the node. Two agents derive a copy's key from their
//! keys, so no secret is handed out.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use x25519_dalek::StaticSecret;

use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("node key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("node key file {path} does not hold a base64 32-byte key")]
    Malformed { path: PathBuf },
    #[error("public key {0:?} is not base64 of 32 bytes")]
    InvalidPublicKey(String),
    #[error("no randomness from the OS: {0}")]
    Random(String),
}

/// A node's public key (X25519, 32 bytes), shown as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| KeyError::InvalidPublicKey(text.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::InvalidPublicKey(text.to_string()))?;
        Ok(PublicKey(bytes))
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::from_base64(s)
    }
}

/// A node's static key pair.
pub struct NodeKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret, not even in a debug log.
        write!(f, "NodeKey(public {})", self.public)
    }
}

impl NodeKey {
    /// A fresh key from the OS's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(NodeKey::from_secret(bytes))
    }

    fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        NodeKey { secret, public }
    }

    /// Reads a key written by [`NodeKey::load_or_generate`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io_error = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = fs::read_to_string(path).map_err(io_error)?;
        let mode = fs::metadata(path).map_err(io_error)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
                "node key file is readable by others than its owner");
        }
        let malformed = || KeyError::Malformed {
            path: path.to_path_buf(),
        };
        let bytes = BASE64.decode(text.trim()).map_err(|_| malformed())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
        Ok(NodeKey::from_secret(bytes))
    }

    /// Loads the key at `path`, or generates one and writes it there (mode 0600, atomically:
    /// two agents starting together keep the same key).
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        match fs::metadata(path) {
            Ok(_) => return NodeKey::load(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        let key = NodeKey::generate()?;
        let text = format!("{}\n", BASE64.encode(key.secret.to_bytes()));
        let created =
            fsutil::create_file(path, text.as_bytes(), 0o600).map_err(|source| KeyError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if created {
            tracing::info!(path = %path.display(), public_key = %key.public, "generated the node's mover key");
            Ok(key)
        } else {
            NodeKey::load(path)
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The X25519 shared secret with `peer`; `None` for a peer key of low order, which would
    /// give a secret anyone can compute.
    pub(crate) fn shared_secret(&self, peer: &PublicKey) -> Option<[u8; 32]> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        shared.was_contributory().then(|| shared.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_kept_private_and_reloaded() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("mover.key");
        let first = NodeKey::load_or_generate(&path)?;
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        let again = NodeKey::load_or_generate(&path)?;
        assert_eq!(first.public_key(), again.public_key());
        let published = first.public_key().to_base64();
        assert_eq!(PublicKey::from_base64(&published)?, first.public_key());
        assert!(!format!("{first:?}").contains(&BASE64.encode(first.secret.to_bytes())));
        Ok(())
    }

    #[test]
    fn bad_keys_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        assert!(PublicKey::from_base64("not base64!").is_err());
        assert!(PublicKey::from_base64(&BASE64.encode([1u8; 31])).is_err());
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("k");
        fs::write(&path, "c2hvcnQ=\n")?;
        assert!(matches!(
            NodeKey::load(&path),
            Err(KeyError::Malformed { .. })
        ));
        Ok(())
    }

    #[test]
    fn both_sides_compute_the_same_secret_and_low_order_keys_are_refused() -> Result<(), KeyError> {
        let a = NodeKey::generate()?;
        let b = NodeKey::generate()?;
        let ab = a.shared_secret(&b.public_key());
        assert!(ab.is_some());
        assert_eq!(ab, b.shared_secret(&a.public_key()));
        assert_eq!(a.shared_secret(&PublicKey([0; 32])), None);
        Ok(())
    }
}
