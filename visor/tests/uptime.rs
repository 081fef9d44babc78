//! The live uptime probe (issue 15 item 4, seed 3160): with every dmsg server gone, the dmsg
//! tier drops within one sample while a route group over stcp stays up — the two tiers are
//! sampled now, each time, and reported side by side (also through the control API).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::port;
use skywire_proto::skywire::visor::v1 as pb;
use skywire_proto::skywire::visor::v1::visor_control_client::VisorControlClient;
use skywire_proto::skywire::visor::v1::visor_control_server::VisorControlServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use visor::uptime::Uptime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dmsg_tier_drops_within_one_sample_while_stcp_routes_stay_up() {
    let relay = common::Relay::start().await;
    let net = common::nodes_on(2, &relay).await;
    let (a, b) = (&net[0].visor, &net[1].visor);
    let mut listener = b.listen(port(80)).unwrap();
    // Over stcp (B is in A's pk_table): the route tier does not need the relay.
    let mut dialed = a.dial_direct(b.public_key(), port(80), None).await.unwrap();
    let mut accepted = listener.accept().await.unwrap();
    assert_eq!(
        a.transports()[0].kind,
        visor::transport::TransportKind::Stcp
    );

    let every = Duration::from_millis(200);
    let uptime = Uptime::new(every);
    let stop = CancellationToken::new();
    let probe = tokio::spawn(uptime.clone().run(a.clone_internal(), stop.clone()));
    common::wait_until("both tiers up", || {
        uptime
            .report()
            .last
            .is_some_and(|s| s.dmsg && s.routes == Some(true))
    })
    .await;

    // Every dmsg server goes away.
    relay.stop().await;
    let gone = tokio::time::Instant::now();
    common::wait_until("the dmsg tier drops", || {
        uptime.report().last.is_some_and(|s| !s.dmsg)
    })
    .await;
    assert!(
        gone.elapsed() <= every * 2 + Duration::from_millis(300),
        "the dmsg tier dropped after {:?}: more than one sample",
        gone.elapsed()
    );
    let report = uptime.report();
    assert_eq!(report.last.unwrap().routes, Some(true), "routes stay up");
    assert!(report.dmsg_hour.up < report.dmsg_hour.counted);
    assert_eq!(report.routes_hour.up, report.routes_hour.counted);
    // …and the route group really works.
    dialed.write_all(b"still here").await.unwrap();
    let mut got = [0u8; 10];
    accepted.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"still here");

    // The control API says the same.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(VisorControlServer::new(
                visor::control::ControlService::new(a.clone(), net[0].addr, {
                    let mut parts = visor::control::ControlParts::new(a, every).unwrap();
                    parts.uptime = uptime.clone();
                    parts
                }),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(tcp)),
    );
    let mut control = VisorControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let answer = control
        .uptime(pb::UptimeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        !answer.dmsg_up && answer.routes_up && answer.routes_sampled,
        "{answer:?}"
    );
    assert_eq!(answer.every_ms, 200);
    let routes = answer.routes_hour.unwrap();
    assert_eq!((routes.up, routes.ratio), (routes.counted, 1.0));
    assert!(answer.dmsg_hour.unwrap().ratio < 1.0);
    server.abort();
    stop.cancel();
    probe.await.unwrap();
}
