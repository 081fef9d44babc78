//! The server stack's panic recovery, deadlines and load shedding, against a real tonic
//! server on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::{ProbeServer, ok};
use futures::StreamExt;
use middleware::{ServerStackConfig, TimeoutConfig};
use skywire_proto::skywire::testing::v1::{Behavior, ProbeRequest};
use skywire_proto::testing::ProbeClient;
use tonic::Code;

fn behaving(behavior: Behavior, items: u32) -> ProbeRequest {
    ProbeRequest {
        behavior: behavior.into(),
        items,
        payload: "boom".into(),
        ..ProbeRequest::default()
    }
}

/// Done-when (e): a unary panic and a mid-stream panic each give INTERNAL, while a concurrent
/// RPC on the same channel (the same HTTP/2 connection) succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_fail_only_their_own_call_with_internal() {
    let server = ProbeServer::start(ServerStackConfig::default()).await;
    let channel = server.channel().await; // one connection, shared by every call below
    let mut client = ProbeClient::new(channel);

    let mut slow = client.clone();
    let concurrent = tokio::spawn(async move { slow.unary(ok(800)).await });

    let unary = client
        .unary(behaving(Behavior::Panic, 0))
        .await
        .unwrap_err();
    assert_eq!(unary.code(), Code::Internal, "{unary:?}");
    assert!(unary.message().contains("panicked"), "{unary:?}");
    assert!(
        unary.message().contains("/skywire.testing.v1.Probe/Unary"),
        "{unary:?}"
    );

    let before_stream = client
        .server_stream(behaving(Behavior::Panic, 0))
        .await
        .unwrap_err();
    assert_eq!(before_stream.code(), Code::Internal, "{before_stream:?}");

    let mut stream = client
        .server_stream(behaving(Behavior::PanicMidStream, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().index, 0);
    assert_eq!(stream.next().await.unwrap().unwrap().index, 1);
    let mid_stream = stream.next().await.unwrap().unwrap_err();
    assert_eq!(mid_stream.code(), Code::Internal, "{mid_stream:?}");
    assert!(mid_stream.message().contains("panicked"), "{mid_stream:?}");
    assert!(stream.next().await.is_none());

    let reply = concurrent
        .await
        .unwrap()
        .expect("the concurrent call is unaffected");
    assert_eq!(reply.into_inner().payload, "");
    client
        .unary(ok(0))
        .await
        .expect("the connection still serves");
    server.stop().await;
}

/// Done-when (f): an expired deadline gives DEADLINE_EXCEEDED — from the server's budget,
/// from the caller's shorter `grpc-timeout`, and in the middle of a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadlines_give_deadline_exceeded() {
    let config = ServerStackConfig {
        timeouts: TimeoutConfig::uniform(Duration::from_millis(300)).with_method(
            "/skywire.testing.v1.Probe/ServerStream",
            Duration::from_millis(400),
        ),
        ..ServerStackConfig::default()
    };
    let server = ProbeServer::start(config).await;
    let mut client = ProbeClient::new(server.channel().await);

    // The server's budget.
    let started = Instant::now();
    let status = client.unary(ok(5_000)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("300ms"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The caller's grpc-timeout, shorter than the budget.
    let mut request = tonic::Request::new(ok(5_000));
    request.set_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let status = client.unary(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("100ms"), "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(290));

    // A stream that outlives its budget ends with DEADLINE_EXCEEDED after some items.
    let endless = ProbeRequest {
        items: 1_000,
        delay_ms: 50,
        ..ProbeRequest::default()
    };
    let mut stream = client.server_stream(endless).await.unwrap().into_inner();
    let mut items = 0;
    let end = loop {
        match stream.next().await {
            Some(Ok(_)) => items += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without its deadline"),
        }
    };
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert!(
        (2..10).contains(&items),
        "{items} items before the 400ms deadline"
    );

    client.unary(ok(0)).await.expect("fast calls still succeed");
    server.stop().await;
}

/// A server at its concurrency limit sheds new calls with RESOURCE_EXHAUSTED at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_server_sheds_load_with_resource_exhausted() {
    let config = ServerStackConfig {
        max_concurrent_requests: 1,
        ..ServerStackConfig::default()
    };
    let server = ProbeServer::start(config).await;
    let mut client = ProbeClient::new(server.channel().await);
    let mut busy = client.clone();
    let occupying = tokio::spawn(async move { busy.unary(ok(800)).await });
    common::wait_until("the first call is in the handler", || {
        server.service.calls() == 1
    })
    .await;

    let started = Instant::now();
    let shed = client.unary(ok(0)).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
    occupying
        .await
        .unwrap()
        .expect("the admitted call completes");
    client.unary(ok(0)).await.expect("capacity is back");
    server.stop().await;
}
