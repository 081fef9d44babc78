//! One conformance suite for both stores: the memory store, and the Redis store against a
//! real `redis-server` started on a free port. Plus the race of two replicas on one Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Redis;
use discovery_svc::store::cache::CacheConfig;
use discovery_svc::store::memory::MemoryStore;
use discovery_svc::store::redis::RedisStore;
use discovery_svc::store::{Deleted, Store, Written};
use dmsg::entry::{Entry, Rejected, ServerPart, TransportEntry};
use dmsg::identity::Keypair;

const LONG: Duration = Duration::from_secs(60);

fn server_entry(keypair: &Keypair, sequence: u64, sessions: i64) -> Entry {
    Entry::server(
        keypair.public(),
        sequence,
        ServerPart {
            address: format!("127.0.0.1:{}", 8000 + sequence),
            available_sessions: sessions,
            server_type: "community".into(),
            max_sessions: 2048,
        },
    )
    .signed(keypair)
}

/// The behaviour every store must have.
async fn conformance(store: Arc<dyn Store>) {
    let kind = store.kind();
    store.health().await.unwrap();

    // Create, read, update; stale and backwards updates refused with what is stored.
    let alice = Keypair::generate();
    assert_eq!(store.get(&alice.public()).await.unwrap(), None, "{kind}");
    let first = Entry::client(alice.public(), 1, vec![]).signed(&alice);
    assert_eq!(
        store.put(&first, LONG).await.unwrap(),
        Ok(Written::Created),
        "{kind}"
    );
    assert_eq!(
        store.get(&alice.public()).await.unwrap(),
        Some(first.clone()),
        "{kind}"
    );
    let replay = Entry { ..first.clone() };
    assert_eq!(
        store.put(&replay, LONG).await.unwrap(),
        Err(Rejected::StaleSequence {
            sequence: 1,
            stored_sequence: 1,
            stored_timestamp: first.timestamp
        }),
        "{kind}"
    );
    let backwards = Entry {
        sequence: 2,
        timestamp: first.timestamp - 1,
        ..first.clone()
    }
    .signed(&alice);
    assert!(matches!(
        store.put(&backwards, LONG).await.unwrap(),
        Err(Rejected::TimestampBackwards {
            stored_sequence: 1,
            ..
        })
    ));
    let second = Entry {
        sequence: 2,
        timestamp: first.timestamp + 1,
        ..first.clone()
    }
    .signed(&alice);
    assert_eq!(
        store.put(&second, LONG).await.unwrap(),
        Ok(Written::Updated),
        "{kind}"
    );
    assert_eq!(
        store.get(&alice.public()).await.unwrap(),
        Some(second.clone())
    );

    // Servers are listed; clients page without duplicates or losses.
    let servers: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    for (i, server) in servers.iter().enumerate() {
        store
            .put(&server_entry(server, 1, i as i64), LONG)
            .await
            .unwrap()
            .unwrap();
    }
    let listed = store.servers().await.unwrap();
    assert_eq!(listed.len(), 3, "{kind}");
    assert!(
        listed
            .iter()
            .all(|e| e.server.is_some() && e.signature_valid())
    );
    let clients: Vec<Keypair> = (0..24).map(|_| Keypair::generate()).collect();
    for client in &clients {
        store
            .put(
                &Entry::client(client.public(), 1, vec![]).signed(client),
                LONG,
            )
            .await
            .unwrap()
            .unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    for _ in 0..100 {
        let page = store.clients(&token, 10).await.unwrap();
        for pk in page.clients {
            assert!(seen.insert(pk), "{kind}: duplicate {pk}");
        }
        if page.next.is_empty() {
            break;
        }
        token = page.next;
    }
    assert_eq!(seen.len(), 25, "{kind}: 24 clients and alice");
    // A page token this store never issued is the caller's mistake, refused as such — the
    // security review's overflowing cursor made the Redis script fail, which counted as a
    // store fault.
    for token in ["99999999999999999999999", "zz", "-1", "1e3"] {
        assert!(
            matches!(
                store.clients(token, 10).await,
                Err(discovery_svc::store::StoreError::BadRequest { .. })
            ),
            "{kind}: {token}"
        );
    }

    // Deletes: only if not newer than the stored entry.
    assert_eq!(
        store
            .delete(&alice.public(), second.timestamp - 5, LONG)
            .await
            .unwrap(),
        Deleted::Newer {
            stored_timestamp: second.timestamp
        }
    );
    assert_eq!(
        store
            .delete(&alice.public(), second.timestamp, LONG)
            .await
            .unwrap(),
        Deleted::Deleted
    );
    assert_eq!(
        store
            .delete(&alice.public(), second.timestamp, LONG)
            .await
            .unwrap(),
        Deleted::NotFound
    );
    assert_eq!(store.get(&alice.public()).await.unwrap(), None);
    assert!(
        !store
            .servers()
            .await
            .unwrap()
            .iter()
            .any(|e| e.owner == alice.public()),
        "{kind}: a tombstone is never listed"
    );

    // The delete left a tombstone (PROTOCOL.md §14.2): replaying the deleted entry, or any
    // older one, is refused as stale with the deleted sequence (the security review's
    // finding 4: a deleted entry came back); a newer entry replaces the tombstone.
    for replayed in [&first, &second] {
        assert_eq!(
            store.put(replayed, LONG).await.unwrap(),
            Err(Rejected::StaleSequence {
                sequence: replayed.sequence,
                stored_sequence: second.sequence,
                stored_timestamp: second.timestamp
            }),
            "{kind}"
        );
        assert_eq!(store.get(&alice.public()).await.unwrap(), None, "{kind}");
    }
    let reborn = Entry::client(alice.public(), second.sequence + 1, vec![]).signed(&alice);
    assert_eq!(
        store.put(&reborn, LONG).await.unwrap(),
        Ok(Written::Created),
        "{kind}: an entry after a tombstone is a new entry"
    );
    assert_eq!(
        store.get(&alice.public()).await.unwrap(),
        Some(reborn.clone())
    );
    // A tombstone lasts its TTL, then the key is free.
    assert_eq!(
        store
            .delete(
                &alice.public(),
                reborn.timestamp,
                Duration::from_millis(150)
            )
            .await
            .unwrap(),
        Deleted::Deleted
    );
    assert!(store.put(&second, LONG).await.unwrap().is_err(), "{kind}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.put(&second, LONG).await.unwrap(),
        Ok(Written::Created),
        "{kind}: the tombstone expired"
    );
    store
        .delete(&alice.public(), second.timestamp, LONG)
        .await
        .unwrap();

    // Expiry: an expired entry is never returned or listed.
    let brief = Keypair::generate();
    store
        .put(&server_entry(&brief, 1, 5), Duration::from_millis(150))
        .await
        .unwrap()
        .unwrap();
    assert!(store.get(&brief.public()).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.get(&brief.public()).await.unwrap(),
        None,
        "{kind}: expired"
    );
    assert_eq!(
        store.servers().await.unwrap().len(),
        3,
        "{kind}: expired servers are not listed"
    );
    let expired_again = server_entry(&brief, 1, 5);
    assert_eq!(
        store.put(&expired_again, LONG).await.unwrap(),
        Ok(Written::Created),
        "{kind}: expired means gone"
    );

    // Transports: by id and by edge; an older registration never replaces a newer one.
    let (a, b, c) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    let mut ab = TransportEntry::new(a.public(), b.public(), "dmsg");
    ab.sign_as(&a);
    ab.sign_as(&b);
    let mut ac = TransportEntry::new(a.public(), c.public(), "stcp");
    ac.sign_as(&a);
    ac.sign_as(&c);
    assert_eq!(store.put_transport(&ab, LONG).await.unwrap(), Ok(()));
    assert_eq!(store.put_transport(&ac, LONG).await.unwrap(), Ok(()));
    assert_eq!(store.transport(&ab.id).await.unwrap(), Some(ab.clone()));
    assert_eq!(
        store.transports_by_edge(&a.public()).await.unwrap().len(),
        2
    );
    assert_eq!(
        store.transports_by_edge(&b.public()).await.unwrap(),
        vec![ab.clone()]
    );
    let older = TransportEntry {
        timestamp: ab.timestamp - 1,
        ..ab.clone()
    };
    assert_eq!(
        store.put_transport(&older, LONG).await.unwrap(),
        Err(Rejected::StaleRegistration {
            timestamp: older.timestamp,
            stored_timestamp: ab.timestamp
        }),
        "{kind}"
    );
    // A deregistration older than the registration is refused; one at least as new removes
    // it and leaves a tombstone of its timestamp.
    assert_eq!(
        store
            .delete_transport(&ab.id, ab.timestamp - 1, LONG)
            .await
            .unwrap(),
        Deleted::Newer {
            stored_timestamp: ab.timestamp
        },
        "{kind}"
    );
    let deregistered_at = ab.timestamp + 10;
    assert_eq!(
        store
            .delete_transport(&ab.id, deregistered_at, LONG)
            .await
            .unwrap(),
        Deleted::Deleted
    );
    assert_eq!(
        store
            .delete_transport(&ab.id, deregistered_at, LONG)
            .await
            .unwrap(),
        Deleted::NotFound
    );
    assert_eq!(store.transport(&ab.id).await.unwrap(), None);
    // The tombstone refuses a replayed registration (even one signed after the original but
    // not after the deregistration); a newer one comes back, and then replaying the old
    // deregistration is refused (the security review's finding 3).
    for replayed in [
        ab.clone(),
        TransportEntry {
            timestamp: deregistered_at,
            ..ab.clone()
        },
    ] {
        assert_eq!(
            store.put_transport(&replayed, LONG).await.unwrap(),
            Err(Rejected::StaleRegistration {
                timestamp: replayed.timestamp,
                stored_timestamp: deregistered_at
            }),
            "{kind}"
        );
    }
    assert_eq!(store.transport(&ab.id).await.unwrap(), None, "{kind}");
    assert_eq!(store.transports_by_edge(&b.public()).await.unwrap(), vec![]);
    let again = TransportEntry {
        timestamp: deregistered_at + 1,
        ..ab.clone()
    };
    assert_eq!(store.put_transport(&again, LONG).await.unwrap(), Ok(()));
    assert_eq!(store.transport(&ab.id).await.unwrap(), Some(again.clone()));
    assert_eq!(
        store
            .delete_transport(&ab.id, deregistered_at, LONG)
            .await
            .unwrap(),
        Deleted::Newer {
            stored_timestamp: again.timestamp
        },
        "{kind}: the replayed deregistration leaves the new registration"
    );
    assert_eq!(store.transport(&ab.id).await.unwrap(), Some(again.clone()));
    store
        .delete_transport(&ab.id, again.timestamp, LONG)
        .await
        .unwrap();
    assert_eq!(store.transports_by_edge(&b.public()).await.unwrap(), vec![]);
    assert_eq!(
        store.transports_by_edge(&a.public()).await.unwrap(),
        vec![ac]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_conforms() {
    conformance(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_conforms() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    conformance(Arc::new(
        RedisStore::new(&redis.url(), "test:", CacheConfig::default()).unwrap(),
    ))
    .await;
}

/// Two discovery replicas on one Redis, many writers racing each sequence of one owner:
/// exactly one write wins each sequence, and the stored entry is the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_redis_accept_each_sequence_once() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let replicas: Vec<Arc<RedisStore>> = (0..2)
        .map(|_| Arc::new(RedisStore::new(&redis.url(), "race:", CacheConfig::default()).unwrap()))
        .collect();
    let owner = Keypair::generate();
    const WRITERS: usize = 16;
    for sequence in 1..=30u64 {
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..WRITERS {
            let store = replicas[writer % 2].clone();
            let owner = owner.clone();
            let barrier = barrier.clone();
            writers.spawn(async move {
                let entry = server_entry(&owner, sequence, writer as i64);
                barrier.wait().await;
                (writer, store.put(&entry, LONG).await.unwrap())
            });
        }
        let mut winners = Vec::new();
        while let Some(joined) = writers.join_next().await {
            let (writer, result) = joined.unwrap();
            match result {
                Ok(_) => winners.push(writer),
                Err(Rejected::StaleSequence {
                    stored_sequence, ..
                }) => assert_eq!(stored_sequence, sequence),
                Err(other) => panic!("unexpected refusal {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "sequence {sequence}: winners {winners:?}");
        let stored = replicas[1].get(&owner.public()).await.unwrap().unwrap();
        assert_eq!(stored.sequence, sequence);
        assert_eq!(
            stored.server.unwrap().available_sessions,
            winners[0] as i64,
            "the winner's entry is stored"
        );
    }
}
