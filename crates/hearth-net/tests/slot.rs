//! Real network slots (root): what a slot holds, and that deleting it leaves
//! nothing. Run by `make vm-test`.

use std::path::Path;
use std::process::Command;

use hearth_net::{EgressPolicy, NetSlot, SlotNaming, TAP_MAC, TAP_NAME};

fn ip(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Deletes the test's namespaces even when an assertion fails first.
struct RemoveOnDrop(Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for netns in &self.0 {
            if Path::new("/run/netns").join(netns).exists() {
                let _ = Command::new("ip").args(["netns", "del", netns]).status();
            }
        }
    }
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
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", "hearth"])
        .output()?;
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.contains("dnat to 169.254.0.21"), "{rules}");

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
    let set = |name: &str| nft_in(ns, &["list", "set", "ip", "hearth", name]);

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
