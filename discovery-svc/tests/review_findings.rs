//! The security review of discovery (issue 12), one test per finding, each with the review's
//! own input, run on the memory store and on a real Redis started by the test. Each asserts
//! the status code, the `google.rpc.ErrorInfo` reason, and that the store is unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Discovery, Redis, deregistration, redis_store};
use discovery_svc::run::StoreConfig;
use dmsg::discovery::Discovery as _;
use dmsg::entry::{
    Entry, TransportEntry, delete_request, id_to_proto, pk_to_proto, unix_nanos_now,
};
use dmsg::identity::{Keypair, SMALL_ORDER_KEYS};
use dmsg::reason;
use prost::Message;
use skywire_proto::skywire::discovery::v1 as pb;
use skywire_proto::skywire::discovery::v1::transport_registry_client::TransportRegistryClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// The memory store, then a Redis of this test's own (prefix `prefix`).
async fn each_store(prefix: &str) -> (Vec<StoreConfig>, Option<Redis>) {
    let redis = Redis::start().await;
    let mut stores = vec![StoreConfig::Memory];
    if let Some(redis) = &redis {
        stores.push(redis_store(redis, prefix));
    }
    (stores, redis)
}

/// A test that runs `$finding` on the memory store, then on a Redis of its own.
macro_rules! on_both_stores {
    ($test:ident, $finding:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let (stores, _redis) = each_store(concat!(stringify!($finding), ":")).await;
            for store in stores {
                $finding(store).await;
            }
        }
    };
}

/// The status's code and its discovery `ErrorInfo` reason (domain `dmsg-discovery`).
fn refusal(status: &tonic::Status) -> (Code, String) {
    (
        status.code(),
        reason::reason_of(status).unwrap_or_else(|| panic!("no discovery ErrorInfo: {status:?}")),
    )
}

async fn put(discovery: &Discovery, entry: pb::Entry) -> Result<bool, tonic::Status> {
    discovery
        .raw()
        .await
        .put_entry(pb::PutEntryRequest { entry: Some(entry) })
        .await
        .map(|response| response.into_inner().created)
}

async fn get(discovery: &Discovery, owner: &Keypair) -> Result<pb::Entry, tonic::Status> {
    discovery
        .raw()
        .await
        .get_entry(pb::GetEntryRequest {
            pk: pk_to_proto(&owner.public()),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn clients(discovery: &Discovery) -> Vec<String> {
    discovery
        .raw()
        .await
        .list_clients(pb::ListClientsRequest {
            page_token: String::new(),
            page_size: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .clients
}

async fn registry(discovery: &Discovery) -> TransportRegistryClient<tonic::transport::Channel> {
    TransportRegistryClient::connect(format!("http://{}", discovery.addr))
        .await
        .unwrap()
}

fn signed_transport(a: &Keypair, b: &Keypair, kind: &str) -> TransportEntry {
    let mut transport = TransportEntry::new(a.public(), b.public(), kind);
    transport.sign_as(a);
    transport.sign_as(b);
    transport
}

async fn stored_transport(
    discovery: &Discovery,
    transport: &TransportEntry,
) -> Result<pb::TransportEntry, tonic::Status> {
    registry(discovery)
        .await
        .get_transport(pb::GetTransportRequest {
            id: id_to_proto(&transport.id),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn health(discovery: &Discovery) -> ServingStatus {
    testkit::grpc::health(testkit::grpc::connect(discovery.addr).await, "")
        .await
        .unwrap()
}

/// Finding 1: a page token Redis cannot parse made its script fail, which counted as a store
/// failure — three opened the breaker for everyone, while health said SERVING. Now: the
/// caller's mistake (INVALID_ARGUMENT `bad_page_token`, no store internals), never a store
/// failure, and health and `Status` stay true.
async fn finding_1(store: StoreConfig) {
    let discovery = Discovery::start(store).await;
    let owner = Keypair::generate();
    let entry = Entry::client(owner.public(), 1, vec![]).signed(&owner);
    put(&discovery, entry.to_proto()).await.unwrap();
    let before = clients(&discovery).await;
    for _ in 0..20 {
        let status = discovery
            .raw()
            .await
            .list_clients(pb::ListClientsRequest {
                page_token: "99999999999999999999999".into(),
                page_size: 10,
            })
            .await
            .unwrap_err();
        assert_eq!(
            refusal(&status),
            (Code::InvalidArgument, reason::BAD_PAGE_TOKEN.to_owned())
        );
        let message = status.message().to_lowercase();
        assert!(message.contains("not one this server issued"), "{status:?}");
        for internal in ["lua", "script", "cursor", "corrupt", "retry"] {
            assert!(!message.contains(internal), "{internal:?} in {status:?}");
        }
    }
    assert_eq!(get(&discovery, &owner).await.unwrap(), entry.to_proto());
    assert_eq!(clients(&discovery).await, before, "the store is unchanged");
    assert_eq!(health(&discovery).await, ServingStatus::Serving);
    let status = discovery
        .raw()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.store_healthy, "{status:?}");
    discovery.stop().await;
}

on_both_stores!(
    finding_1_a_bad_page_token_is_the_callers_mistake_not_a_store_outage,
    finding_1
);

/// Finding 2: owner `01 00…00` (the identity point) with signature `01 00…00 ‖ 0³²` was
/// accepted, and a delete forged the same way deleted it. Now every small-order key is
/// refused where it is read: entry owners, delegated servers, deletes, transport edges.
async fn finding_2(store: StoreConfig) {
    let discovery = Discovery::start(store).await;
    let honest = Keypair::generate();
    put(
        &discovery,
        Entry::client(honest.public(), 1, vec![])
            .signed(&honest)
            .to_proto(),
    )
    .await
    .unwrap();
    let before = clients(&discovery).await;
    let forged_signature = {
        let mut signature = hex::decode(SMALL_ORDER_KEYS[0]).unwrap();
        signature.extend([0u8; 32]);
        signature
    };
    for weak in SMALL_ORDER_KEYS {
        let forged = pb::Entry {
            owner: weak.to_owned(),
            sequence: 1,
            timestamp_unix_nanos: unix_nanos_now(),
            client: Some(pb::ClientPart::default()),
            signature: forged_signature.clone(),
            ..Default::default()
        };
        let status = put(&discovery, forged).await.unwrap_err();
        assert_eq!(
            refusal(&status),
            (Code::InvalidArgument, reason::MALFORMED.to_owned()),
            "owner {weak}"
        );
        assert!(status.message().contains("small-order"), "{status:?}");

        let mut delegating = Entry::client(honest.public(), 2, vec![]).to_proto();
        delegating.client = Some(pb::ClientPart {
            delegated_servers: vec![weak.to_owned()],
        });
        let status = put(&discovery, delegating).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "delegated {weak}");

        let status = discovery
            .raw()
            .await
            .delete_entry(pb::DeleteEntryRequest {
                pk: weak.to_owned(),
                timestamp_unix_nanos: unix_nanos_now(),
                signature: forged_signature.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            refusal(&status),
            (Code::InvalidArgument, reason::INVALID_FIELD.to_owned()),
            "delete {weak}"
        );

        let mut transport = signed_transport(&honest, &Keypair::generate(), "dmsg").to_proto();
        transport.edge_b = weak.to_owned();
        let status = registry(&discovery)
            .await
            .register_transport(pb::RegisterTransportRequest {
                entry: Some(transport),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "edge {weak}");
    }
    assert_eq!(clients(&discovery).await, before, "the store is unchanged");
    assert_eq!(get(&discovery, &honest).await.unwrap().sequence, 1);
    discovery.stop().await;
}

on_both_stores!(
    finding_2_small_order_keys_are_refused_everywhere_a_key_is_read,
    finding_2
);

/// Finding 3: after B deregistered a transport and it was registered again (newer
/// timestamp), replaying B's old deregistration deleted the new registration. Now it is
/// refused (FAILED_PRECONDITION `stale_delete`), and a replayed old registration does not
/// resurrect a deregistered transport (`stale_registration`).
async fn finding_3(store: StoreConfig) {
    let discovery = Discovery::start(store).await;
    let mut registry = registry(&discovery).await;
    let (a, b) = (Keypair::generate(), Keypair::generate());
    let first = signed_transport(&a, &b, "dmsg");
    let register = |transport: &TransportEntry| pb::RegisterTransportRequest {
        entry: Some(transport.to_proto()),
    };
    registry.register_transport(register(&first)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let old_deregistration = deregistration(&first, &b);
    registry
        .deregister_transport(old_deregistration.clone())
        .await
        .unwrap();

    // The old registration, replayed: refused, nothing comes back.
    let status = registry
        .register_transport(register(&first))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (
            Code::FailedPrecondition,
            reason::STALE_REGISTRATION.to_owned()
        )
    );
    assert_eq!(
        stored_transport(&discovery, &first)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = signed_transport(&a, &b, "dmsg");
    registry
        .register_transport(register(&second))
        .await
        .unwrap();
    let status = registry
        .deregister_transport(old_deregistration)
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (Code::FailedPrecondition, reason::STALE_DELETE.to_owned())
    );
    assert_eq!(
        stored_transport(&discovery, &second).await.unwrap(),
        second.to_proto(),
        "the newer registration is unchanged"
    );
    discovery.stop().await;
}

on_both_stores!(
    finding_3_a_replayed_deregistration_never_deletes_a_newer_registration,
    finding_3
);

/// Finding 4: after the owner deleted its entry (sequence 2), a third party replaying the
/// owner's old sequence-1 entry brought it back for the client TTL. Now the delete leaves a
/// tombstone: the replay is FAILED_PRECONDITION `stale_sequence` with `stored_sequence` 2,
/// and the owner's next sequence is accepted.
async fn finding_4(store: StoreConfig) {
    let discovery = Discovery::start(store).await;
    let owner = Keypair::generate();
    let first = Entry::client(owner.public(), 1, vec![]).signed(&owner);
    put(&discovery, first.to_proto()).await.unwrap();
    let second = Entry::client(owner.public(), 2, vec![]).signed(&owner);
    put(&discovery, second.to_proto()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    discovery
        .raw()
        .await
        .delete_entry(delete_request(&owner))
        .await
        .unwrap();
    let before = clients(&discovery).await;

    for replayed in [&first, &second] {
        let status = put(&discovery, replayed.to_proto()).await.unwrap_err();
        assert_eq!(
            refusal(&status),
            (Code::FailedPrecondition, reason::STALE_SEQUENCE.to_owned())
        );
        let info = skywire_proto::status::error_info(&status).unwrap();
        assert_eq!(info.metadata[reason::STORED_SEQUENCE], "2");
        assert_eq!(
            get(&discovery, &owner).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    assert_eq!(clients(&discovery).await, before, "the store is unchanged");

    let third = Entry::client(owner.public(), 3, vec![]).signed(&owner);
    assert!(put(&discovery, third.to_proto()).await.unwrap(), "created");
    assert_eq!(get(&discovery, &owner).await.unwrap(), third.to_proto());
    discovery.stop().await;
}

on_both_stores!(
    finding_4_a_deleted_entry_never_comes_back_by_replay,
    finding_4
);

/// Protobuf field 99, length-delimited, holding `len` bytes: a field no discovery message has.
fn unknown_field(len: usize) -> Vec<u8> {
    let mut field = Vec::new();
    prost::encoding::encode_key(99, prost::encoding::WireType::LengthDelimited, &mut field);
    prost::encoding::encode_varint(len as u64, &mut field);
    field.resize(field.len() + len, b'x');
    field
}

/// A `PutEntryRequest` whose entry is `entry` followed by `padding` (field 1 holds the
/// entry's bytes exactly as given).
fn padded_put(entry: &pb::Entry, padding: &[u8]) -> bytes::Bytes {
    let mut entry_bytes = entry.encode_to_vec();
    entry_bytes.extend_from_slice(padding);
    let mut request = Vec::new();
    prost::encoding::bytes::encode(1, &entry_bytes, &mut request);
    request.into()
}

/// Finding 5: a signed entry padded with 6,000 bytes of an unknown field was accepted — the
/// size bound was measured after prost dropped them. Now requests holding unknown fields are
/// refused (INVALID_ARGUMENT `unknown_fields`, PROTOCOL.md §14.3), so what is bounded is what
/// arrived.
async fn finding_5(store: StoreConfig) {
    let discovery = Discovery::start(store).await;
    let owner = Keypair::generate();
    let entry = Entry::client(owner.public(), 1, vec![])
        .signed(&owner)
        .to_proto();
    let channel = testkit::grpc::connect(discovery.addr).await;
    const PUT: &str = "/skywire.discovery.v1.Discovery/PutEntry";
    for padding in [6_000, 1, 10_000] {
        let status = testkit::grpc::call_raw(
            channel.clone(),
            PUT,
            padded_put(&entry, &unknown_field(padding)),
        )
        .await
        .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{padding}: {status:?}"
        );
        let info = skywire_proto::status::error_info(&status).unwrap();
        assert_eq!(info.reason, skywire_proto::codec::REASON_UNKNOWN_FIELDS);
        assert_eq!(
            info.metadata["message"],
            "skywire.discovery.v1.PutEntryRequest"
        );
        assert!(
            status
                .message()
                .contains("fields this server does not know"),
            "{status:?}"
        );
        assert_eq!(
            get(&discovery, &owner).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    // The same entry unpadded, sent the same raw way, is stored: only the padding differed.
    let stored = testkit::grpc::call_raw(channel, PUT, padded_put(&entry, &[]))
        .await
        .unwrap();
    assert!(pb::PutEntryResponse::decode(stored).unwrap().created);
    assert_eq!(get(&discovery, &owner).await.unwrap(), entry);
    discovery.stop().await;
}

on_both_stores!(
    finding_5_a_request_padded_with_unknown_fields_is_refused,
    finding_5
);

/// Finding 6: the details were a bare private message that standard tooling misread. Now
/// `grpc-status-details-bin` is a `google.rpc.Status` (same code and message) holding a
/// `google.rpc.ErrorInfo`, and the Rust client resyncs from it.
async fn finding_6(store: StoreConfig) {
    let discovery = Discovery::start(store).await;
    let owner = Keypair::generate();
    let entry = Entry::client(owner.public(), 5, vec![]).signed(&owner);
    put(&discovery, entry.to_proto()).await.unwrap();
    let status = put(&discovery, entry.to_proto()).await.unwrap_err();

    let standard = tonic_types::pb::Status::decode(status.details()).unwrap();
    assert_eq!(standard.code, Code::FailedPrecondition as i32);
    assert_eq!(standard.message, status.message());
    assert_eq!(standard.details.len(), 1);
    assert_eq!(
        standard.details[0].type_url,
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    let info = tonic_types::pb::ErrorInfo::decode(standard.details[0].value.as_slice()).unwrap();
    assert_eq!(info.reason, reason::STALE_SEQUENCE);
    assert_eq!(info.domain, reason::ERROR_DOMAIN);
    assert_eq!(info.metadata[reason::STORED_SEQUENCE], "5");
    assert_eq!(
        info.metadata[reason::STORED_TIMESTAMP],
        entry.timestamp.to_string()
    );
    assert_eq!(get(&discovery, &owner).await.unwrap(), entry.to_proto());

    // The typed client reads the same details and resyncs past the stored sequence.
    let published = discovery
        .client
        .publish(&owner, Entry::client(owner.public(), 1, vec![]))
        .await
        .unwrap();
    assert_eq!(
        published,
        dmsg::discovery::Published::Stored {
            entry: Box::new(
                discovery
                    .client
                    .entry(&owner.public())
                    .await
                    .unwrap()
                    .unwrap()
            ),
            created: false,
        }
    );
    assert_eq!(get(&discovery, &owner).await.unwrap().sequence, 6);
    discovery.stop().await;
}

on_both_stores!(
    finding_6_errors_carry_the_standard_google_rpc_status,
    finding_6
);

/// Finding 7: a non-edge with a valid signature of its own was told "the signature does not
/// verify"; a transport type of 32 bytes (the spec's limit, not the proto comment's 16) must
/// be accepted. Now the non-edge is told it is not an edge (PERMISSION_DENIED `not_an_edge`).
async fn finding_7(store: StoreConfig) {
    let discovery = Discovery::start(store).await;
    let mut registry = registry(&discovery).await;
    let (a, b, stranger) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    let transport = signed_transport(&a, &b, &"t".repeat(32));
    registry
        .register_transport(pb::RegisterTransportRequest {
            entry: Some(transport.to_proto()),
        })
        .await
        .expect("a 32-byte type is within the limit");
    let status = registry
        .deregister_transport(deregistration(&transport, &stranger))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (Code::PermissionDenied, reason::NOT_AN_EDGE.to_owned())
    );
    assert!(
        status.message().contains(&format!(
            "{} is not an edge of transport {}",
            stranger.public(),
            id_to_proto(&transport.id)
        )),
        "{status:?}"
    );
    assert!(!status.message().contains("signature"), "{status:?}");
    assert_eq!(
        stored_transport(&discovery, &transport).await.unwrap(),
        transport.to_proto(),
        "the store is unchanged"
    );

    let too_long = signed_transport(&a, &b, &"t".repeat(33));
    let status = registry
        .register_transport(pb::RegisterTransportRequest {
            entry: Some(too_long.to_proto()),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (Code::InvalidArgument, reason::MALFORMED.to_owned())
    );
    let proto = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../proto/skywire/discovery/v1/discovery.proto"),
    )
    .unwrap();
    let lines: Vec<&str> = proto.lines().collect();
    let at = lines
        .iter()
        .position(|line| line.trim_start().starts_with("string type ="))
        .unwrap();
    assert!(
        lines[at - 1].contains("at most 32 bytes"),
        "the proto documents the limit the code applies: {}",
        lines[at - 1]
    );
    discovery.stop().await;
}

on_both_stores!(finding_7_messages_say_what_the_caller_did, finding_7);

/// Item 3's other half: while the store's breaker is open, health is NOT_SERVING and
/// `Status` says the store is unhealthy; both recover with the store, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_status_follow_the_store_breaker() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let port = redis.port;
    let discovery = Discovery::start(redis_store(&redis, "breaker:")).await;
    let channel = testkit::grpc::connect(discovery.addr).await;
    testkit::grpc::wait_health(
        channel.clone(),
        "",
        ServingStatus::Serving,
        Duration::from_secs(5),
    )
    .await;
    let owner = Keypair::generate();
    redis.kill();
    for _ in 0..3 {
        assert_eq!(
            get(&discovery, &owner).await.unwrap_err().code(),
            Code::Unavailable
        );
    }
    // The breaker is open now: health says so at once, not at the next 5 s check.
    testkit::grpc::wait_health(
        channel.clone(),
        "",
        ServingStatus::NotServing,
        Duration::from_millis(500),
    )
    .await;
    let status = discovery
        .raw()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.store_healthy, "{status:?}");
    assert!(!status.store_error.is_empty());

    let _redis = Redis::start_on(port).await.unwrap();
    testkit::grpc::wait_health(channel, "", ServingStatus::Serving, Duration::from_secs(5)).await;
    let status = discovery
        .raw()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.store_healthy, "{status:?}");
    discovery.stop().await;
}
