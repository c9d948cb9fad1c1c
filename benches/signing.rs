//! A licence token's signature, side by side: `cargo bench --bench signing`.
//!
//! `signer` is what the service does (`LicenseSigner::sign`, the key parsed
//! and its public half derived once, at start-up); `jsonwebtoken` is
//! `jsonwebtoken::encode` with the same key and claims, which parses the
//! PKCS#8 key and derives its public half for every token. Both make the
//! same bytes (a unit test in `src/signing.rs` holds them to it), so the
//! ratio of the two is what loading the key once saves per licence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::Criterion;
use gatekeeper::signing::{LicenseClaims, LicenseSigner, LICENSE_ISSUER};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn main() {
    let pem = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(
        &ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        Default::default(),
    )
    .unwrap();
    let signer = LicenseSigner::from_pkcs8_pem(pem.as_bytes()).unwrap();
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(signer.kid().to_string());
    header.typ = Some("JWT".into());
    let claims = LicenseClaims {
        iss: LICENSE_ISSUER,
        sub: "0193a1f2-7c4e-7d40-9a6b-2f0c3e5d8a11",
        aud: "ACME-FW-K",
        product: "ACME-FW-K",
        reseller: "acme",
        customer: "cust-000123",
        seats: 25,
        iat: 1_796_000_000,
        nbf: 1_796_000_000,
        exp: 1_827_536_000,
        status: Some(signer.status_claim(123_456)),
    };
    assert_eq!(
        signer.sign(&claims).unwrap(),
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    );
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("licence_token");
    group.bench_function("signer", |b| {
        b.iter(|| signer.sign(black_box(&claims)).unwrap())
    });
    group.bench_function("jsonwebtoken", |b| {
        b.iter(|| jsonwebtoken::encode(&header, black_box(&claims), &key).unwrap())
    });
    group.finish();
    c.final_summary();
}
