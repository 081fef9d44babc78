//! skysocks and skysocks-client in one process over real loopback TCP (issue 15 item 1):
//! two visors, the client reaching the exit directly; SOCKS5 spoken byte by byte, so every
//! RFC 1928 reply code is checked as a client reads it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Node, nodes, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use visor::apps::skysocks::Skysocks;
use visor::apps::skysocks_client::{ClientConfig, SkysocksClient};

/// An exit on B and a direct client on A; returns the SOCKS address.
async fn proxy(net: &[Node], greeting_timeout: Duration) -> (Skysocks, SkysocksClient, SocketAddr) {
    proxy_with(net, |config| config.greeting_timeout = greeting_timeout).await
}

/// [`proxy`] with the client's config changed by `change`.
async fn proxy_with(
    net: &[Node],
    change: impl FnOnce(&mut ClientConfig),
) -> (Skysocks, SkysocksClient, SocketAddr) {
    let exit = Skysocks::start(&net[1].visor).unwrap();
    let (client, socks) = client_with(net, change).await;
    (exit, client, socks)
}

/// A direct client on A through B (whether or not B runs the exit).
async fn client_with(
    net: &[Node],
    change: impl FnOnce(&mut ClientConfig),
) -> (SkysocksClient, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socks = listener.local_addr().unwrap();
    let mut config = ClientConfig::new(net[1].visor.public_key());
    config.direct = true;
    change(&mut config);
    (
        SkysocksClient::start(&net[0].visor, config, listener),
        socks,
    )
}

/// Greets (no auth) and sends a request with `command`, address type `atyp` and `addr`;
/// returns the connection and the reply code.
async fn request(socks: SocketAddr, command: u8, atyp: u8, addr: &[u8]) -> (TcpStream, u8) {
    let mut tcp = TcpStream::connect(socks).await.unwrap();
    tcp.write_all(&[5, 1, 0]).await.unwrap();
    let mut chosen = [0u8; 2];
    tcp.read_exact(&mut chosen).await.unwrap();
    assert_eq!(chosen, [5, 0]);
    let mut message = vec![5, command, 0, atyp];
    message.extend_from_slice(addr);
    tcp.write_all(&message).await.unwrap();
    let mut reply = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(20), tcp.read_exact(&mut reply))
        .await
        .expect("a reply")
        .unwrap();
    assert_eq!(reply[0], 5);
    (tcp, reply[1])
}

fn ipv4(addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = addr else {
        panic!("not IPv4")
    };
    let mut out = v4.ip().octets().to_vec();
    out.extend_from_slice(&v4.port().to_be_bytes());
    out
}

fn domain(host: &str, port: u16) -> Vec<u8> {
    let mut out = vec![host.len() as u8];
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out
}

/// CONNECT to IPv4 and to a name resolved at the exit: reply 0x00, and a client's
/// half-close reaches the target while the reply still comes back in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_by_address_and_name_with_half_close() {
    let net = nodes(2).await;
    let (exit, client, socks) = proxy(&net, Duration::from_secs(10)).await;
    let target = testkit::tcp::echo_after_eof().await;
    for addr in [(1, ipv4(target)), (3, domain("localhost", target.port()))] {
        let (mut tcp, code) = request(socks, 1, addr.0, &addr.1).await;
        assert_eq!(code, 0x00, "address type {}", addr.0);
        let payload = vec![42u8; 300 * 1024];
        tcp.write_all(&payload).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut back = Vec::new();
        tcp.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), 5 + payload.len());
        assert!(back.starts_with(b"echo:") && back[5..] == payload[..]);
    }
    client.shutdown().await;
    exit.shutdown().await;
}

/// Every failure gets the RFC 1928 code before the connection closes: refused 0x05, a name
/// that does not resolve 0x04, BIND 0x07, an unknown address type 0x08.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_get_their_rfc_1928_reply_codes() {
    let net = nodes(2).await;
    let (exit, client, socks) = proxy(&net, Duration::from_secs(10)).await;
    let closed = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    assert_eq!(request(socks, 1, 1, &ipv4(closed)).await.1, 0x05);
    assert_eq!(
        request(socks, 1, 3, &domain("no-such-host.invalid", 80))
            .await
            .1,
        0x04
    );
    assert_eq!(request(socks, 2, 1, &ipv4(closed)).await.1, 0x07);
    assert_eq!(request(socks, 1, 9, &[1, 2, 3, 4, 0, 80]).await.1, 0x08);
    client.shutdown().await;
    exit.shutdown().await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 1,000 connects to a closed port or an unknown host leave nothing open: the one tunnel's
/// route group on each side, no mux stream on it, and the process's fds back where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_failed_connects_leave_nothing_open() {
    let net = nodes(2).await;
    let (exit, client, socks) = proxy(&net, Duration::from_secs(10)).await;
    let target = testkit::tcp::echo_after_eof().await;
    // The tunnel is up once a connection works.
    let (mut tcp, code) = request(socks, 1, 1, &ipv4(target)).await;
    assert_eq!(code, 0);
    tcp.shutdown().await.unwrap();
    let mut back = Vec::new();
    tcp.read_to_end(&mut back).await.unwrap();
    drop(tcp);
    let closed = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = open_fds();
    for n in 0..1_000 {
        // To a closed port, and one in 25 to a host that does not resolve.
        let (tcp, code) = if n % 25 == 24 {
            request(socks, 1, 3, &domain("no-such-host.invalid", 80)).await
        } else {
            request(socks, 1, 1, &ipv4(closed)).await
        };
        assert_eq!(code, if n % 25 == 24 { 0x04 } else { 0x05 });
        drop(tcp);
    }
    wait_until("the fds are back", || open_fds() <= before).await;
    wait_until("no mux stream is left", || client.open_streams() == 0).await;
    for node in &net {
        assert_eq!(node.visor.stats().route_groups, 1, "the tunnel's only");
    }
    client.shutdown().await;
    exit.shutdown().await;
}

/// A connection that never finishes its greeting is closed after the greeting timeout, and
/// 300 of them do not delay a legitimate one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_greetings_are_closed_and_never_delay_others() {
    let net = nodes(2).await;
    let (exit, client, socks) = proxy(&net, Duration::from_millis(800)).await;
    let target = testkit::tcp::echo_after_eof().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        let mut tcp = TcpStream::connect(socks).await.unwrap();
        tcp.write_all(&[5]).await.unwrap();
        idle.push(tcp);
    }
    let started = tokio::time::Instant::now();
    let (tcp, code) = request(socks, 1, 1, &ipv4(target)).await;
    assert_eq!(code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(tcp);
    // Each idle one is closed by the proxy (EOF) within the timeout and a margin.
    let mut first = idle.remove(0);
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(3), first.read(&mut buf))
        .await
        .expect("closed within the greeting timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    client.shutdown().await;
    exit.shutdown().await;
}

/// With credentials configured, a client offering only "no auth" is refused with 0xFF; the
/// right user and password get through, a wrong one gets the RFC 1929 failure status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_when_configured() {
    let net = nodes(2).await;
    let (exit, client, socks) = proxy_with(&net, |config| {
        config.auth = Some("alice:s3cret".parse().unwrap());
    })
    .await;
    let mut tcp = TcpStream::connect(socks).await.unwrap();
    tcp.write_all(&[5, 1, 0]).await.unwrap();
    let mut chosen = [0u8; 2];
    tcp.read_exact(&mut chosen).await.unwrap();
    assert_eq!(chosen, [5, 0xFF], "no-auth only is refused");

    let target = testkit::tcp::echo_after_eof().await;
    for (password, status) in [("wrong", 1u8), ("s3cret", 0u8)] {
        let mut tcp = TcpStream::connect(socks).await.unwrap();
        tcp.write_all(&[5, 2, 0, 2]).await.unwrap();
        tcp.read_exact(&mut chosen).await.unwrap();
        assert_eq!(chosen, [5, 2], "username/password chosen");
        let mut auth = vec![1, 5];
        auth.extend_from_slice(b"alice");
        auth.push(password.len() as u8);
        auth.extend_from_slice(password.as_bytes());
        tcp.write_all(&auth).await.unwrap();
        let mut answer = [0u8; 2];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[1] == 0, status == 0, "{password}: {answer:?}");
        if status == 0 {
            let mut message = vec![5, 1, 0, 1];
            message.extend_from_slice(&ipv4(target));
            tcp.write_all(&message).await.unwrap();
            let mut reply = [0u8; 10];
            tcp.read_exact(&mut reply).await.unwrap();
            assert_eq!(reply[1], 0);
        }
    }
    client.shutdown().await;
    exit.shutdown().await;
}

/// A panic in the dial path (fault injected) fails that SOCKS request with 0x01 and nothing
/// else: the next request works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_dial_path_fails_only_that_request() {
    let net = nodes(2).await;
    let (exit, client, socks) = proxy_with(&net, |config| {
        config.on_dial = Some(std::sync::Arc::new(|target: &str| {
            assert!(!target.starts_with("panic."), "injected fault for {target}");
        }));
    })
    .await;
    let target = testkit::tcp::echo_after_eof().await;
    assert_eq!(
        request(socks, 1, 3, &domain("panic.example", 80)).await.1,
        0x01
    );
    let (mut tcp, code) = request(socks, 1, 1, &ipv4(target)).await;
    assert_eq!(code, 0x00, "the next request works");
    tcp.shutdown().await.unwrap();
    let mut back = Vec::new();
    tcp.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"echo:");
    client.shutdown().await;
    exit.shutdown().await;
}

/// CONNECT to an IPv6 address (when this machine has ::1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_ipv6() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        eprintln!("\n==== SKIPPED: no IPv6 loopback on this machine ====\n");
        return;
    };
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(b"v6").await;
        }
    });
    let net = nodes(2).await;
    let (exit, client, socks) = proxy(&net, Duration::from_secs(10)).await;
    let SocketAddr::V6(v6) = target else {
        unreachable!()
    };
    let mut addr = v6.ip().octets().to_vec();
    addr.extend_from_slice(&v6.port().to_be_bytes());
    let (mut tcp, code) = request(socks, 1, 4, &addr).await;
    assert_eq!(code, 0);
    let mut got = [0u8; 2];
    tcp.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"v6");
    client.shutdown().await;
    exit.shutdown().await;
}

/// No exit: the answer is 0x03 (network unreachable) at once, not after a long wait; once
/// the exit starts, the client's tunnel comes up by itself; when the exit restarts, it
/// heals again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exit_the_answer_is_quick_and_the_tunnel_heals() {
    let net = nodes(2).await;
    let (client, socks) = client_with(&net, |_| {}).await;
    let target = testkit::tcp::echo_after_eof().await;
    let started = tokio::time::Instant::now();
    assert_eq!(request(socks, 1, 1, &ipv4(target)).await.1, 0x03);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    for _ in 0..2 {
        let exit = Skysocks::start(&net[1].visor).unwrap();
        let until = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            let (tcp, code) = request(socks, 1, 1, &ipv4(target)).await;
            drop(tcp);
            if code == 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < until, "never healed: {code}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        exit.shutdown().await;
    }
    client.shutdown().await;
}
