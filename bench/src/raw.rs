//! In-process crypto baselines: the "raw rate" of DESIGN §10. Signing uses the issuer's
//! own `Signer` (parsed aws-lc-rs key pair, JWS assembled in place) on every thread;
//! jsonwebtoken's `encode` (which re-parses the key per call) is measured beside it for
//! comparison. Verification uses `tessera_common::verify`, as the sidecar does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use tessera_common::claims::ACCESS_TOKEN_TYP;
use tessera_common::keys::Algorithm;
use tessera_common::verify::{check_signature, parse_compact};

use crate::fixtures::{self, BenchKey};
use crate::report::Measurement;

/// How long and on how many threads to run an in-process measurement.
#[derive(Clone, Copy, Debug)]
pub struct RawPlan {
    pub threads: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// Measures signing with the issuer's `Signer`.
pub fn sign(algorithm: Algorithm, plan: RawPlan) -> anyhow::Result<Measurement> {
    let key = BenchKey::generate(algorithm)?;
    let claims = fixtures::claims(fixtures::now())?;
    let name = format!("raw sign {algorithm} (Signer, {} thr)", plan.threads);
    run_threads(&name, plan, || {
        key.signer.sign_jws(ACCESS_TOKEN_TYP, &claims)?;
        Ok(())
    })
}

/// Measures signing with `jsonwebtoken::encode` (key re-parsed on every call).
pub fn sign_jsonwebtoken(algorithm: Algorithm, plan: RawPlan) -> anyhow::Result<Measurement> {
    let key = BenchKey::generate(algorithm)?;
    let claims = fixtures::claims(fixtures::now())?;
    let (jwt_algorithm, encoding_key) = match algorithm {
        Algorithm::Rs256 => {
            // aws-lc-rs exports RSA keys as PKCS#8 only; jsonwebtoken reads that from PEM.
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(&key.pkcs8)
            );
            (
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())?,
            )
        }
        Algorithm::Es256 => (
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::EncodingKey::from_ec_der(&key.pkcs8),
        ),
        Algorithm::EdDsa => (
            jsonwebtoken::Algorithm::EdDSA,
            jsonwebtoken::EncodingKey::from_ed_der(&key.pkcs8),
        ),
        Algorithm::Hs256 => anyhow::bail!("HS256 keys do not sign JWS"),
    };
    let mut header = jsonwebtoken::Header::new(jwt_algorithm);
    header.kid = Some(key.signer.kid().to_string());
    header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
    let name = format!("raw sign {algorithm} (jsonwebtoken, {} thr)", plan.threads);
    run_threads(&name, plan, || {
        jsonwebtoken::encode(&header, &claims, &encoding_key)?;
        Ok(())
    })
}

/// Measures verification (parse + pinned-algorithm signature check) of distinct tokens.
pub fn verify(algorithm: Algorithm, plan: RawPlan) -> anyhow::Result<Measurement> {
    let key = BenchKey::generate(algorithm)?;
    let verifying_key = key.verifying_key()?;
    let tokens = (0..256)
        .map(|_| {
            let claims = fixtures::claims(fixtures::now())?;
            Ok(key.signer.sign_jws(ACCESS_TOKEN_TYP, &claims)?)
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    let next = AtomicU64::new(0);
    let name = format!("raw verify {algorithm} ({} thr)", plan.threads);
    run_threads(&name, plan, || {
        let index = next.fetch_add(1, Ordering::Relaxed) as usize % tokens.len();
        let jws = parse_compact(&tokens[index]).map_err(|r| anyhow::anyhow!("{r}"))?;
        check_signature(&jws, &verifying_key).map_err(|r| anyhow::anyhow!("{r}"))?;
        Ok(())
    })
}

/// Runs `operation` in a loop on `plan.threads` threads and counts the operations that
/// complete inside the measurement window (after the warm-up).
fn run_threads<F>(name: &str, plan: RawPlan, operation: F) -> anyhow::Result<Measurement>
where
    F: Fn() -> anyhow::Result<()> + Sync,
{
    let started = Instant::now();
    let window_start = started + plan.warmup;
    let window_end = window_start + plan.measure;
    let (counts, foreign_cpu) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| crate::cpu::watch_window_blocking(window_start, window_end));
        let workers: Vec<_> = (0..plan.threads.max(1))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<u64> {
                    let mut n_done = 0u64;
                    loop {
                        if Instant::now() >= window_end {
                            return Ok(n_done);
                        }
                        operation()?;
                        let finished = Instant::now();
                        if finished >= window_start && finished < window_end {
                            n_done += 1;
                        }
                    }
                })
            })
            .collect();
        let counts = workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<u64>>>();
        counts.map(|counts| (counts, watcher.join().ok().flatten()))
    })
    .with_context(|| format!("running {name}"))?;
    let mut measurement = Measurement::new(name, counts.iter().sum(), plan.measure.as_secs_f64());
    measurement.foreign_cpu = foreign_cpu;
    Ok(measurement)
}
