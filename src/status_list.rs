//! Token Status Lists (IETF OAuth "Token Status List" draft, section 4):
//! the status of many licences packed into one byte array, a fixed number of
//! bits per licence (here 2), compressed with DEFLATE in the zlib format and
//! written in base64url without padding, as the `lst` of a status list
//! token. A product that holds a licence token with
//! `status.status_list: {idx, uri}` fetches the list at `uri` and reads the
//! bits at `idx` to learn whether the licence is still valid offline.
//!
//! Pure: bits in, text out, and back. Signing the list token is
//! [`crate::signing`]'s; which licence has which index, and keeping the list
//! in step with the licences, is the use cases' and the store's.
//!
//! Bit order, as the draft fixes it: the status of index `i` sits in byte
//! `i * bits / 8`, starting at bit `(i * bits) % 8` counted from the least
//! significant bit. So with 2 bits, index 0 is the byte's two lowest bits.
//!
//! The values licences take are the draft's registry's: `0` VALID (nothing
//! stands against the licence; its own `exp` still applies), `1` INVALID
//! (revoked, or ended by a designation) and `2` SUSPENDED.

use std::io::{Read as _, Write as _};

use base64::Engine as _;

/// Licences a list holds: licence `n` (its status-list index) is entry
/// `n % LIST_SIZE` of list `n / LIST_SIZE`. 65,536 two-bit entries are
/// 16 KiB before compression, a few dozen bytes when nearly all are valid.
pub const LIST_SIZE: i64 = 65_536;

/// Bits a licence's status takes in the lists the service publishes.
pub const BITS: u8 = 2;

/// The largest list [`StatusList::decode`] inflates to: 16 MiB, 64 million
/// 2-bit statuses. A longer `lst` is refused rather than inflated (a small
/// input can inflate to a great deal).
pub const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// A status list of `bits` bits a token (1, 2, 4 or 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusList {
    bits: u8,
    bytes: Vec<u8>,
}

/// Why an encoded list does not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("`lst` is not base64url without padding")]
    Base64,
    #[error("`lst` is not zlib-compressed DEFLATE data")]
    Deflate,
    #[error("the list inflates to more than {MAX_LIST_BYTES} bytes")]
    TooLarge,
    #[error("{0} bits a status: the draft allows 1, 2, 4 or 8")]
    Bits(u8),
}

impl StatusList {
    /// An empty list (every status `0`, valid) with room for `len` tokens.
    pub fn new(bits: u8, len: usize) -> Result<StatusList, Unreadable> {
        check_bits(bits)?;
        Ok(StatusList {
            bits,
            bytes: vec![0; (len * usize::from(bits)).div_ceil(8)],
        })
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// How many statuses the list holds.
    pub fn len(&self) -> usize {
        self.bytes.len() * 8 / usize::from(self.bits)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The status at `idx` (`0` beyond the end: nothing is known against it).
    pub fn get(&self, idx: usize) -> u8 {
        let (byte, shift) = self.place(idx);
        self.bytes
            .get(byte)
            .map_or(0, |b| (b >> shift) & self.mask())
    }

    /// Sets the status at `idx`, growing the list as needed; a value wider
    /// than the list's bits keeps its low bits.
    pub fn set(&mut self, idx: usize, value: u8) {
        let (byte, shift) = self.place(idx);
        if byte >= self.bytes.len() {
            self.bytes.resize(byte + 1, 0);
        }
        let mask = self.mask() << shift;
        self.bytes[byte] = (self.bytes[byte] & !mask) | ((value << shift) & mask);
    }

    /// The list as the `lst` of a status list token: zlib (DEFLATE) at the
    /// best compression, base64url without padding.
    pub fn encode(&self) -> String {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let _ = z.write_all(&self.bytes);
        let compressed = z.finish().unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(compressed)
    }

    /// Reads an `lst` of `bits` bits a status, inflating at most
    /// [`MAX_LIST_BYTES`].
    pub fn decode(bits: u8, lst: &str) -> Result<StatusList, Unreadable> {
        check_bits(bits)?;
        let compressed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(lst)
            .map_err(|_| Unreadable::Base64)?;
        let mut bytes = Vec::new();
        flate2::read::ZlibDecoder::new(compressed.as_slice())
            .take(MAX_LIST_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|_| Unreadable::Deflate)?;
        if bytes.len() > MAX_LIST_BYTES {
            return Err(Unreadable::TooLarge);
        }
        Ok(StatusList { bits, bytes })
    }

    fn mask(&self) -> u8 {
        // 1, 2, 4 or 8 bits: 0x01, 0x03, 0x0f, 0xff.
        (((1u16) << self.bits) - 1) as u8
    }

    /// The byte holding `idx`, and the shift of its lowest bit there.
    fn place(&self, idx: usize) -> (usize, u32) {
        let bit = idx * usize::from(self.bits);
        (bit / 8, (bit % 8) as u32)
    }
}

fn check_bits(bits: u8) -> Result<(), Unreadable> {
    match bits {
        1 | 2 | 4 | 8 => Ok(()),
        other => Err(Unreadable::Bits(other)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    /// The draft's own examples (section 4.1): the 1-bit list of statuses
    /// 1,0,0,1,1,1,0,1, 1,1,0,0,0,1,0,1 and the 2-bit list of
    /// 1,2,0,3,0,1,0,1, 1,2,3,3, with the `lst` the draft gives for each.
    const ONE_BIT: [u8; 16] = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1];
    const TWO_BITS: [u8; 12] = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3];

    #[test]
    fn the_drafts_examples_read_and_pack_as_the_draft_says() {
        let one = StatusList::decode(1, "eNrbuRgAAhcBXQ").unwrap();
        let two = StatusList::decode(2, "eNo76fITAAPfAgc").unwrap();
        for (i, s) in ONE_BIT.iter().enumerate() {
            assert_eq!(one.get(i), *s, "1-bit index {i}");
        }
        for (i, s) in TWO_BITS.iter().enumerate() {
            assert_eq!(two.get(i), *s, "2-bit index {i}");
        }
        // Packed the same way from the statuses: the draft's bytes.
        let mut packed = StatusList::new(2, 0).unwrap();
        for (i, s) in TWO_BITS.iter().enumerate() {
            packed.set(i, *s);
        }
        assert_eq!(packed.bytes, [0xC9, 0x44, 0xF9]);
        assert_eq!(StatusList::decode(2, &packed.encode()).unwrap(), packed);
        let mut packed = StatusList::new(1, 0).unwrap();
        for (i, s) in ONE_BIT.iter().enumerate() {
            packed.set(i, *s);
        }
        assert_eq!(packed.bytes, [0xB9, 0xA3]);
    }

    #[test]
    fn what_is_not_a_list_is_refused() {
        assert_eq!(
            StatusList::decode(2, "not base64!"),
            Err(Unreadable::Base64)
        );
        assert_eq!(StatusList::decode(2, "AAAA"), Err(Unreadable::Deflate));
        assert_eq!(
            StatusList::decode(3, "eNo76fITAAPfAgc"),
            Err(Unreadable::Bits(3))
        );
        assert_eq!(StatusList::new(0, 1), Err(Unreadable::Bits(0)));
        // A list that inflates past the bound is refused, not inflated.
        let big = StatusList::new(8, MAX_LIST_BYTES + 1).unwrap();
        assert_eq!(
            StatusList::decode(8, &big.encode()),
            Err(Unreadable::TooLarge)
        );
    }

    proptest! {
        /// Setting one status changes that status and no other, and the list
        /// reads back from its encoding unchanged.
        #[test]
        fn a_status_set_reads_back_and_touches_nothing_else(
            bits in prop::sample::select(vec![1u8, 2, 4, 8]),
            statuses in prop::collection::vec(any::<u8>(), 0..200),
            idx in 0usize..400,
            value in any::<u8>(),
        ) {
            let mask = ((1u16 << bits) - 1) as u8;
            let mut list = StatusList::new(bits, statuses.len()).unwrap();
            for (i, s) in statuses.iter().enumerate() {
                list.set(i, *s);
            }
            let before: Vec<u8> = (0..400).map(|i| list.get(i)).collect();
            list.set(idx, value);
            for (i, b) in before.iter().enumerate() {
                let want = if i == idx { value & mask } else { *b };
                prop_assert_eq!(list.get(i), want, "index {}", i);
            }
            prop_assert_eq!(StatusList::decode(bits, &list.encode()).unwrap(), list);
        }
    }
}
