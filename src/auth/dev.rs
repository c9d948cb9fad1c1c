//! Development mode's keys and tokens: an Ed25519 key pair kept in the data
//! folder, and the tokens `gatekeeper token` (and the tests) sign with it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::Role;

/// Development keys: an Ed25519 key pair kept in the data folder.
#[derive(Debug, Clone)]
pub struct DevKeys {
    pub private_pem_path: PathBuf,
    pub public_pem_path: PathBuf,
}

impl DevKeys {
    /// The pair that signs development callers' tokens.
    pub fn in_dir(dir: &Path) -> Self {
        Self::named(dir, "dev-signing-key")
    }

    /// The pair that signs licences in development mode.
    pub fn license_in_dir(dir: &Path) -> Self {
        Self::named(dir, "dev-license-key")
    }

    fn named(dir: &Path, stem: &str) -> Self {
        DevKeys {
            private_pem_path: dir.join(format!("{stem}.pem")),
            public_pem_path: dir.join(format!("{stem}.pub.pem")),
        }
    }

    /// Loads the pair, creating it on first use. Returns whether it was
    /// created. A private key already there is never replaced (a missing
    /// public half is written again from it): a development key never
    /// rotates, so what it signed keeps verifying.
    pub fn ensure(&self) -> anyhow::Result<bool> {
        if self.private_pem_path.exists() && self.public_pem_path.exists() {
            return Ok(false);
        }
        use ed25519_dalek::pkcs8::{
            spki::der::pem::LineEnding, DecodePrivateKey, EncodePrivateKey, EncodePublicKey,
        };
        if self.private_pem_path.exists() {
            let pem = String::from_utf8(self.private_pem()?)
                .context("the development private key is not PEM text")?;
            let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).with_context(|| {
                format!(
                    "{} is not a PKCS#8 Ed25519 private key",
                    self.private_pem_path.display()
                )
            })?;
            let public = signing
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .context("encoding the development public key")?;
            std::fs::write(&self.public_pem_path, public.as_bytes())
                .with_context(|| format!("writing {}", self.public_pem_path.display()))?;
            return Ok(false);
        }
        let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let private = signing
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the development private key")?;
        let public = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .context("encoding the development public key")?;
        if let Some(dir) = self.private_pem_path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data folder {}", dir.display()))?;
        }
        write_private(&self.private_pem_path, private.as_bytes())?;
        std::fs::write(&self.public_pem_path, public.as_bytes())
            .with_context(|| format!("writing {}", self.public_pem_path.display()))?;
        Ok(true)
    }

    pub fn public_pem(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&self.public_pem_path)
            .with_context(|| format!("reading {}", self.public_pem_path.display()))
    }

    pub fn private_pem(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&self.private_pem_path)
            .with_context(|| format!("reading {}", self.private_pem_path.display()))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The claims of a token this service mints (development mode, and tests).
#[derive(Debug, Clone, Serialize)]
pub struct MintClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reseller: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

/// Signs `claims` with an Ed25519 private key in PKCS#8 PEM.
pub fn mint(private_pem: &[u8], claims: &MintClaims) -> anyhow::Result<String> {
    let key = EncodingKey::from_ed_pem(private_pem)
        .context("the signing key is not an Ed25519 PEM key")?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, &key).context("signing the token")
}
