//! Which tracked connections a slot leaves behind, and where: a guest's
//! connection is tracked in the slot's namespace (filtered, and masqueraded
//! to the slot's address) and again on the host (masqueraded out of it),
//! where its original source is the slot's address. A connection to the
//! guest (envd, the proxy) is tracked in both too, with the slot's address
//! as its original destination on the host.

use std::net::Ipv4Addr;

use crate::GUEST_ADDRESS;
use crate::conntrack::{Conntrack, End};
use crate::error::NetError;
use crate::slot::NetSlot;
use crate::{netns, worker};

/// After an egress change: forgets what the guest opened, so that each of
/// its connections is judged again by the new policy. Connections to the
/// guest stay (an envd stream must outlive a policy update). Runs in the
/// slot's namespace; `host` was opened in the host's.
pub fn forget_guest_opened(
    inside: &mut Conntrack,
    host: &mut Conntrack,
    slot_address: Ipv4Addr,
) -> Result<(), NetError> {
    // The slot first: from then on the guest's old packets are new there
    // and meet the policy, whatever the host still remembers.
    inside.forget(End::Source, GUEST_ADDRESS)?;
    host.forget(End::Source, slot_address)?;
    Ok(())
}

/// Before `slot` serves another sandbox: forgets every connection of the
/// one before, in the slot and on the host, both ways.
pub async fn forget_all(slot: &NetSlot) -> Result<(), NetError> {
    let netns = slot.netns.clone();
    let address = slot.sandbox_address;
    let what = format!("forgetting the connections of {netns}");
    worker::on_own_thread(&what, move || {
        // Opened before the thread leaves the host's namespace.
        let mut host = Conntrack::open("the host")?;
        netns::enter(&netns)?;
        Conntrack::open(&netns)?.flush()?;
        host.forget(End::Source, address)?;
        host.forget(End::Destination, address)?;
        Ok(())
    })
    .await
}
