//! Route groups through visors in one process over real loopback TCP (ROUTING.md §6).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{link, nodes, pattern, port, route_group};
use dmsg::noise::PqStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// Writes `total` bytes of pattern `seed` and shuts the write side down.
async fn send(mut writer: impl tokio::io::AsyncWrite + Unpin, seed: u8, total: usize) {
    let mut offset = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    while offset < total {
        let n = chunk.len().min(total - offset);
        for (i, byte) in chunk[..n].iter_mut().enumerate() {
            *byte = pattern(seed, offset + i);
        }
        writer.write_all(&chunk[..n]).await.unwrap();
        offset += n;
    }
    writer.shutdown().await.unwrap();
}

/// Reads to EOF, checking every byte against pattern `seed`; returns the count.
async fn receive(mut reader: impl tokio::io::AsyncRead + Unpin, seed: u8) -> usize {
    let mut offset = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).await.unwrap();
        if n == 0 {
            return offset;
        }
        for (i, byte) in buf[..n].iter().enumerate() {
            assert_eq!(*byte, pattern(seed, offset + i), "byte {}", offset + i);
        }
        offset += n;
    }
}

/// ROUTING.md §6 (Done-when a, over stcp): A–B–C, rules installed through the library; a
/// route group A→C moves 64 MiB each way at once, every byte checked, then EOF both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_group_over_two_hops_moves_64_mib_each_way() {
    let net = nodes(3).await;
    let ab = link(&net[0], &net[1]).await;
    let bc = link(&net[1], &net[2]).await;
    let (dialed, accepted) =
        route_group(&[&net[0], &net[1], &net[2]], &[ab, bc], port(1), port(80)).await;
    assert_eq!(dialed.pq(), PqStatus::Hybrid);
    assert_eq!(accepted.addr().remote, net[0].visor.public_key());

    let total = 64 * MIB;
    let (a_read, a_write) = tokio::io::split(dialed);
    let (c_read, c_write) = tokio::io::split(accepted);
    let moved = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(
            send(a_write, 1, total),
            send(c_write, 2, total),
            receive(c_read, 1),
            receive(a_read, 2),
        )
    })
    .await
    .expect("64 MiB each way within 120 s");
    assert_eq!((moved.2, moved.3), (total, total));
    let b = net[1].visor.stats();
    assert_eq!(b.drops.iter().map(|(_, n)| n).sum::<u64>(), 0, "{b:?}");
    for node in &net {
        node.visor.shutdown().await;
    }
}
