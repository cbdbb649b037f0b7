//! Building and tearing down a slot's namespace: links, addresses, route,
//! forwarding and firewall, all over netlink from one worker thread.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::NetError;
use crate::slot::NetSlot;
use crate::{GATEWAY, GUEST_PREFIX, TAP_MAC, TAP_NAME};
use crate::{links, netns, slot_table, sysctl, tap, worker};

/// The slot's end of its veth pair.
const UPLINK: &str = "eth0";
/// Prefix length of the host ↔ slot link.
const LINK_PREFIX: u8 = 30;

/// Makes `slot`'s namespace and everything in it. Fails with
/// [`NetError::NetnsExists`] if the namespace is taken; on any other
/// failure the caller removes what was made.
pub async fn build(slot: &NetSlot) -> Result<(), NetError> {
    let slot = slot.clone();
    let what = format!("creating slot {}", slot.netns);
    worker::on_own_thread(&what.clone(), move || {
        worker::block_on(&what, async move {
            // Opened before the thread leaves the host's namespace, so it
            // stays the host's.
            let host = links::connect("the host")?;
            netns::create_and_enter(&slot.netns)?;
            let inside = links::connect(&slot.netns)?;
            let netns_file = File::open(slot.netns_path())
                .map_err(NetError::system(format!("opening {}", slot.netns)))?;

            links::add_veth(&host, &slot.host_veth, UPLINK, netns_file.as_raw_fd()).await?;
            links::add_address(&host, &slot.host_veth, slot.host_address, LINK_PREFIX).await?;
            links::set_up(&host, &slot.host_veth, None).await?;

            links::add_address(&inside, UPLINK, slot.sandbox_address, LINK_PREFIX).await?;
            links::set_up(&inside, UPLINK, None).await?;
            links::set_up(&inside, "lo", None).await?;
            tap::create(TAP_NAME)?;
            links::set_up(&inside, TAP_NAME, Some(links::parse_mac(TAP_MAC)?)).await?;
            links::add_address(&inside, TAP_NAME, GATEWAY, GUEST_PREFIX).await?;
            links::add_default_route(&inside, slot.host_address).await?;

            sysctl::enable_ipv4_forwarding()?;
            slot_table::install()
        })
    })
    .await
}

/// Removes `slot`: the host's end of the veth pair (which takes the slot's
/// end with it), then the namespace, which the kernel frees with its tap
/// and table in the background. The veth goes first and synchronously, so
/// that its name is free again when this returns; that deletion, tens of
/// milliseconds of RCU grace periods in the kernel, is most of the cost.
/// Fails if the namespace does not exist.
pub async fn tear_down(slot: &NetSlot) -> Result<(), NetError> {
    let slot = slot.clone();
    let what = format!("deleting slot {}", slot.netns);
    worker::on_own_thread(&what.clone(), move || {
        let veth = slot.host_veth.clone();
        // A half-made slot may have no veth: fine either way.
        let _ = worker::block_on(&what, async move {
            let host = links::connect("the host")?;
            links::delete(&host, &veth).await
        });
        netns::delete(&slot.netns)
    })
    .await
}
