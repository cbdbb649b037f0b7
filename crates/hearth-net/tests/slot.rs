//! Real network slots (root): what a slot holds, and that deleting it leaves
//! nothing. Run by `make vm-test`.

use std::path::Path;
use std::process::Command;

use hearth_net::{NetSlot, SlotNaming, TAP_MAC, TAP_NAME};

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
