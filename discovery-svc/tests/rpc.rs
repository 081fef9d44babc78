//! The Discovery and TransportRegistry services over real gRPC on 127.0.0.1: bad input is
//! refused with its code and leaves the store unchanged; the typed client's publish loop
//! resyncs; a killed Redis fails fast and recovers without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Discovery, Redis, redis_store};
use discovery_svc::run::StoreConfig;
use dmsg::discovery::{Discovery as _, DiscoveryError, Published};
use dmsg::entry::{Entry, ServerPart, TransportEntry, delete_request, pk_to_proto, unix_nanos_now};
use dmsg::identity::Keypair;
use skywire_proto::skywire::discovery::v1 as pb;
use skywire_proto::skywire::discovery::v1::transport_registry_client::TransportRegistryClient;
use tonic::Code;

fn server_entry(keypair: &Keypair, sequence: u64) -> Entry {
    Entry::server(
        keypair.public(),
        sequence,
        ServerPart {
            address: "127.0.0.1:8080".into(),
            available_sessions: 10,
            server_type: "community".into(),
            max_sessions: 2048,
        },
    )
    .signed(keypair)
}

async fn put(
    discovery: &Discovery,
    entry: pb::Entry,
) -> Result<pb::PutEntryResponse, tonic::Status> {
    discovery
        .raw()
        .await
        .put_entry(pb::PutEntryRequest { entry: Some(entry) })
        .await
        .map(tonic::Response::into_inner)
}

/// Each bad input gets its code, and afterwards the store holds exactly what it held before.
async fn bad_input_is_refused(store: StoreConfig) {
    let discovery = Discovery::start(store).await;
    let owner = Keypair::generate();
    let stored = server_entry(&owner, 5);
    assert!(put(&discovery, stored.to_proto()).await.unwrap().created);
    let unchanged = || async { discovery.client.entry(&owner.public()).await.unwrap() };

    // Forged signature.
    let mut forged = server_entry(&owner, 6).to_proto();
    forged.signature[10] ^= 0x80;
    assert_eq!(
        put(&discovery, forged).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(unchanged().await, Some(stored.clone()));

    // Signed by someone else.
    let mallory = Keypair::generate();
    let mut impostor = server_entry(&owner, 6);
    impostor.sign(&mallory);
    assert_eq!(
        put(&discovery, impostor.to_proto())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(unchanged().await, Some(stored.clone()));

    // Replayed sequence: FAILED_PRECONDITION with the stored sequence in the details.
    let replay = server_entry(&owner, 5);
    let status = put(&discovery, replay.to_proto()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = skywire_proto::status::error_info(&status).unwrap();
    assert_eq!(info.reason, dmsg::reason::STALE_SEQUENCE);
    assert_eq!(info.domain, dmsg::reason::ERROR_DOMAIN);
    assert_eq!(info.metadata["stored_sequence"], "5");
    assert_eq!(unchanged().await, Some(stored.clone()));

    // Stale timestamp: a server entry from two minutes ago.
    let stale = Entry {
        sequence: 6,
        timestamp: unix_nanos_now() - 120_000_000_000,
        ..stored.clone()
    }
    .signed(&owner);
    let status = put(&discovery, stale.to_proto()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("clock"), "{status:?}");
    assert_eq!(unchanged().await, Some(stored.clone()));

    // Timestamp going backwards on a higher sequence.
    let backwards = Entry {
        sequence: 7,
        timestamp: stored.timestamp - 1,
        ..stored.clone()
    }
    .signed(&owner);
    assert_eq!(
        put(&discovery, backwards.to_proto())
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(unchanged().await, Some(stored.clone()));

    // Oversized: over the 8 KiB entry limit, and far over the 16 KiB request limit.
    let big = Entry::client(owner.public(), 8, vec![mallory.public(); 130]).signed(&owner);
    let status = put(&discovery, big.to_proto()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut huge = server_entry(&owner, 9).to_proto();
    huge.version = "x".repeat(20_000);
    let status = put(&discovery, huge).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{status:?}"
    );
    assert_eq!(unchanged().await, Some(stored.clone()));

    // Malformed: a short key.
    let mut short = server_entry(&owner, 10).to_proto();
    short.owner = "010203".into();
    let status = put(&discovery, short).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("Entry.owner: expected 64 hex characters, got 6 characters"),
        "{status:?}"
    );

    // Delete by a non-owner.
    let mut not_owner = delete_request(&mallory);
    not_owner.pk = pk_to_proto(&owner.public());
    let status = discovery
        .raw()
        .await
        .delete_entry(not_owner)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(unchanged().await, Some(stored.clone()));

    // Unknown key.
    let nobody = Keypair::generate();
    let status = discovery
        .raw()
        .await
        .get_entry(pb::GetEntryRequest {
            pk: pk_to_proto(&nobody.public()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = discovery
        .raw()
        .await
        .delete_entry(delete_request(&nobody))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // And the owner's own delete works.
    discovery.client.delete_entry(&owner).await.unwrap();
    assert_eq!(discovery.client.entry(&owner.public()).await.unwrap(), None);
    discovery.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_leaves_the_memory_store_unchanged() {
    bad_input_is_refused(StoreConfig::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_leaves_the_redis_store_unchanged() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    bad_input_is_refused(redis_store(&redis, "bad:")).await;
}

/// The publish loop: a stale sequence is resynced to stored + 1; a stored entry newer by
/// timestamp is adopted instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_resyncs_a_stale_sequence_and_adopts_a_newer_entry() {
    let discovery = Discovery::start(StoreConfig::Memory).await;
    let owner = Keypair::generate();
    discovery
        .client
        .put_entry(&Entry::client(owner.public(), 10, vec![]).signed(&owner))
        .await
        .unwrap();

    // A restarted client that forgot its sequence starts at 0 again.
    let fresh = Entry::client(owner.public(), 0, vec![Keypair::generate().public()]);
    let published = discovery
        .client
        .publish(&owner, fresh.clone())
        .await
        .unwrap();
    let Published::Stored { entry, created } = published else {
        panic!("{published:?}")
    };
    assert!(!created);
    assert_eq!(entry.sequence, 11);
    assert_eq!(
        discovery.client.entry(&owner.public()).await.unwrap(),
        Some(*entry.clone())
    );

    // An older update (by timestamp) meets a newer stored entry: adopt, store nothing.
    let outdated = Entry {
        sequence: 0,
        timestamp: entry.timestamp - 1_000,
        ..fresh
    };
    let published = discovery.client.publish(&owner, outdated).await.unwrap();
    assert_eq!(
        published,
        Published::Superseded {
            stored_sequence: 11
        }
    );
    assert_eq!(
        discovery.client.entry(&owner.public()).await.unwrap(),
        Some(*entry)
    );
    discovery.stop().await;
}

/// The transport registry: both edges must sign; only an edge may deregister.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_are_registered_by_both_edges_and_removed_by_one() {
    let discovery = Discovery::start(StoreConfig::Memory).await;
    let mut registry = TransportRegistryClient::connect(format!("http://{}", discovery.addr))
        .await
        .unwrap();
    let (a, b) = (Keypair::generate(), Keypair::generate());
    let mut transport = TransportEntry::new(a.public(), b.public(), "dmsg");
    transport.sign_as(&a);
    let half = registry
        .register_transport(pb::RegisterTransportRequest {
            entry: Some(transport.to_proto()),
        })
        .await
        .unwrap_err();
    assert_eq!(
        half.code(),
        Code::Unauthenticated,
        "one signature is not enough"
    );
    transport.sign_as(&b);
    registry
        .register_transport(pb::RegisterTransportRequest {
            entry: Some(transport.to_proto()),
        })
        .await
        .unwrap();
    let listed = registry
        .transports_by_edge(pb::TransportsByEdgeRequest {
            edge: pk_to_proto(&b.public()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries, vec![transport.to_proto()]);

    let deregister = |who: &Keypair| common::deregistration(&transport, who);
    let stranger = Keypair::generate();
    let status = registry
        .deregister_transport(deregister(&stranger))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    registry.deregister_transport(deregister(&a)).await.unwrap();
    let status = registry
        .get_transport(pb::GetTransportRequest {
            id: dmsg::entry::id_to_proto(&transport.id),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    discovery.stop().await;
}

/// Redis dies mid-run: calls fail with UNAVAILABLE within a second (no hang), the store's
/// breaker opens; Redis comes back: calls succeed again, with no discovery restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_fails_fast_and_recovers_without_a_restart() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let port = redis.port;
    let discovery = Discovery::start(redis_store(&redis, "kill:")).await;
    let owner = Keypair::generate();
    let mut raw = discovery.raw().await;
    let entry = Entry::client(owner.public(), 1, vec![]).signed(&owner);
    raw.put_entry(pb::PutEntryRequest {
        entry: Some(entry.to_proto()),
    })
    .await
    .unwrap();

    redis.kill();
    let get = pb::GetEntryRequest {
        pk: pk_to_proto(&owner.public()),
    };
    let mut saw_breaker = false;
    for _ in 0..6 {
        let started = tokio::time::Instant::now();
        let status = raw.get_entry(get.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        saw_breaker |= status.message().contains("store:redis");
    }
    assert!(saw_breaker, "the store's breaker opened");
    let status = discovery.client.entry(&owner.public()).await.unwrap_err();
    assert!(
        matches!(status, DiscoveryError::Unavailable(_)),
        "{status:?}"
    );

    let _redis = Redis::start_on(port).await.unwrap();
    let recovered = async {
        loop {
            let entry = Entry::client(owner.public(), 2, vec![]).signed(&owner);
            if raw
                .put_entry(pb::PutEntryRequest {
                    entry: Some(entry.to_proto()),
                })
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), recovered)
        .await
        .expect("calls succeed again");
    assert_eq!(
        discovery
            .client
            .entry(&owner.public())
            .await
            .unwrap()
            .unwrap()
            .sequence,
        2
    );
    discovery.stop().await;
}

/// Sustained abuse (issue: bad page tokens opened the store breaker): a page token this
/// server never issued, 10 times a second for 10 s, is refused INVALID_ARGUMENT naming the
/// mistake, while an honest `GetEntry` every 50 ms succeeds every time and health stays
/// SERVING (the breaker never opens).
async fn bad_page_tokens_never_trip_the_store_breaker(store: StoreConfig) {
    use skywire_proto::skywire::discovery::v1::discovery_client::DiscoveryClient as Raw;

    let discovery = Discovery::start(store).await;
    let owner = Keypair::generate();
    let stored = server_entry(&owner, 1);
    assert!(put(&discovery, stored.to_proto()).await.unwrap().created);
    let mut raw = Raw::connect(format!("http://{}", discovery.addr))
        .await
        .unwrap();
    let abuse = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..100 {
            ticks.tick().await;
            let refused = raw
                .list_clients(pb::ListClientsRequest {
                    page_token: "99999999999999999999999".into(),
                    page_size: 10,
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
            assert!(
                refused.message().contains("not one this server issued"),
                "{refused:?}"
            );
        }
    });
    let mut honest = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    let channel = testkit::grpc::connect(discovery.addr).await;
    while !abuse.is_finished() {
        ticks.tick().await;
        let entry = discovery.client.entry(&owner.public()).await;
        assert_eq!(entry.unwrap(), Some(stored.clone()), "honest call {honest}");
        // Health turns NOT_SERVING the moment the store's breaker opens: it never does.
        assert_eq!(
            testkit::grpc::health(channel.clone(), "").await.unwrap(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "after honest call {honest}"
        );
        honest += 1;
    }
    abuse.await.unwrap();
    assert!(honest >= 150, "{honest} honest calls in 10 s");
    discovery.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_page_tokens_never_trip_the_memory_store_breaker() {
    bad_page_tokens_never_trip_the_store_breaker(StoreConfig::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_page_tokens_never_trip_the_redis_store_breaker() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    bad_page_tokens_never_trip_the_store_breaker(redis_store(&redis, "abuse:")).await;
}
