//! A DNS server on loopback UDP that answers one name with a fixed set of IPv4 addresses.
//!
//! It stands in for Docker's embedded DNS, which answers a compose service's name with one
//! address per container: the balancer under test finds the loopback nodes exactly the way it
//! finds containers, through its `server-template`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Packet, QTYPE, RCODE, ResourceRecord, TYPE};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Answers `A <name>` with every address, `AAAA <name>` with none, and anything else with
/// NXDOMAIN. Stops when dropped.
pub(crate) struct DnsServer {
    addr: SocketAddr,
    addresses: Arc<Mutex<Vec<Ipv4Addr>>>,
    task: JoinHandle<()>,
}

impl DnsServer {
    pub(crate) async fn start(name: &str, addresses: &[Ipv4Addr]) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind the DNS socket");
        let addr = socket.local_addr().expect("DNS socket address");
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let addresses = Arc::new(Mutex::new(addresses.to_vec()));
        let current = addresses.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let addresses = current.lock().expect("not poisoned").clone();
                if let Some(reply) = answer(&buf[..len], &name, &addresses) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        DnsServer {
            addr,
            addresses,
            task,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers with `addresses` from now on, as Docker's DNS does when containers come and go.
    pub(crate) fn set_addresses(&self, addresses: &[Ipv4Addr]) {
        *self.addresses.lock().expect("not poisoned") = addresses.to_vec();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply to one query, or None for a packet that is not one.
fn answer(query: &[u8], name: &str, addresses: &[Ipv4Addr]) -> Option<Vec<u8>> {
    let query = Packet::parse(query).ok()?;
    let mut reply = Packet::new_reply(query.id());
    let mut known = true;
    for question in &query.questions {
        let asked = question.qname.to_string();
        if !asked.trim_end_matches('.').eq_ignore_ascii_case(name) {
            known = false;
        } else if question.qtype == QTYPE::TYPE(TYPE::A) {
            for address in addresses {
                reply.answers.push(ResourceRecord::new(
                    question.qname.clone(),
                    CLASS::IN,
                    1,
                    RData::A(A::from(*address)),
                ));
            }
        }
        reply.questions.push(question.clone());
    }
    if !known {
        *reply.rcode_mut() = RCODE::NameError;
    }
    reply.build_bytes_vec().ok()
}
