//! Heads kept outside the ledger: a run's event count and last hash, optionally signed
//! with ed25519 so that whoever holds the public key can tell the head came from the
//! operator's key and was not rewritten along with the ledger.
//!
//! Keys are PKCS#8 PEM (private) and SPKI PEM (public), the files
//! `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write; `generate_key`
//! makes the same from the operating system's random source. A signed head is a small JSON
//! file ([`SignedHead`]); what is signed is [`signed_message`], spelled out in
//! `docs/replay.md` so that any ed25519 tool can check it.

use crate::error::Result;
use crate::ids::{Hash32, RunId};
use crate::ledger::Ledger;
use crate::verify::Head;
use ed25519_dalek::pkcs8::{
    spki::der::pem::LineEnding, DecodePrivateKey, DecodePublicKey, EncodePrivateKey,
    EncodePublicKey,
};
use ed25519_dalek::{Signature, Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `format` of a signed head file; also the first line of what is signed.
pub const SIGNED_HEAD_FORMAT: &str = "attest-signed-head/1";

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: not a usable ed25519 key: {message}")]
    Key { path: String, message: String },
    #[error("{path}: not a head file: {message}")]
    Format { path: String, message: String },
    #[error("could not generate a key: {0}")]
    Random(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> HeadError {
    HeadError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A head file: a run's head, and (when signed) who signed it and the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    pub format: String,
    pub run: String,
    pub count: u64,
    /// 64 lower-case hex digits.
    pub hash: String,
    pub signed_at_ms: u64,
    /// The signer's public key, 64 hex digits (informational: verification uses the key
    /// the operator supplies, never this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The ed25519 signature of [`signed_message`], 128 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Why a head file's signature does not stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureProblem {
    Unsigned,
    Malformed(String),
    WrongKey { signer: String, expected: String },
    Invalid,
}

impl std::fmt::Display for SignatureProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureProblem::Unsigned => f.write_str("the head file is not signed"),
            SignatureProblem::Malformed(m) => write!(f, "the signature is malformed: {m}"),
            SignatureProblem::WrongKey { signer, expected } => write!(
                f,
                "the head names signer {signer}, not the verification key {expected}"
            ),
            SignatureProblem::Invalid => {
                f.write_str("the signature does not match the head under the verification key")
            }
        }
    }
}

/// The exact bytes signed: four `key=value` lines after the format line, each ending in
/// `\n`, in this order.
pub fn signed_message(run: &str, count: u64, hash: &str, signed_at_ms: u64) -> Vec<u8> {
    format!(
        "{SIGNED_HEAD_FORMAT}\nrun={run}\ncount={count}\nhash={hash}\nsigned_at_ms={signed_at_ms}\n"
    )
    .into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl SignedHead {
    /// An unsigned head file for `run`.
    pub fn unsigned(run: &RunId, head: Head, at_ms: u64) -> SignedHead {
        SignedHead {
            format: SIGNED_HEAD_FORMAT.to_string(),
            run: run.to_string(),
            count: head.count,
            hash: head.hash.to_hex(),
            signed_at_ms: at_ms,
            public_key: None,
            signature: None,
        }
    }

    /// A head file for `run` signed with `key`.
    pub fn sign(run: &RunId, head: Head, at_ms: u64, key: &SigningKey) -> SignedHead {
        let mut h = SignedHead::unsigned(run, head, at_ms);
        let sig = key.sign(&signed_message(&h.run, h.count, &h.hash, h.signed_at_ms));
        h.public_key = Some(hex(key.verifying_key().as_bytes()));
        h.signature = Some(hex(&sig.to_bytes()));
        h
    }

    /// Reads a head file. A file that is not one is a [`HeadError::Format`].
    pub fn read(path: &Path) -> Result<SignedHead, HeadError> {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        let format = |message: String| HeadError::Format {
            path: path.display().to_string(),
            message,
        };
        let h: SignedHead = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
        if h.format != SIGNED_HEAD_FORMAT {
            return Err(format(format!(
                "format is {:?}, expected {SIGNED_HEAD_FORMAT:?}",
                h.format
            )));
        }
        if Hash32::from_hex(&h.hash).is_none() {
            return Err(format("hash is not 64 hex digits".into()));
        }
        RunId::new(h.run.clone()).map_err(|e| format(format!("run: {e}")))?;
        Ok(h)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The head it names (the hash was checked when read or made).
    pub fn head(&self) -> Option<Head> {
        Some(Head {
            count: self.count,
            hash: Hash32::from_hex(&self.hash)?,
        })
    }

    /// Checks the signature under `key`.
    pub fn check_signature(&self, key: &VerifyingKey) -> Result<(), SignatureProblem> {
        let sig = self
            .signature
            .as_deref()
            .ok_or(SignatureProblem::Unsigned)?;
        let sig = unhex::<64>(sig)
            .ok_or_else(|| SignatureProblem::Malformed("not 128 hex digits".into()))?;
        let expected = hex(key.as_bytes());
        if let Some(signer) = &self.public_key {
            if *signer != expected {
                return Err(SignatureProblem::WrongKey {
                    signer: signer.clone(),
                    expected,
                });
            }
        }
        key.verify(
            &signed_message(&self.run, self.count, &self.hash, self.signed_at_ms),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| SignatureProblem::Invalid)
    }
}

/// Reads a private key (PKCS#8 PEM).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, HeadError> {
    let pem = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| HeadError::Key {
        path: path.display().to_string(),
        message: format!("{e} (expected a PKCS#8 PEM ed25519 private key)"),
    })
}

/// Reads a public key (SPKI PEM); a private key file is accepted too, for its public half.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, HeadError> {
    let pem = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    if let Ok(k) = VerifyingKey::from_public_key_pem(&pem) {
        return Ok(k);
    }
    SigningKey::from_pkcs8_pem(&pem)
        .map(|k| k.verifying_key())
        .map_err(|e| HeadError::Key {
            path: path.display().to_string(),
            message: format!("{e} (expected an SPKI PEM ed25519 public key)"),
        })
}

/// A new key pair from the operating system's random source, as (private PKCS#8 PEM,
/// public SPKI PEM).
pub fn generate_key() -> Result<(String, String), HeadError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| HeadError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| HeadError::Random(e.to_string()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| HeadError::Random(e.to_string()))?;
    Ok((private.to_string(), public))
}

impl Ledger {
    /// The head of `run` after the first record whose hash is `hash`, if the run's log has
    /// such a record: how a bare head hash, kept without its count, is placed in the chain.
    pub fn head_at_hash(&self, run: &RunId, hash: &Hash32) -> Result<Option<Head>> {
        let mut found = None;
        crate::records::for_each(self.store(), run, |r| {
            if found.is_none() && r.hash == *hash {
                found = Some(Head {
                    count: r.seq + 1,
                    hash: r.hash,
                });
            }
            Ok(())
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Head {
        Head {
            count: 42,
            hash: Hash32::of(b"last"),
        }
    }

    fn keys() -> (SigningKey, VerifyingKey) {
        let (private, public) = generate_key().unwrap();
        let sk = SigningKey::from_pkcs8_pem(&private).unwrap();
        let vk = VerifyingKey::from_public_key_pem(&public).unwrap();
        assert_eq!(sk.verifying_key(), vk, "the two files are one pair");
        (sk, vk)
    }

    #[test]
    fn a_signed_head_checks_under_its_key_only() {
        let run = RunId::new("run-1").unwrap();
        let (sk, vk) = keys();
        let signed = SignedHead::sign(&run, head(), 7, &sk);
        assert_eq!(signed.check_signature(&vk), Ok(()));
        assert_eq!(signed.head(), Some(head()));

        let (_, other) = keys();
        assert!(matches!(
            signed.check_signature(&other),
            Err(SignatureProblem::WrongKey { .. })
        ));
        // Without the informational signer field the signature itself fails.
        let mut anonymous = signed.clone();
        anonymous.public_key = None;
        assert_eq!(
            anonymous.check_signature(&other),
            Err(SignatureProblem::Invalid)
        );

        for edit in [
            |h: &mut SignedHead| h.count += 1,
            |h: &mut SignedHead| h.hash = Hash32::of(b"other").to_hex(),
            |h: &mut SignedHead| h.run = "run-2".into(),
            |h: &mut SignedHead| h.signed_at_ms += 1,
        ] {
            let mut forged = signed.clone();
            edit(&mut forged);
            assert_eq!(
                forged.check_signature(&vk),
                Err(SignatureProblem::Invalid),
                "{forged:?}"
            );
        }
        assert_eq!(
            SignedHead::unsigned(&run, head(), 7).check_signature(&vk),
            Err(SignatureProblem::Unsigned)
        );
    }

    #[test]
    fn head_files_round_trip_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, vk) = keys();
        let signed = SignedHead::sign(&RunId::new("r").unwrap(), head(), 1, &sk);
        let path = dir.path().join("head.json");
        std::fs::write(&path, signed.to_json()).unwrap();
        let back = SignedHead::read(&path).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.check_signature(&vk), Ok(()));

        std::fs::write(&path, "{\"format\":\"other/1\"}").unwrap();
        assert!(matches!(
            SignedHead::read(&path),
            Err(HeadError::Format { .. })
        ));
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            read_verifying_key(&path),
            Err(HeadError::Key { .. })
        ));
    }

    /// A throwaway key pair and signature made with OpenSSL 3 (`openssl genpkey -algorithm
    /// ed25519`, `openssl pkey -pubout`, `openssl pkeyutl -sign -rawin` over the documented
    /// message): attest reads OpenSSL's key files, and a head signed outside attest checks.
    #[test]
    fn keys_and_signatures_made_with_openssl_are_accepted() {
        const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHLbF4xNDhffjINsEzGSuCBsphDsMYlHdVIA9UAu85QD\n-----END PRIVATE KEY-----\n";
        const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAjrQp9+E7Sn7vyc1vGamiFBYiobOlUM7hJ6nE1K3UDvc=\n-----END PUBLIC KEY-----\n";
        const SIGNATURE: &str = "583deb296cd4c4b69df65b62c6bed9278b880a146895ad1ed92343fec4014e55ed38fd9b96b1c92c31eee190e8958b85b7893b1d985111e315c8d4884a94cc07";
        let dir = tempfile::tempdir().unwrap();
        let (key_path, pub_path) = (dir.path().join("k"), dir.path().join("k.pub"));
        std::fs::write(&key_path, PRIVATE).unwrap();
        std::fs::write(&pub_path, PUBLIC).unwrap();
        let sk = read_signing_key(&key_path).unwrap();
        let vk = read_verifying_key(&pub_path).unwrap();
        assert_eq!(sk.verifying_key(), vk);
        assert_eq!(
            hex(vk.as_bytes()),
            "8eb429f7e13b4a7eefc9cd6f19a9a2141622a1b3a550cee127a9c4d4add40ef7"
        );
        let signed_by_openssl = SignedHead {
            format: SIGNED_HEAD_FORMAT.into(),
            run: "run-1".into(),
            count: 56,
            hash: "a".repeat(64),
            signed_at_ms: 1_700_000_000_000,
            public_key: None,
            signature: Some(SIGNATURE.into()),
        };
        assert_eq!(signed_by_openssl.check_signature(&vk), Ok(()));
        // Ed25519 is deterministic: attest's own signature over the same head is the same.
        let ours = SignedHead::sign(
            &RunId::new("run-1").unwrap(),
            signed_by_openssl.head().unwrap(),
            1_700_000_000_000,
            &sk,
        );
        assert_eq!(ours.signature.as_deref(), Some(SIGNATURE));
    }

    #[test]
    fn the_signed_message_is_the_documented_text() {
        assert_eq!(
            signed_message("r", 3, "ab", 9),
            b"attest-signed-head/1\nrun=r\ncount=3\nhash=ab\nsigned_at_ms=9\n".to_vec()
        );
    }
}
