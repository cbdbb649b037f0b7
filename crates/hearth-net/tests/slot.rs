//! Real network slots (root): what a slot holds, that deleting it leaves
//! nothing, and what it lets a guest do (with a namespace standing in for
//! the guest, see `support::guest`). Run by `make vm-test`.

mod support;

use std::path::Path;
use std::process::Command;

use hearth_net::{EgressPolicy, NetSlot, SlotNaming, TAP_MAC, TAP_NAME};
use support::netns::RemoveOnDrop;

fn ip(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "creates network namespaces: run with `make vm-test`"]
async fn a_slot_is_created_and_removed_whole() -> Result<(), Box<dyn std::error::Error>> {
    let naming = SlotNaming::new("htn", 22)?;
    let first = NetSlot::create_free(&naming, 0).await?;
    let second = NetSlot::create_free(&naming, 0).await?;
    let _cleanup = RemoveOnDrop(vec![first.netns.clone(), second.netns.clone()]);
    assert_ne!(first.index, second.index, "two slots never share an index");
    assert_ne!(first.sandbox_address, second.sandbox_address);

    let ns = first.netns.as_str();
    assert!(first.netns_path().exists());
    let tap = ip(&["-n", ns, "-o", "link", "show", TAP_NAME]);
    assert!(tap.contains(TAP_MAC), "tap0 has the fixed MAC: {tap}");
    let addresses = ip(&["-n", ns, "-4", "-o", "addr"]);
    assert!(addresses.contains("169.254.0.22/30"), "{addresses}");
    assert!(
        addresses.contains(&format!("{}/30", first.sandbox_address)),
        "{addresses}"
    );
    let host = ip(&["-4", "-o", "addr", "show", &first.host_veth]);
    assert!(
        host.contains(&format!("{}/30", first.host_address)),
        "{host}"
    );
    let rules = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "table", "inet", "hearth",
        ])
        .output()?;
    let rules = String::from_utf8_lossy(&rules.stdout);
    for rule in [
        "hook ingress device \"tap0\"",
        "ip saddr != 169.254.0.21 drop",
        "dnat ip to 169.254.0.21",
        "ip6 daddr fd00:ec2::254 drop",
        "oifname \"tap0\" meta nfproto ipv6 drop",
        // The always-denied set, new ranges included (224/4 and 240/4 merge).
        "ip daddr { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 168.63.129.16, \
         169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/3 } drop",
    ] {
        assert!(rules.contains(rule), "{rule} in {rules}");
    }

    let (netns, veth) = (first.netns.clone(), first.host_veth.clone());
    first.destroy().await?;
    second.destroy().await?;
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "{netns} is left"
    );
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "{veth} is left"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "creates network namespaces: run with `make vm-test`"]
async fn the_pool_keeps_slots_ready_and_recycles_them() -> Result<(), Box<dyn std::error::Error>> {
    let naming = SlotNaming::new("htp", 23)?;
    let pool = hearth_net::SlotPool::new(naming, 2);
    let _cleanup = RemoveOnDrop((0..8).map(|i| format!("htp-{i}")).collect());
    let refill = tokio::spawn(pool.clone().refill());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pool.ready() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not fill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    let slot = pool.take().await?;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(50),
        "a ready slot is handed out at once"
    );
    let taken = slot.netns.clone();
    // Kept to rest for reuse, or deleted if the pool refilled meanwhile.
    pool.give_back(slot).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pool.ready() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not refill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    refill.abort();
    pool.drain().await?;
    let left: Vec<_> = std::fs::read_dir("/run/netns")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("htp-"))
        .collect();
    assert!(
        left.is_empty(),
        "after drain {left:?} are left (took {taken})"
    );
    Ok(())
}

fn nft_in(netns: &str, args: &[&str]) -> String {
    Command::new("ip")
        .args(["netns", "exec", netns, "nft"])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "creates network namespaces: run with `make vm-test`"]
async fn a_policy_replaces_the_sets_whole() -> Result<(), Box<dyn std::error::Error>> {
    let naming = SlotNaming::new("htn", 22)?;
    let slot = NetSlot::create_free(&naming, 0).await?;
    let _cleanup = RemoveOnDrop(vec![slot.netns.clone()]);
    let ns = slot.netns.as_str();
    let set = |name: &str| nft_in(ns, &["list", "set", "inet", "hearth", name]);

    // Internet off adds 0.0.0.0/0, which overlaps the denied /8: still one set.
    let policy = EgressPolicy::new(
        false,
        &["1.1.1.1".into(), "8.8.8.0/24".into()],
        &["10.0.0.0/8".into()],
    )?;
    policy.apply(&slot).await?;
    let (allowed, denied) = (set("allowed"), set("denied"));
    assert!(
        allowed.contains("elements = { 1.1.1.1, 8.8.8.0/24 }"),
        "{allowed}"
    );
    assert!(denied.contains("elements = { 0.0.0.0/0 }"), "{denied}");

    // A long list (every other address, so nothing merges) spans several
    // messages of one transaction.
    let many: Vec<String> = (0..1000)
        .map(|i| format!("203.0.{}.{}", i / 125, i % 125 * 2))
        .collect();
    EgressPolicy::new(true, &many, &["192.0.2.0/24".into()])?
        .apply(&slot)
        .await?;
    let (allowed, denied) = (set("allowed"), set("denied"));
    assert!(
        allowed.contains("203.0.0.0,") && allowed.contains("203.0.7.248 }"),
        "{allowed}"
    );
    assert!(
        !allowed.contains("1.1.1.1"),
        "replaced, not added to: {allowed}"
    );
    assert!(denied.contains("elements = { 192.0.2.0/24 }"), "{denied}");

    EgressPolicy::default().apply(&slot).await?;
    assert!(!set("allowed").contains("elements"), "{}", set("allowed"));
    assert!(!set("denied").contains("elements"), "{}", set("denied"));
    slot.destroy().await?;
    Ok(())
}

#[tokio::test]
#[ignore = "changes the host's nftables: run with `make vm-test`"]
async fn the_host_table_is_replaced_and_removed() -> Result<(), Box<dyn std::error::Error>> {
    let naming = SlotNaming::new("htn", 22)?;
    let list = || {
        Command::new("nft")
            .args(["list", "table", "inet", "hearth_htn"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    hearth_net::host::prepare(&naming).await?;
    // A second prepare replaces the table rather than adding rules twice.
    hearth_net::host::prepare(&naming).await?;
    let table = list();
    for rule in [
        "iifname \"htnv*\" ct state established,related accept",
        "iifname \"htnv*\" oifname \"htnv*\" drop",
        // Out of the slots, only IPv4 from their own addresses.
        "iifname \"htnv*\" meta nfproto ipv6 drop",
        "iifname \"htnv*\" ip saddr != 10.22.0.0/16 drop",
        "ip saddr 10.22.0.0/16 oifname != \"htnv*\" masquerade",
    ] {
        assert_eq!(table.matches(rule).count(), 1, "{rule} once in {table}");
    }
    hearth_net::host::remove(&naming).await?;
    hearth_net::host::remove(&naming).await?;
    assert!(list().is_empty(), "the table is gone");
    Ok(())
}

/// Prints what creating, policing and deleting one slot cost
/// (docs/benchmarks.md quotes them); it asserts only a generous bound, since
/// the machine may be busy.
#[tokio::test]
#[ignore = "creates network namespaces: run with `make vm-test`"]
async fn a_slot_takes_milliseconds() -> Result<(), Box<dyn std::error::Error>> {
    let naming = SlotNaming::new("htn", 22)?;
    let _cleanup = RemoveOnDrop((0..4).map(|i| format!("htn-{i}")).collect());
    let policy = EgressPolicy::new(false, &["1.1.1.1".into()], &[])?;
    let (mut create, mut apply, mut destroy) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let slot = NetSlot::create_free(&naming, 0).await?;
        create.push(started.elapsed());
        let started = std::time::Instant::now();
        policy.apply(&slot).await?;
        apply.push(started.elapsed());
        let started = std::time::Instant::now();
        slot.destroy().await?;
        destroy.push(started.elapsed());
    }
    for (what, times) in [
        ("create", &mut create),
        ("egress apply", &mut apply),
        ("destroy", &mut destroy),
    ] {
        times.sort();
        let (p50, p95) = (times[times.len() / 2], times[times.len() * 95 / 100]);
        println!(
            "slot {what}, {} runs: p50 {p50:?}, p95 {p95:?}",
            times.len()
        );
        assert!(
            p50 < std::time::Duration::from_secs(2),
            "{what}: p50 {p50:?}"
        );
    }
    Ok(())
}

mod guarded {
    //! What a slot lets a guest do, through a stand-in guest and internet.

    use std::io::Write;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use hearth_net::{EgressPolicy, GATEWAY, GUEST_ADDRESS, NetSlot, SlotNaming, SlotPool};

    use crate::support::TestResult;
    use crate::support::guest::Guest;
    use crate::support::internet::{HostTable, Internet};
    use crate::support::netns::{RemoveOnDrop, ip, sysctl};
    use crate::support::tcp::{
        PATIENCE, accept, connect_from, datagram_within, exchange, listen_in, read_within, udp_in,
    };
    use crate::support::tracked::{Tracked, tracked};

    const PORT: u16 = 18080;
    /// How long a packet that must not arrive is waited for.
    const QUIET: Duration = Duration::from_secs(2);

    fn at(address: Ipv4Addr, port: u16) -> SocketAddr {
        SocketAddr::from((address, port))
    }

    fn has_data(read: &std::io::Result<Vec<u8>>) -> bool {
        read.as_ref().is_ok_and(|data| !data.is_empty())
    }

    fn is_reset<T>(result: &std::io::Result<T>) -> bool {
        result
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
    }

    #[tokio::test]
    #[ignore = "creates network namespaces: run with `make vm-test`"]
    async fn an_open_connection_dies_when_internet_access_is_switched_off() -> TestResult {
        let naming = SlotNaming::new("htk", 26)?;
        let _host = HostTable::prepare(&naming).await?;
        let slot = NetSlot::create_free(&naming, 0).await?;
        let _slot_removed = RemoveOnDrop(vec![slot.netns.clone()]);
        let guest = Guest::attach(&slot)?;
        let internet = Internet::start("htk", 26)?;
        EgressPolicy::new(true, &[], &[])?.apply(&slot).await?;

        let server = listen_in(&internet.netns, at(internet.address, PORT))?;
        let mut inside = connect_from(&guest.netns, at(internet.address, PORT))?;
        let mut outside = accept(&server)?;
        exchange(&mut inside, &mut outside)?;

        EgressPolicy::new(false, &[], &[])?.apply(&slot).await?;
        // The far end speaks first: nothing reaches the guest, and the far
        // end learns that the connection is gone (by the time it writes, if
        // a late acknowledgement was reset first).
        let far_wrote = outside.write_all(b"after");
        let got = read_within(&mut inside, QUIET);
        assert!(
            !has_data(&got),
            "the guest still hears the internet: {got:?}"
        );
        // Nor does what the guest sends get out.
        inside.write_all(b"after")?;
        let far_read = read_within(&mut outside, QUIET);
        assert!(!has_data(&far_read), "the internet hears the guest");
        assert!(
            is_reset(&far_wrote) || is_reset(&far_read),
            "the internet's end is reset: {far_wrote:?}, {far_read:?}"
        );
        // And no new connection starts.
        assert!(connect_from(&guest.netns, at(internet.address, PORT)).is_err());
        slot.destroy().await?;
        Ok(())
    }

    #[tokio::test]
    #[ignore = "creates network namespaces: run with `make vm-test`"]
    async fn a_guest_cannot_send_from_an_address_not_its_own() -> TestResult {
        let naming = SlotNaming::new("hta", 27)?;
        let _host = HostTable::prepare(&naming).await?;
        let slot = NetSlot::create_free(&naming, 0).await?;
        let _slot_removed = RemoveOnDrop(vec![slot.netns.clone()]);
        let guest = Guest::attach(&slot)?;
        let internet = Internet::start("hta", 27)?;
        EgressPolicy::new(true, &[], &[])?.apply(&slot).await?;
        // Whether the host filters reverse paths must not decide this.
        for device in ["all", "tap0"] {
            let name = format!("net.ipv4.conf.{device}.rp_filter");
            sysctl(&slot.netns, &name, "0")?;
        }

        let spoofed = Ipv4Addr::new(192, 0, 2, 77);
        guest.add_address(spoofed)?;
        let far = udp_in(&internet.netns, at(internet.address, PORT))?;
        let near = udp_in(&slot.netns, at(GATEWAY, PORT))?;
        let honest = udp_in(&guest.netns, at(GUEST_ADDRESS, 0))?;
        let liar = udp_in(&guest.netns, at(spoofed, 0))?;
        for (receiver, to) in [(&far, internet.address), (&near, GATEWAY)] {
            honest.send_to(b"honest", at(to, PORT))?;
            assert_eq!(
                datagram_within(receiver, PATIENCE).as_deref(),
                Some(&b"honest"[..]),
                "the guest's own address reaches {to}"
            );
            liar.send_to(b"spoofed", at(to, PORT))?;
            let got = datagram_within(receiver, QUIET);
            assert_eq!(got, None, "a spoofed source reaches {to}");
        }
        slot.destroy().await?;
        Ok(())
    }

    #[tokio::test]
    #[ignore = "creates network namespaces: run with `make vm-test`"]
    async fn a_slot_forgets_connections_on_a_policy_change_and_a_reuse() -> TestResult {
        const ENVD_PORT: u16 = 49983;
        let naming = SlotNaming::new("htr", 28)?;
        let _host = HostTable::prepare(&naming).await?;
        let _slots_removed = RemoveOnDrop((0..4).map(|i| format!("htr-{i}")).collect());
        let pool = SlotPool::new(naming, 1);
        let slot = pool.take().await?;
        let (netns, address) = (slot.netns.clone(), slot.sandbox_address);
        let guest = Guest::attach(&slot)?;
        let internet = Internet::start("htr", 28)?;
        EgressPolicy::new(true, &[], &[])?.apply(&slot).await?;

        // One connection the guest opens, one opened to it (as to envd).
        let server = listen_in(&internet.netns, at(internet.address, PORT))?;
        let mut out_inside = connect_from(&guest.netns, at(internet.address, PORT))?;
        let mut out_outside = accept(&server)?;
        exchange(&mut out_inside, &mut out_outside).map_err(|e| format!("out: {e}"))?;
        let envd = listen_in(&guest.netns, at(GUEST_ADDRESS, ENVD_PORT))?;
        let mut in_host = std::net::TcpStream::connect_timeout(&at(address, ENVD_PORT), PATIENCE)
            .map_err(|e| format!("in connect: {e}"))?;
        let mut in_guest = accept(&envd).map_err(|e| format!("in accept: {e}"))?;
        exchange(&mut in_host, &mut in_guest).map_err(|e| format!("in: {e}"))?;
        let opened_by_guest = |t: &Tracked| t.source == GUEST_ADDRESS;
        let slot_is_source = |t: &Tracked| t.source == address;
        let slot_is_destination = |t: &Tracked| t.destination == address;
        assert!(tracked(Some(&netns))?.iter().any(opened_by_guest));
        assert!(tracked(None)?.iter().any(slot_is_source));

        // A policy change forgets what the guest opened, in the slot and on
        // the host; what was opened to the guest stays, and works.
        EgressPolicy::new(true, &[], &["192.0.2.0/24".into()])?
            .apply(&slot)
            .await?;
        let inside = tracked(Some(&netns))?;
        assert!(!inside.iter().any(opened_by_guest), "{inside:#?}");
        assert!(inside.iter().any(slot_is_destination), "{inside:#?}");
        let host = tracked(None)?;
        assert!(!host.iter().any(slot_is_source), "{host:#?}");
        exchange(&mut in_host, &mut in_guest).map_err(|e| format!("in, after: {e}"))?;

        // A slot given back keeps nothing, in the slot or on the host.
        pool.give_back(slot).await?;
        let inside = tracked(Some(&netns))?;
        assert!(inside.is_empty(), "{inside:#?}");
        let host = tracked(None)?;
        let left: Vec<_> = host
            .iter()
            .filter(|t| slot_is_source(t) || slot_is_destination(t))
            .collect();
        assert!(left.is_empty(), "{left:#?}");
        // A connection to the sandbox before is dead: its next packet is
        // reset by the slot, not handed to whoever has the tap now (the
        // reset may come first, for a late acknowledgement).
        let host_wrote = in_host.write_all(b"late");
        let got = read_within(&mut in_guest, QUIET);
        assert!(
            !has_data(&got),
            "the old connection reached the guest: {got:?}"
        );
        let host_read = read_within(&mut in_host, QUIET);
        assert!(
            is_reset(&host_wrote) || is_reset(&host_read),
            "the old connection is reset: {host_wrote:?}, {host_read:?}"
        );
        // Whatever is tracked while the slot rests (here the old guest still
        // sending) is forgotten when it is taken again.
        let stray = udp_in(&guest.netns, at(GUEST_ADDRESS, 0))?;
        stray.send_to(b"stray", at(GATEWAY, PORT))?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !tracked(Some(&netns))?.is_empty(),
            "the stray datagram is tracked"
        );
        tokio::time::sleep(Duration::from_millis(3200)).await;
        let again = pool.take().await?;
        assert_eq!(again.netns, netns, "the rested slot is reused");
        let inside = tracked(Some(&netns))?;
        assert!(inside.is_empty(), "{inside:#?}");
        drop((guest, internet));
        again.destroy().await?;
        Ok(())
    }

    #[tokio::test]
    #[ignore = "creates network namespaces: run with `make vm-test`"]
    async fn ipv6_neither_leaves_nor_reaches_the_guest() -> TestResult {
        let naming = SlotNaming::new("ht6", 29)?;
        let slot = NetSlot::create_free(&naming, 0).await?;
        let _slot_removed = RemoveOnDrop(vec![slot.netns.clone()]);
        let guest = Guest::attach(&slot)?;
        // Addresses and neighbours fixed, so that the packets below are
        // sent whatever becomes of neighbour discovery.
        let (guest6, slot6) = ("fd00:68::21", "fd00:68::22");
        let (g, s) = (guest.netns.as_str(), slot.netns.as_str());
        ip(&[
            "-n",
            g,
            "addr",
            "add",
            &format!("{guest6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &format!("{slot6}/64"),
            "dev",
            "tap0",
            "nodad",
        ])?;
        let neighbour = |netns, address, mac, device| {
            ip(&[
                "-n",
                netns,
                "neigh",
                "replace",
                address,
                "lladdr",
                mac,
                "dev",
                device,
                "nud",
                "permanent",
            ])
        };
        neighbour(g, slot6, hearth_net::TAP_MAC, "eth0")?;
        neighbour(s, guest6, hearth_net::GUEST_MAC, "tap0")?;
        let v6 = |text: &str, port| -> Result<SocketAddr, std::net::AddrParseError> {
            Ok(SocketAddr::from((
                text.parse::<std::net::Ipv6Addr>()?,
                port,
            )))
        };

        let slot_v4 = udp_in(s, at(GATEWAY, PORT))?;
        let slot_v6 = udp_in(s, v6(slot6, PORT)?)?;
        let guest_v4 = udp_in(g, at(GUEST_ADDRESS, PORT))?;
        let guest_v6 = udp_in(g, v6(guest6, PORT)?)?;
        // IPv4 passes both ways: the wire works.
        guest_v4.send_to(b"v4", at(GATEWAY, PORT))?;
        assert_eq!(
            datagram_within(&slot_v4, PATIENCE).as_deref(),
            Some(&b"v4"[..])
        );
        slot_v4.send_to(b"v4", at(GUEST_ADDRESS, PORT))?;
        assert_eq!(
            datagram_within(&guest_v4, PATIENCE).as_deref(),
            Some(&b"v4"[..])
        );
        // IPv6 passes neither way (the slot's send may fail outright).
        guest_v6.send_to(b"v6", v6(slot6, PORT)?)?;
        assert_eq!(
            datagram_within(&slot_v6, QUIET),
            None,
            "IPv6 from the guest"
        );
        let _ = slot_v6.send_to(b"v6", v6(guest6, PORT)?);
        assert_eq!(datagram_within(&guest_v6, QUIET), None, "IPv6 to the guest");
        slot.destroy().await?;
        Ok(())
    }
}
