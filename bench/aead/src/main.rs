//! Per-row cost of the candidate AES-256-GCM implementations and of the plaintext checks, for a
//! typical 413-byte record (issue 3: "if the design's aes-gcm cannot get there, measure the
//! alternatives"). Not part of the cipherstream crate: its own Cargo.lock, so `ring` is never a
//! dependency of the tool. Run: `cargo run --release --locked --manifest-path bench/aead/Cargo.toml`.
use aes_gcm::aead::{inout::InOutBuf, AeadInOut, Nonce};
use aes_gcm::{Aes256Gcm, KeyInit};
use std::time::Instant;
fn main() {
    let key = [7u8; 32];
    let n = 1_000_000usize;
    let len = 413usize;
    let pt: Vec<u8> = {
        let mut s = String::from("{\"appointment_id\":\"apt_000123\",\"patient\":{\"id\":\"pat_1\",\"name\":\"Zoë\"},\"amount\":120.50,\"notes\":\"");
        while s.len() < len - 2 { s.push('x'); }
        s.push_str("\"}");
        s.into_bytes()
    };
    let aad = b"stream:cust_123:123456";
    let a = Aes256Gcm::new_from_slice(&key).unwrap();
    let nonce = Nonce::<Aes256Gcm>::from([1u8; 12]);
    let mut ct = pt.clone();
    let tag = a.encrypt_inout_detached(&nonce, aad, InOutBuf::from(&mut ct[..])).unwrap();
    let r = ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key).unwrap());
    for round in 0..3 {
        let t = Instant::now();
        let mut buf = ct.clone();
        for _ in 0..n {
            buf.copy_from_slice(&ct);
            a.decrypt_inout_detached(&nonce, aad, InOutBuf::from(&mut buf[..]), &tag).unwrap();
        }
        let ta = t.elapsed();
        assert_eq!(buf, pt);
        let t = Instant::now();
        for _ in 0..n {
            buf.copy_from_slice(&ct);
            let rt = ring::aead::Tag::try_from(&tag[..]).unwrap();
            r.open_in_place_separate_tag(ring::aead::Nonce::assume_unique_for_key([1u8; 12]), ring::aead::Aad::from(aad), rt, &mut buf, 0..).unwrap();
        }
        let tr = t.elapsed();
        assert_eq!(buf, pt);
        let t = Instant::now();
        for _ in 0..n {
            serde_json::from_slice::<serde::de::IgnoredAny>(&pt).unwrap();
        }
        let tj = t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            std::str::from_utf8(&pt).unwrap();
        }
        let tu = t.elapsed();
        println!("round {round}: aes-gcm {:?} ring {:?} ratio {:.2}; serde IgnoredAny {:?}; utf8 {:?}", ta, tr, ta.as_secs_f64()/tr.as_secs_f64(), tj, tu);
    }
}
