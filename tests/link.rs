//! The node link between two pointsman processes (the first piece of the anycast pair): two
//! nodes with `[cluster]` sections on their own loopback addresses, certificates from a CA the
//! test makes, find each other, and each reports the other up in `pointsman_link_up`; when one
//! is killed, the survivor reports it down within `dead_after` and a little.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::certs::Ca;
use support::*;

const LINK_PORT: u16 = 5800;

/// Writes a CA and one node certificate per address into `dir`: `ca.pem`, `node-<i>.pem`,
/// `node-<i>.key`.
fn certificates(dir: &Path, ips: &[IpAddr]) {
    let ca = Ca::new("link ca");
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    for (i, ip) in ips.iter().enumerate() {
        let node = ca.node(*ip);
        std::fs::write(dir.join(format!("node-{i}.pem")), node.cert).unwrap();
        std::fs::write(dir.join(format!("node-{i}.key")), node.key).unwrap();
    }
}

/// Node `i` (id `i + 1`) of the pair on `ips`, its PEM files in `dir`.
fn config(i: usize, ips: &[IpAddr], dir: &Path) -> String {
    let ip = ips[i];
    let other = 1 - i;
    format!(
        r#"[node]
id = {id}
workers = 1

[[listen]]
transport = "udp"
address = "{ip}:{PROXY_PORT}"

[admin]
listen = "{ip}:{ADMIN_PORT}"

[cluster]
listen = "{ip}:{LINK_PORT}"
peers = [{{ id = {peer}, address = "{peer_ip}:{LINK_PORT}" }}]
cert = "{dir}/node-{i}.pem"
key = "{dir}/node-{i}.key"
ca = "{dir}/ca.pem"
dead_after = "1s"

[[destination]]
name = "cloud"
address = "{ip}:5070"
probe = false

[[route]]
name = "default"
destinations = ["cloud"]
"#,
        id = i + 1,
        peer = other + 1,
        peer_ip = ips[other],
        dir = dir.display(),
    )
}

/// `pointsman_link_up{peer}` of the node whose admin API is on `ip`.
async fn link_up(ip: IpAddr, peer: u16) -> Option<f64> {
    let text = metric_text(&format!("{ip}:{ADMIN_PORT}")).await;
    let series = format!("pointsman_link_up{{peer=\"{peer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
}

/// The peers `GET /node` of the node on `ip` lists: (id, up).
async fn peers(ip: IpAddr) -> Vec<(u64, bool)> {
    let addr = format!("{ip}:{ADMIN_PORT}");
    let text = tokio::task::spawn_blocking(move || {
        pointsman::admin::http_request(&addr, "GET", "/node", None, Duration::from_secs(5))
    })
    .await
    .unwrap()
    .unwrap()
    .text();
    let node: serde_json::Value = serde_json::from_str(&text).unwrap();
    node["peers"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|p| (p["id"].as_u64().unwrap(), p["up"].as_bool().unwrap()))
        .collect()
}

/// Waits up to `within` for node `ip` to say peer `peer` is `up` (1) or down (0).
async fn wait_link(ip: IpAddr, peer: u16, up: f64, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if link_up(ip, peer).await == Some(up) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn two_nodes_link_up_and_the_survivor_sees_a_killed_peer_down_within_dead_after() {
    let ips = [fresh_ip(), fresh_ip()];
    let dir =
        std::env::temp_dir().join(format!("pointsman-link-{}-{}", std::process::id(), ips[0]));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir, &ips);
    let node_1 = Node::start(&config(0, &ips, &dir), at(ips[0], PROXY_PORT)).await;
    let mut node_2 = Node::start(&config(1, &ips, &dir), at(ips[1], PROXY_PORT)).await;
    let report = |node_2: &Node| {
        format!(
            "--- node 1 ---\n{}\n--- node 2 ---\n{}",
            node_1.log(),
            node_2.log()
        )
    };
    assert!(
        wait_link(ips[0], 2, 1.0, Duration::from_secs(5))
            .await
            .is_some(),
        "node 1 sees node 2 up\n{}",
        report(&node_2)
    );
    assert!(
        wait_link(ips[1], 1, 1.0, Duration::from_secs(5))
            .await
            .is_some(),
        "node 2 sees node 1 up\n{}",
        report(&node_2)
    );
    assert!(node_1.log().contains("node link up"), "{}", report(&node_2));
    assert_eq!(
        peers(ips[0]).await,
        vec![(2, true)],
        "GET /node lists the peer"
    );
    // A silent death: SIGKILL closes nothing, so only the keep-alives can tell.
    node_2.signal(libc::SIGKILL);
    let _ = node_2.wait_exit(Duration::from_secs(5)).await;
    let seen = wait_link(ips[0], 2, 0.0, Duration::from_secs(3)).await;
    let seen = seen.unwrap_or_else(|| panic!("node 1 never saw node 2 down\n{}", report(&node_2)));
    // dead_after is 1 s; the metric is read every 20 ms over HTTP on a busy machine.
    assert!(seen < Duration::from_millis(1800), "down after {seen:?}");
    assert!(
        node_1.log().contains("node link down"),
        "{}",
        report(&node_2)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
