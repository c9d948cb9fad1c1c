//! Signing checkpoints over the audit chain's head: on demand, at an
//! interval by one replica at a time, and once more at shutdown.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::audit::Checkpoint;
use crate::periodic::Periodic;
use crate::signing::LicenseSigner;
use crate::store::checkpoints::try_lead;
use crate::store::{DbConn, Store, StoreError};

impl LicenseSigner {
    /// Signs a checkpoint over the chain's event `seq` with hash `hash`.
    pub fn sign_checkpoint(&self, seq: i64, hash: &str, at: DateTime<Utc>) -> Checkpoint {
        let at = crate::store::format_instant(at);
        let signature =
            self.sign_message(Checkpoint::message(seq, hash, &at, self.kid()).as_bytes());
        Checkpoint {
            seq,
            hash: hash.to_string(),
            at,
            kid: self.kid().to_string(),
            signature,
        }
    }
}

impl super::Gate {
    /// Signs a checkpoint over the chain's head now (or returns the one
    /// that already covers it).
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let (store, signer) = (self.store.clone(), Arc::clone(&self.signer));
        super::blocking(move || sign_now(&store, &signer)).await
    }
}

/// Signs the chain's current head, unless a checkpoint already covers it.
/// `None` while the chain is empty.
pub fn sign_now(store: &Store, signer: &LicenseSigner) -> Result<Option<Checkpoint>, StoreError> {
    let (seq, hash) = store.head()?;
    if seq == 0 {
        return Ok(None);
    }
    if let Some(existing) = store
        .checkpoints(Some(seq - 1), 1)?
        .pop()
        .filter(|c| c.seq == seq)
    {
        return Ok(Some(existing));
    }
    store
        .insert_checkpoint(&signer.sign_checkpoint(seq, &hash, Utc::now()))
        .map(Some)
}

/// The background signer of one process. Dropping it stops it.
pub struct Checkpointer {
    /// Held for its `Drop`, which stops the thread.
    _running: Periodic,
}

impl Checkpointer {
    /// Every `interval`, signs the head if this process holds the signer
    /// lock (taking it when free: when the replica that held it died).
    pub fn start(
        store: Store,
        signer: Arc<LicenseSigner>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let mut lead: Option<DbConn> = None;
        Periodic::start("checkpointer", interval, false, move || {
            if lead.is_none() {
                lead = store
                    .dedicated_connection()
                    .and_then(|mut conn| Ok(try_lead(&mut conn)?.then_some(conn)))
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "checkpoint signer: cannot reach the database");
                        None
                    });
            } else if let Some(conn) = lead.as_mut() {
                use diesel::connection::SimpleConnection;
                if conn.batch_execute("SELECT 1").is_err() {
                    // The lock went with the connection; try again next time.
                    lead = None;
                    return;
                }
            }
            if lead.is_some() {
                match sign_now(&store, &signer) {
                    Ok(Some(c)) => tracing::debug!(seq = c.seq, "checkpoint signed"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "checkpoint signer: could not sign"),
                }
            }
        })
        .map(|running| Checkpointer { _running: running })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_checkpoint_signature_covers_what_it_names() {
        // RFC 8037, appendix A.1: a known Ed25519 key.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
        let signer = LicenseSigner::from_pkcs8_pem(pem.as_bytes()).unwrap();
        let checkpoint = signer.sign_checkpoint(7, "ab", Utc::now());
        assert!(checkpoint.signature_verifies(&[signer.jwk().clone()]));
        let mut edited = checkpoint.clone();
        edited.seq = 8;
        assert!(!edited.signature_verifies(&[signer.jwk().clone()]));
    }
}
