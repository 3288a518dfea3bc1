//! AES-256-GCM for opening and sealing rows, with a key schedule that is wiped when dropped.
//!
//! The implementation is `ring`'s (BoringSSL's assembly, chosen at run time for the CPU: VAES and
//! VPCLMULQDQ where present, AES-NI and PCLMULQDQ otherwise, a constant-time fallback elsewhere).
//! Issue 3 measured it against RustCrypto's `aes-gcm` 0.11 inside the real pipeline: decrypting a
//! 1M-row plain NDJSON export took 1.05-1.29 s of CPU with `ring` against 1.57-1.74 s with
//! `aes-gcm` (same run, interleaved), and 1.7-2.1x less time per 413-byte row in isolation
//! (`bench/aead`). `aes-gcm` stays a dev-dependency: the tests seal with it, so every round trip
//! checks this implementation against an independent one.
//!
//! `ring` does not wipe its expanded key (AES round keys and the GHASH key powers) on drop, so
//! [`Cipher`] does: the key lives in a `MaybeUninit` that is overwritten with zeros, by volatile
//! writes, once it has been dropped. The schedule holds no pointers to other memory (it is plain
//! arrays), so those bytes are all there is to wipe at its final place. Key setup also leaves
//! temporaries on the stack (the GHASH key H among them, which `aes-gcm` wiped and `ring` does
//! not), so [`Cipher::new`] overwrites the stack its setup used before returning. A `Cipher` is not
//! `Clone`: callers share one (`Arc`) rather than copy the schedule around. The schedule still
//! moves more than once on its way there, and a move may leave a copy on the stack: in a release
//! build on x86_64, `ring`'s result and the `LessSafeKey` made from it are copied within the frame
//! of `build` (a function of its own so that [`Cipher::new`]'s stack scrub covers them), then the
//! `Cipher` is returned into its caller's frame, from which the key set (`format::keyset`) moves
//! it into its `Arc`. That last copy is not wiped; it is overwritten only as the stack is reused. No copy can
//! be reached from safe code.

use std::mem::MaybeUninit;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use zeroize::Zeroize;

/// Bytes of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the GCM nonce.
pub const NONCE_LEN: usize = 12;

/// An AES-256-GCM key, ready to open and seal. Wiped on drop; never printed.
pub struct Cipher {
    /// Always initialised, until `drop` wipes it.
    key: MaybeUninit<LessSafeKey>,
}

/// A tag did not match: the ciphertext, nonce, AAD or key is not the one sealed. The buffer
/// holds zeros, never unauthenticated plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthentic;

impl Cipher {
    /// A cipher for a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Cipher {
        let cipher = Self::build(key);
        scrub_stack();
        cipher
    }

    /// Key setup, in a frame of its own so that [`scrub_stack`] covers what it left behind.
    #[inline(never)]
    fn build(key: &[u8; 32]) -> Cipher {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes a 32-byte key");
        Cipher {
            key: MaybeUninit::new(LessSafeKey::new(unbound)),
        }
    }

    #[allow(unsafe_code)]
    fn key(&self) -> &LessSafeKey {
        // SAFETY: `key` is initialised by `build` (the only constructor) and stays so until `drop`.
        // Why `MaybeUninit` at all: it is how the dropped schedule is wiped (see `drop`), which
        // `ring` does not do itself, and `ring` is the AES-GCM here because a 1M-row decrypt took
        // 1.05-1.29 s of CPU with it against 1.57-1.74 s with `aes-gcm` (module doc).
        unsafe { self.key.assume_init_ref() }
    }

    /// Decrypt `in_out` in place and check `tag` against it, `nonce` and `aad`. `ring` does not
    /// check the tag first: it decrypts while it computes the tag, then compares the two, and on
    /// a mismatch overwrites all of `in_out` with zeros before it returns the error. So on
    /// failure `in_out` is all zeros, never unauthenticated plaintext.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unauthentic> {
        self.key()
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                Tag::from(*tag),
                in_out,
                0..,
            )
            .map(|_| ())
            .map_err(|_| Unauthentic)
    }

    /// Encrypt `in_out` in place and return the tag. The nonce MUST never have been used with this
    /// key before.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let tag = self
            .key()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                in_out,
            )
            .expect("row plaintexts are far below AES-GCM's 64 GiB limit");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// Overwrite the stack just below the caller's frame, where the frames of the function it just
/// called (key setup, and `ring`'s own) left their temporaries: 16 KiB is several times what
/// that setup uses.
#[inline(never)]
fn scrub_stack() {
    let mut area = [0u8; 16 * 1024];
    area.zeroize();
    std::hint::black_box(&area);
}

impl Drop for Cipher {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `key` is initialised (see `key`) and is never used again after this. This is
        // what lets the schedule be wiped below, the price of `ring`'s speed (see `key`).
        unsafe { self.key.assume_init_drop() };
        // `MaybeUninit` may hold any bytes, so overwriting the dropped key with zeros is sound.
        self.key.zeroize();
    }
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // NIST SP 800-38D test case 16 (AES-256, 96-bit IV, with AAD), from the GCM specification's
    // appendix B: an answer this code did not produce.
    const KEY: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    const IV: &str = "cafebabefacedbaddecaf888";
    const PT: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95\
                      956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
    const AAD: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
    const CT: &str = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48\
                      590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662";
    const TAG: &str = "76fc6ece0f4e1768cddf8853bb2d551b";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn cipher() -> Cipher {
        Cipher::new(&hex(KEY).try_into().unwrap())
    }

    #[test]
    fn seals_the_nist_vector() {
        let mut buf = hex(PT);
        let tag = cipher().seal_in_place(&hex(IV).try_into().unwrap(), &hex(AAD), &mut buf);
        assert_eq!(buf, hex(CT));
        assert_eq!(tag.to_vec(), hex(TAG));
    }

    #[test]
    fn opens_the_nist_vector() {
        let mut buf = hex(CT);
        let tag: [u8; 16] = hex(TAG).try_into().unwrap();
        cipher()
            .open_in_place(&hex(IV).try_into().unwrap(), &hex(AAD), &mut buf, &tag)
            .unwrap();
        assert_eq!(buf, hex(PT));
    }

    /// `ring` decrypts before it compares tags; this pins that it wipes the buffer on a mismatch,
    /// which `record` and SECURITY.md promise.
    #[test]
    fn a_wrong_aad_fails_and_leaves_zeros() {
        let mut buf = hex(CT);
        let tag: [u8; 16] = hex(TAG).try_into().unwrap();
        let mut aad = hex(AAD);
        aad[0] ^= 1;
        let c = cipher();
        assert_eq!(
            c.open_in_place(&hex(IV).try_into().unwrap(), &aad, &mut buf, &tag),
            Err(Unauthentic)
        );
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(format!("{:?}", cipher()), "Cipher(<redacted>)");
    }
}
