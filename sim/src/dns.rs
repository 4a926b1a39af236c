//! A DNS server of the tests' own: it answers A, AAAA, SRV and NAPTR queries over UDP from a
//! zone the test sets, and changes while it runs, with the TTLs the test gives; a name it has
//! nothing of is NXDOMAIN. Enough to run RFC 3263 lookups against loopback, and to count the
//! queries each name got. It is not a resolver: it never asks anyone else.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NAPTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// One record of the zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rec {
    Ip(IpAddr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        /// `"."`: the service is not offered at this name (RFC 2782).
        target: String,
    },
    Naptr {
        order: u16,
        preference: u16,
        /// `"S"`: the replacement is an SRV name.
        flags: String,
        /// e.g. `"SIP+D2U"`.
        services: String,
        replacement: String,
    },
}

#[derive(Default)]
struct Zone {
    /// By lower-case name without the final dot: the TTL and records.
    names: HashMap<String, (u32, Vec<Rec>)>,
    queries: HashMap<String, u64>,
}

/// The running server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Serves on `ip`, on a port the system picks.
    pub async fn start(ip: IpAddr) -> std::io::Result<DnsServer> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addr = socket.local_addr()?;
        let zone = Arc::new(Mutex::new(Zone::default()));
        let task = tokio::spawn(serve(socket, zone.clone()));
        Ok(DnsServer { addr, zone, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes `records` (with `ttl` seconds) all that `name` has; none: NXDOMAIN.
    pub fn set(&self, name: &str, ttl: u32, records: Vec<Rec>) {
        let mut zone = self.zone.lock().unwrap_or_else(|p| p.into_inner());
        if records.is_empty() {
            zone.names.remove(&key(name));
        } else {
            zone.names.insert(key(name), (ttl, records));
        }
    }

    /// How many queries (of any type) `name` got.
    pub fn queries(&self, name: &str) -> u64 {
        let zone = self.zone.lock().unwrap_or_else(|p| p.into_inner());
        zone.queries.get(&key(name)).copied().unwrap_or(0)
    }
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let reply = answer(&query, &zone);
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}

fn answer(query: &Message, zone: &Mutex<Zone>) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    let mut zone = zone.lock().unwrap_or_else(|p| p.into_inner());
    let mut code = ResponseCode::NoError;
    for q in query.queries() {
        reply.add_query(q.clone());
        let name = key(&q.name().to_ascii());
        *zone.queries.entry(name.clone()).or_default() += 1;
        let Some((ttl, records)) = zone.names.get(&name) else {
            code = ResponseCode::NXDomain;
            continue;
        };
        for rec in records {
            if let Some(rdata) = rdata(rec, q.query_type()) {
                reply.add_answer(Record::from_rdata(q.name().clone(), *ttl, rdata));
            }
        }
    }
    reply.set_response_code(code);
    reply
}

/// `rec` as an answer to a query of type `wanted`, if it is one.
fn rdata(rec: &Rec, wanted: RecordType) -> Option<RData> {
    let name = |n: &str| Name::from_ascii(n).ok();
    match (rec, wanted) {
        (Rec::Ip(IpAddr::V4(ip)), RecordType::A) => Some(RData::A(A(*ip))),
        (Rec::Ip(IpAddr::V6(ip)), RecordType::AAAA) => Some(RData::AAAA(AAAA(*ip))),
        (
            Rec::Srv {
                priority,
                weight,
                port,
                target,
            },
            RecordType::SRV,
        ) => Some(RData::SRV(SRV::new(
            *priority,
            *weight,
            *port,
            name(target)?,
        ))),
        (
            Rec::Naptr {
                order,
                preference,
                flags,
                services,
                replacement,
            },
            RecordType::NAPTR,
        ) => Some(RData::NAPTR(NAPTR::new(
            *order,
            *preference,
            flags.as_bytes().into(),
            services.as_bytes().into(),
            Box::default(),
            name(replacement)?,
        ))),
        _ => None,
    }
}
