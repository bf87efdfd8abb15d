//! The keys of one copy: the operation key both agents derive from their node keys, the
//! handshake proofs made with it, and the per-connection session key that authenticates
//! every frame after the handshake.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use crate::error::{MoverError, Role};
use crate::key::{NodeKey, PublicKey};

pub(crate) type Tag = [u8; 32];
pub(crate) type Nonce = [u8; 32];
type HmacSha256 = Hmac<Sha256>;

/// Which copy a connection is about. Every field is bound into the operation key, so a
/// connection for another operation, uid, volume or pair of nodes cannot authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyIdentity {
    /// The operation's name (e.g. the LocalVolumeMigrate's).
    pub operation: String,
    /// The operation's uid: a recreated operation of the same name gets another key.
    pub uid: String,
    pub volume: String,
    /// The node holding the data (serving it).
    pub source_node: String,
    /// The node receiving the copy.
    pub target_node: String,
}

/// Appends `field` with its length, so no two field lists encode alike.
fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// The key only `me` and `peer` can compute for this copy: HKDF-SHA256 over their X25519
/// shared secret, with every field of `id` in the info.
pub(crate) fn operation_key(
    me: &NodeKey,
    peer: &PublicKey,
    id: &CopyIdentity,
) -> Result<OperationKey, MoverError> {
    let shared = me.shared_secret(peer).ok_or(MoverError::WeakPeerKey)?;
    let mut info = Vec::new();
    for field in [
        b"hwameistor-mover operation key v1".as_slice(),
        id.operation.as_bytes(),
        id.uid.as_bytes(),
        id.source_node.as_bytes(),
        id.target_node.as_bytes(),
        id.volume.as_bytes(),
    ] {
        push_field(&mut info, field);
    }
    let hk = Hkdf::<Sha256>::new(Some(b"hwameistor-mover"), &shared);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF's limit (255 hash lengths): expand does not fail.
    hk.expand(&info, &mut key)
        .map_err(|e| MoverError::InvalidConfig(format!("deriving the operation key: {e}")))?;
    Ok(OperationKey(key))
}

fn hmac(key: &[u8; 32]) -> HmacSha256 {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}

/// A hash of everything both sides said in the handshake: the proofs and the session key are
/// bound to it, so nothing in the handshake can be changed or replayed from another one.
pub(crate) fn transcript(hello: &[u8], challenge: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hwameistor-mover transcript v1");
    h.update((hello.len() as u64).to_be_bytes());
    h.update(hello);
    h.update((challenge.len() as u64).to_be_bytes());
    h.update(challenge);
    h.finalize().into()
}

pub(crate) struct OperationKey([u8; 32]);

impl Drop for OperationKey {
    fn drop(&mut self) {
        self.0 = [0; 32];
    }
}

impl OperationKey {
    fn tag(&self, label: &[u8], transcript: &[u8; 32]) -> HmacSha256 {
        let mut mac = hmac(&self.0);
        mac.update(label);
        mac.update(transcript);
        mac
    }

    fn label(role: Role) -> &'static [u8] {
        match role {
            Role::Source => b"source proof",
            Role::Target => b"target proof",
        }
    }

    /// `role`'s proof that it holds the key.
    pub fn proof(&self, role: Role, transcript: &[u8; 32]) -> Tag {
        self.tag(Self::label(role), transcript)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Constant-time check of `role`'s proof.
    pub fn verify_proof(&self, role: Role, transcript: &[u8; 32], proof: &Tag) -> bool {
        self.tag(Self::label(role), transcript)
            .verify_slice(proof)
            .is_ok()
    }

    /// The key of this connection: fresh nonces from both sides make it differ from every
    /// other connection's, so frames of an earlier connection cannot be replayed into it.
    pub fn session(&self, transcript: &[u8; 32]) -> SessionKey {
        let key: [u8; 32] = self
            .tag(b"session key", transcript)
            .finalize()
            .into_bytes()
            .into();
        SessionKey { mac: hmac(&key) }
    }
}

/// Authenticates frames after the handshake. Each frame kind has its own label, and fields
/// are fixed-width, so a tag for one frame never fits another.
pub(crate) struct SessionKey {
    mac: HmacSha256,
}

impl SessionKey {
    fn keyed(&self, label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(label);
        for part in parts {
            mac.update(part);
        }
        mac
    }

    pub fn tag(&self, label: &[u8], parts: &[&[u8]]) -> Tag {
        self.keyed(label, parts).finalize().into_bytes().into()
    }

    /// Constant-time comparison.
    pub fn verify(&self, label: &[u8], parts: &[&[u8]], tag: &Tag) -> bool {
        self.keyed(label, parts).verify_slice(tag).is_ok()
    }
}

pub(crate) fn random_nonce() -> Result<Nonce, MoverError> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| MoverError::Random(e.to_string()))?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> CopyIdentity {
        CopyIdentity {
            operation: "migrate-1".into(),
            uid: "u-1".into(),
            volume: "pvc-1".into(),
            source_node: "a".into(),
            target_node: "b".into(),
        }
    }

    #[test]
    fn only_the_two_nodes_of_the_same_copy_share_a_key() -> Result<(), MoverError> {
        let a = NodeKey::generate()?;
        let b = NodeKey::generate()?;
        let c = NodeKey::generate()?;
        let t = transcript(b"hello", b"challenge");
        let on_a = operation_key(&a, &b.public_key(), &id())?;
        let on_b = operation_key(&b, &a.public_key(), &id())?;
        let proof = on_a.proof(Role::Source, &t);
        assert!(on_b.verify_proof(Role::Source, &t, &proof));
        // A proof of one role is no proof of the other.
        assert!(!on_b.verify_proof(Role::Target, &t, &proof));
        // Another transcript, another node, another uid: no.
        assert!(!on_b.verify_proof(Role::Source, &transcript(b"hello", b"other"), &proof));
        let on_c = operation_key(&c, &a.public_key(), &id())?;
        assert!(!on_c.verify_proof(Role::Source, &t, &proof));
        let mut other_uid = id();
        other_uid.uid = "u-2".into();
        let on_b2 = operation_key(&b, &a.public_key(), &other_uid)?;
        assert!(!on_b2.verify_proof(Role::Source, &t, &proof));
        // Session keys agree, and frame tags are bound to their label and fields.
        let (sa, sb) = (on_a.session(&t), on_b.session(&t));
        let tag = sa.tag(b"chunk", &[&1u32.to_be_bytes(), &7u64.to_be_bytes()]);
        assert!(sb.verify(b"chunk", &[&1u32.to_be_bytes(), &7u64.to_be_bytes()], &tag));
        assert!(!sb.verify(b"zero", &[&1u32.to_be_bytes(), &7u64.to_be_bytes()], &tag));
        assert!(!sb.verify(b"chunk", &[&1u32.to_be_bytes(), &8u64.to_be_bytes()], &tag));
        Ok(())
    }
}
