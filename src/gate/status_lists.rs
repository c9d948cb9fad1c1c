//! The licences' status lists (IETF OAuth "Token Status List" draft): list
//! `k` holds the status of the licences whose status-list index is in
//! `[k * LIST_SIZE, (k + 1) * LIST_SIZE)`, 2 bits each (`0` valid, `1`
//! invalid: ended or revoked, `2` suspended; see [`Standing::status_bits`]),
//! signed with the licence key as a `statuslist+jwt` whose claims are
//! `sub` (the list's URI, the `uri` of its licences' `status` claims),
//! `iat`, `exp`, `ttl` and `status_list: {bits, lst}`.
//!
//! Each list is built from the licence rows when it is asked for: the rows
//! that are not active, read through the partial index that holds only
//! them, so it costs what is set in it. Nothing is cached: a licence's
//! standing and its status-list entry change in the same transaction, and
//! the next list read shows it.
//!
//! How long a list may be used, chosen for a product that checks its
//! licence offline:
//!
//! - `ttl` is [`TTL_SECONDS`] (5 minutes, also the response's
//!   `Cache-Control: max-age`): a product that can reach the service
//!   fetches a fresh list at most that often, so a revocation or a
//!   suspension reaches it within 5 minutes.
//! - `exp` is `iat` + [`VALID_SECONDS`] (24 hours): a product that is
//!   offline may go on trusting the last list it fetched for a day. Past
//!   `exp` the list says nothing, and the product must fetch a new one
//!   before it treats the licence as valid. `exp` is also the longest that
//!   a revoked licence can go on being honoured by a product that is kept
//!   from fetching (an old list stays signed, and so replayable, until its
//!   `exp`); a day bounds that while letting a product ride out an outage
//!   of the service or of its own network.
//!
//! A list exists from index 0 up to the list of the highest index any
//! licence holds; a list past that is `None` (`404`), as no licence's
//! `status` claim names it. A list in that range with no licence that is
//! not valid is all zeros (a few dozen bytes compressed).

use chrono::Utc;
use serde_json::json;

use super::{blocking, Gate, GateError};
use crate::domain::Standing;
use crate::status_list::{StatusList, BITS, LIST_SIZE};

/// How long a product may cache a list before it fetches a fresh one
/// (`ttl`, and `Cache-Control: max-age`), in seconds.
pub const TTL_SECONDS: i64 = 300;

/// How long after it is issued a list is valid (`exp - iat`), in seconds.
pub const VALID_SECONDS: i64 = 24 * 60 * 60;

impl Gate {
    /// Status list `k` as a signed `statuslist+jwt`, or `None` when no
    /// licence is in it or in a later list (`k` negative, or past the list
    /// of the highest index).
    pub async fn status_list(&self, k: i64) -> Result<Option<String>, GateError> {
        let store = self.store.clone();
        let lst = blocking(move || {
            let highest = match store.highest_status_idx()? {
                Some(highest) => highest,
                None => return Ok(None),
            };
            if k < 0 || k > highest / LIST_SIZE {
                return Ok(None);
            }
            let entries = store.status_list_entries(k)?;
            Ok(Some(encode(k, &entries)))
        })
        .await?;
        let Some(lst) = lst else {
            return Ok(None);
        };
        let iat = Utc::now().timestamp();
        let claims = json!({
            "sub": self.signer.status_list_uri(k),
            "iat": iat,
            "exp": iat + VALID_SECONDS,
            "ttl": TTL_SECONDS,
            "status_list": {"bits": BITS, "lst": lst},
        });
        self.signer
            .sign_status_list(&claims)
            .map(Some)
            .map_err(|e| GateError::Signing(e.to_string()))
    }
}

/// The `lst` of list `k`, whose entries not valid are `entries` (index,
/// standing; every other entry is `0`).
fn encode(k: i64, entries: &[(i64, Standing)]) -> String {
    let size = LIST_SIZE as usize;
    // `StatusList::new` refuses only a bit width the draft does not allow,
    // and `BITS` is one it allows.
    let mut list = StatusList::new(BITS, size).unwrap_or_else(|_| unreachable!("BITS is 2"));
    let first = k * LIST_SIZE;
    for (idx, standing) in entries {
        if let Ok(entry) = usize::try_from(idx - first) {
            if entry < size {
                list.set(entry, standing.status_bits());
            }
        }
    }
    list.encode()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn each_entry_takes_its_standing_and_the_rest_are_valid() {
        let k = 3;
        let base = k * LIST_SIZE;
        let lst = encode(
            k,
            &[
                (base, Standing::Revoked),
                (base + 1, Standing::Suspended),
                (base + 7, Standing::Ended),
                (base + LIST_SIZE - 1, Standing::Suspended),
                // Outside the list: left alone.
                (base - 1, Standing::Revoked),
                (base + LIST_SIZE, Standing::Revoked),
            ],
        );
        let list = StatusList::decode(BITS, &lst).unwrap();
        assert_eq!(list.len(), LIST_SIZE as usize);
        assert_eq!(list.get(0), 1);
        assert_eq!(list.get(1), 2);
        assert_eq!(list.get(7), 1);
        assert_eq!(list.get(LIST_SIZE as usize - 1), 2);
        let set = (0..LIST_SIZE as usize)
            .filter(|&i| list.get(i) != 0)
            .count();
        assert_eq!(set, 4, "nothing else is set");
    }
}
