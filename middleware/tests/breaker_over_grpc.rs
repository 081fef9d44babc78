//! The client stack's circuit breaker against a real tonic server on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{OPEN_FOR, ProbeServer, fail, fixture, hair_trigger, ok, trip_and_wait, wait_until};
use futures::StreamExt;
use middleware::{BreakerOpen, BreakerState, ClientStackConfig, ServerStackConfig};
use skywire_proto::skywire::testing::v1::{Behavior, ProbeRequest};
use tokio::sync::Barrier;
use tonic::Code;

/// Done-when (a): 200 concurrent callers during half-open → exactly one reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_lets_exactly_one_of_200_concurrent_callers_through() {
    let (server, breaker, mut client) = fixture().await;
    trip_and_wait(&mut client, &breaker).await;
    let before = server.service.calls();

    let barrier = Arc::new(Barrier::new(200));
    let callers: Vec<_> = (0..200)
        .map(|_| {
            let mut client = client.clone();
            let barrier = barrier.clone();
            // The probe is slow, so every other caller arrives while it is in flight.
            tokio::spawn(async move {
                barrier.wait().await;
                client.unary(ok(500)).await
            })
        })
        .collect();
    let mut passed = 0;
    let mut refused = 0;
    for caller in callers {
        match caller.await.unwrap() {
            Ok(_) => passed += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert_eq!(BreakerOpen::breaker_of(&status), Some("probe-server"));
                assert!(status.message().contains("probe-server"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(
        server.service.calls() - before,
        1,
        "exactly one call reached the server"
    );
    assert_eq!((passed, refused), (1, 199));
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "the successful probe closed it"
    );
    server.stop().await;
}

/// Done-when (b): the probe's caller drops its future → the next caller can probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_whose_caller_gives_up_frees_the_slot() {
    let (server, breaker, mut client) = fixture().await;
    trip_and_wait(&mut client, &breaker).await;
    let before = server.service.calls();

    let mut prober = client.clone();
    let probe = tokio::spawn(async move { prober.unary(ok(10_000)).await });
    wait_until("the probe reached the server", || {
        server.service.calls() > before
    })
    .await;
    let refused = client.unary(ok(0)).await.unwrap_err();
    assert_eq!(BreakerOpen::breaker_of(&refused), Some("probe-server"));
    // The standard error model: any gRPC client decodes why (reason, which breaker).
    let info = skywire_proto::status::error_info(&refused).expect("an ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        (middleware::breaker::REASON_BREAKER_OPEN, "skywire")
    );
    assert_eq!(info.metadata["breaker"], "probe-server");
    assert_eq!(info.metadata["state"], "half_open");

    probe.abort(); // the caller drops the probe's future
    assert!(probe.await.unwrap_err().is_cancelled());
    assert_eq!(
        breaker.state(),
        BreakerState::HalfOpen,
        "a cancellation is not a failure"
    );
    client.unary(ok(0)).await.expect("the next caller probes");
    assert_eq!(breaker.state(), BreakerState::Closed);
    server.stop().await;
}

/// Done-when (c): a probe that panics releases the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_panics_frees_the_slot() {
    let (server, breaker, mut client) = fixture().await;
    trip_and_wait(&mut client, &breaker).await;
    let before = server.service.calls();

    // The probe's task panics while the call is in flight (here: while consuming the stream
    // the probe opened), unwinding through the breaker's permit.
    let mut prober = client.clone();
    let probe = tokio::spawn(async move {
        let request = ProbeRequest {
            items: 5,
            delay_ms: 20,
            ..ProbeRequest::default()
        };
        let mut stream = prober.server_stream(request).await.unwrap().into_inner();
        let first = stream.next().await;
        panic!("caller blew up after {first:?}");
    });
    let joined = probe.await.unwrap_err();
    assert!(joined.is_panic());
    assert!(
        server.service.calls() > before,
        "the probe did reach the server"
    );
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    client.unary(ok(0)).await.expect("the next caller probes");
    assert_eq!(breaker.state(), BreakerState::Closed);
    server.stop().await;
}

/// Done-when (d): a stream's outcome is recorded at its trailers — UNAVAILABLE counts as a
/// failure, OK as a success — not when its headers arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_outcome_is_recorded_when_the_trailers_arrive() {
    let (server, breaker, mut client) = fixture().await;

    // A stream ending in UNAVAILABLE, while closed: the breaker opens only at the trailers.
    let failing = ProbeRequest {
        behavior: Behavior::Fail.into(),
        code: Code::Unavailable as i32,
        items: 3,
        delay_ms: 30,
        ..ProbeRequest::default()
    };
    let mut stream = client
        .server_stream(failing.clone())
        .await
        .unwrap()
        .into_inner();
    for index in 0..3 {
        assert_eq!(stream.next().await.unwrap().unwrap().index, index);
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "messages are not the outcome"
        );
    }
    let end = stream.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), Code::Unavailable);
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "the trailers counted as a failure"
    );

    // As the half-open probe, a stream ending OK closes the breaker — at its end.
    tokio::time::sleep(OPEN_FOR + Duration::from_millis(50)).await;
    let healthy = ProbeRequest {
        items: 3,
        delay_ms: 30,
        ..ProbeRequest::default()
    };
    let mut stream = client.server_stream(healthy).await.unwrap().into_inner();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen,
            "still probing until the trailers"
        );
    }
    assert!(stream.next().await.is_none(), "the stream ends with OK");
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "the OK trailers counted as a success"
    );

    // And the same failing stream as a probe re-opens it.
    let mut stream = client.server_stream(failing).await.unwrap().into_inner();
    while let Some(Ok(_)) = stream.next().await {}
    assert_eq!(breaker.state(), BreakerState::Open);
    server.stop().await;
}

/// Errors that describe the request, not the server, never trip the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_errors_do_not_trip_the_breaker() {
    let (server, breaker, mut client) = fixture().await;
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::PermissionDenied,
        Code::FailedPrecondition,
    ] {
        assert_eq!(client.unary(fail(code)).await.unwrap_err().code(), code);
        assert_eq!(breaker.state(), BreakerState::Closed, "{code:?}");
    }
    server.stop().await;
}

/// A call that times out on the client counts against the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_trips_the_breaker() {
    let server = ProbeServer::start(ServerStackConfig::default()).await;
    // Open long enough that a loaded machine cannot reach half-open before the check.
    let breaker = hair_trigger("probe-server", Duration::from_secs(60));
    let config = ClientStackConfig {
        timeouts: middleware::TimeoutConfig::uniform(Duration::from_millis(100)),
        ..ClientStackConfig::default()
    };
    let mut client = server.guarded_client(breaker.clone(), config).await;
    let status = client.unary(ok(2_000)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(breaker.state(), BreakerState::Open);
    server.stop().await;
}

/// A server that is down is a transport failure, refused fast once the breaker opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_trips_the_breaker() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens there now
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let breaker = hair_trigger("gone", Duration::from_secs(60));
    let mut client = skywire_proto::testing::ProbeClient::new(middleware::client_stack(
        channel,
        &ClientStackConfig::default(),
        breaker.clone(),
    ));
    let first = client.unary(ok(0)).await.unwrap_err();
    assert_eq!(first.code(), Code::Unavailable, "{first:?}");
    assert_eq!(breaker.state(), BreakerState::Open);
    let second = client.unary(ok(0)).await.unwrap_err();
    assert_eq!(BreakerOpen::breaker_of(&second), Some("gone"));
}
