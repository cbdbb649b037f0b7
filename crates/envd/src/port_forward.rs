//! Makes guest services that listen only on loopback reachable on the
//! guest's own addresses (as E2B's envd does), so `<port>-<sandbox>.<domain>`
//! works for a server bound to `localhost`. Every scan reads the listening
//! TCP sockets from `/proc/net/tcp{,6}`; each port bound only to 127.0.0.1 or
//! ::1 gets a relay on every non-loopback IPv4 address of the guest, removed
//! when the port closes. Scans come once a second while something changes
//! and back off to once every 8 s while nothing does; a process started
//! through envd brings the pace back at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// `st` of a listening socket in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// Which loopback a service listens on, to relay to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Loopback {
    V4,
    V6,
}

/// Ports whose listeners are all on loopback, from the text of
/// `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn loopback_only_ports(tcp: &str, tcp6: &str) -> BTreeMap<u16, Loopback> {
    let mut loopback = BTreeMap::new();
    let mut elsewhere = BTreeSet::new();
    for (table, v6) in [(tcp, false), (tcp6, true)] {
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            if *state != LISTEN {
                continue;
            }
            let Some((address, port)) = local.split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port, 16) else {
                continue;
            };
            let is_loopback = if v6 {
                address == "00000000000000000000000001000000"
            } else {
                address == "0100007F"
            };
            if is_loopback {
                loopback
                    .entry(port)
                    .or_insert(if v6 { Loopback::V6 } else { Loopback::V4 });
            } else {
                elsewhere.insert(port);
            }
        }
    }
    loopback.retain(|port, _| !elsewhere.contains(port));
    loopback
}

/// The guest's non-loopback IPv4 addresses.
fn own_addresses() -> Vec<Ipv4Addr> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut own: Vec<Ipv4Addr> = addresses
        .filter_map(|interface| interface.address)
        .filter_map(|address| address.as_sockaddr_in().map(|a| a.ip()))
        .filter(|ip| !ip.is_loopback())
        .collect();
    own.sort();
    own.dedup();
    own
}

/// Relays connections on `address:port` to the service on loopback.
async fn relay(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let _ = inbound.set_nodelay(true);
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Keeps relays in step with the loopback listeners, scanning every `every`.
pub async fn run(pace: ScanPace, process_started: Arc<Notify>) {
    let mut relays: BTreeMap<(u16, Ipv4Addr), JoinHandle<()>> = BTreeMap::new();
    let mut seen = None;
    let mut every = pace.fastest;
    loop {
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let tcp6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
        let wanted = loopback_only_ports(&tcp, &tcp6);
        let addresses = own_addresses();
        let now = Some((wanted.clone(), addresses.clone()));
        every = pace.after(every, now != seen);
        seen = now;
        relays.retain(|(port, address), relay| {
            let keep = wanted.contains_key(port) && addresses.contains(address);
            if !keep {
                relay.abort();
            }
            keep
        });
        for (port, loopback) in &wanted {
            let target = match loopback {
                Loopback::V4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port),
                Loopback::V6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), *port),
            };
            for address in &addresses {
                if relays.contains_key(&(*port, *address)) {
                    continue;
                }
                match TcpListener::bind((*address, *port)).await {
                    Ok(listener) => {
                        tracing::info!(port, %address, "relaying a loopback-only port");
                        relays.insert((*port, *address), tokio::spawn(relay(listener, target)));
                    }
                    Err(error) => tracing::debug!(port, %address, %error, "cannot relay"),
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = process_started.notified() => every = pace.fastest,
        }
    }
}

/// How often the scan looks: every `fastest` while things change (a
/// process was just started, a port opened or closed, an address came),
/// backing off by doubling to every `slowest` while nothing does. Each scan
/// wakes an idle guest, and under TCG a scan a second cost an idle
/// sandbox's host about 1.3 % of a core, a third of all it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPace {
    pub fastest: Duration,
    pub slowest: Duration,
}

impl Default for ScanPace {
    fn default() -> Self {
        Self {
            fastest: Duration::from_secs(1),
            slowest: Duration::from_secs(8),
        }
    }
}

impl ScanPace {
    /// The wait after a scan that waited `every` and saw a change or not.
    pub fn after(&self, every: Duration, changed: bool) -> Duration {
        if changed {
            self.fastest
        } else {
            every.saturating_mul(2).clamp(self.fastest, self.slowest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1
   1: 00000000:C2D7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 1500FEA9:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1
   4: 0100007F:1F41 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 5 1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 6 1
";

    #[test]
    fn the_scan_backs_off_while_nothing_changes_and_hurries_when_something_does() {
        let pace = ScanPace::default();
        let mut every = pace.fastest;
        let mut waits = Vec::new();
        for _ in 0..6 {
            every = pace.after(every, false);
            waits.push(every.as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 8, 8, 8]);
        assert_eq!(pace.after(every, true), Duration::from_secs(1));
    }

    #[test]
    fn only_ports_listening_on_loopback_alone_are_relayed() {
        let ports = loopback_only_ports(TCP, TCP6);
        // 8000 on 127.0.0.1; 3000 on ::1. 49879 is on every address, 22 also on
        // 169.254.0.21, and 8001 is an established connection, not a listener.
        assert_eq!(
            ports.into_iter().collect::<Vec<_>>(),
            vec![(3000, Loopback::V6), (8000, Loopback::V4)]
        );
    }
}
