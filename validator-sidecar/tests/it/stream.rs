//! ValidateStream: caller-chosen request ids, answers as each completes.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_proto::v1 as pb;

use crate::fake_issuer::FakeIssuer;
use crate::harness::{eventually, serving};
use crate::keys::{TestKey, claims};

/// Requests one stream may have in flight, plus a batch of answers (128) waiting for the
/// client in the transport's buffers.
const IN_FLIGHT_AND_BUFFERED: usize = tessera_sidecar::service::MAX_IN_FLIGHT_PER_STREAM + 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_answers_every_request_id_out_of_order() {
    answers_every_request_id_out_of_order().await;
}

/// On a runtime with one worker the stream checks signatures in its own task and sets
/// aside only the request waiting for a resync: the same answers, in the same freedom of
/// order.
#[tokio::test(flavor = "current_thread")]
async fn stream_on_one_worker_answers_every_request_id_out_of_order() {
    answers_every_request_id_out_of_order().await;
}

async fn answers_every_request_id_out_of_order() {
    let rsa = TestKey::rs256("rsa-stream");
    let ed = TestKey::eddsa("ed-stream");
    let issuer = FakeIssuer::start(&[&rsa, &ed]).await;
    let (sidecar, _dir) = serving(&issuer).await;

    // Request 1 carries an unknown kid and starts a resync, so its answer waits for the
    // bundle; the cheap requests behind it (garbage, cached tokens) overtake it.
    let cached = ed.sign(&claims("kim"));
    let mut requests = vec![pb::ValidateStreamRequest {
        request_id: 1,
        token: ed.sign_with_header(
            &json!({"alg": "EdDSA", "kid": "nobody", "typ": "at+jwt"}),
            &claims("kim"),
        ),
        ..Default::default()
    }];
    for id in 2..200u64 {
        let token = match id % 3 {
            0 => "garbage".to_owned(),
            1 => cached.clone(),
            _ => rsa.sign(&claims(&format!("user-{id}"))),
        };
        requests.push(pb::ValidateStreamRequest {
            request_id: id * 1_000,
            token,
            required_permissions: vec!["orders:read".into()],
            ..Default::default()
        });
    }
    let expected: HashSet<u64> = requests.iter().map(|request| request.request_id).collect();
    let mut responses = sidecar.stream(requests).await;
    let mut order = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        let reason = pb::Reason::try_from(response.reason).unwrap();
        match response.request_id {
            1 => assert_eq!(reason, pb::Reason::UnknownKid),
            id if (id / 1_000) % 3 == 0 => assert_eq!(reason, pb::Reason::Malformed),
            id => {
                assert!(response.valid, "{id}: {reason:?}");
                assert_eq!(response.claims.as_ref().unwrap().tenant_id, "acme");
                assert!(!response.claims_json.is_empty());
            }
        }
        order.push(response.request_id);
    }
    let answered: HashSet<u64> = order.iter().copied().collect();
    assert_eq!(
        order.len(),
        expected.len(),
        "an id was answered twice or not at all"
    );
    assert_eq!(answered, expected);
    assert_ne!(order[0], 1, "the slow request was not overtaken");
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_with_many_requests_in_flight_answers_them_all() {
    let ec = TestKey::es256("ec-volume");
    let issuer = FakeIssuer::start(&[&ec]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    // Far more requests than the per-stream in-flight bound, mixing distinct and repeated
    // tokens; the client reads no answer until the sidecar has taken more requests than
    // it may have in flight and buffered, so it must hold back.
    let repeated = ec.sign(&claims("leo"));
    let requests: Vec<pb::ValidateStreamRequest> = (0..3_000u64)
        .map(|id| pb::ValidateStreamRequest {
            request_id: id,
            token: if id % 2 == 0 {
                repeated.clone()
            } else {
                ec.sign(&claims(&format!("u{id}")))
            },
            ..Default::default()
        })
        .collect();
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let requests = requests.into_iter().inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let mut responses = sidecar.stream(requests).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            pulled.load(Ordering::SeqCst) > IN_FLIGHT_AND_BUFFERED
        })
        .await,
        "the client's transport never offered more than the sidecar's bounds"
    );
    let mut seen = HashSet::new();
    while let Some(response) = responses.message().await.unwrap() {
        assert!(response.valid);
        assert!(seen.insert(response.request_id));
    }
    assert_eq!(seen.len(), 3_000);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stops_the_sidecar_reading_its_requests() {
    stops_reading_when_the_client_does().await;
}

#[tokio::test(flavor = "current_thread")]
async fn on_one_worker_a_client_that_stops_reading_stops_the_sidecar_reading() {
    stops_reading_when_the_client_does().await;
}

async fn stops_reading_when_the_client_does() {
    let ec = TestKey::es256("ec-backpressure");
    let issuer = FakeIssuer::start(&[&ec]).await;
    let (sidecar, _dir) = serving(&issuer).await;

    // The client offers far more requests than any bounded buffer holds and reads no
    // answer. The sidecar must stop taking requests once its in-flight permits and its
    // outbound buffer are full; HTTP/2 flow control then stops the client. Counting the
    // requests the client's transport has pulled shows the plateau.
    const OFFERED: usize = 50_000;
    let token = ec.sign(&claims("backpressure"));
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let requests = (0..OFFERED as u64).map(move |id| {
        counter.fetch_add(1, Ordering::Relaxed);
        pb::ValidateStreamRequest {
            request_id: id,
            token: token.clone(),
            ..Default::default()
        }
    });
    let mut client = sidecar.client().await;
    let mut responses = client
        .validate_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();

    // Wait until the count stops moving for half a second.
    let mut last = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = pulled.load(Ordering::Relaxed);
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let plateau = pulled.load(Ordering::Relaxed);
    eprintln!("backpressure: the client's transport stopped after {plateau} of {OFFERED} requests");
    assert_eq!(plateau, last, "the client kept sending: no backpressure");
    assert!(
        plateau < OFFERED / 4,
        "the sidecar took {plateau} of {OFFERED} requests without answers being read"
    );

    // Reading resumes the flow: every request is answered exactly once.
    let mut seen = HashSet::new();
    while let Some(response) = responses.message().await.unwrap() {
        assert!(response.valid);
        assert!(seen.insert(response.request_id));
    }
    assert_eq!(seen.len(), OFFERED);
    sidecar.stop().await;
}
