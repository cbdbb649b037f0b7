//! The host side of a naming's slots: IP forwarding, masquerade of guest
//! traffic, and a firewall that keeps guests off the host's own services and
//! out of each other's namespaces.

use crate::command::run;
use crate::error::NetError;
use crate::slot::SlotNaming;

fn table(naming: &SlotNaming) -> String {
    format!("hearth_{}", naming.prefix())
}

/// Installs (or replaces) the host table of `naming`'s slots and turns on
/// IPv4 forwarding.
pub async fn prepare(naming: &SlotNaming) -> Result<(), NetError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|source| NetError::Spawn {
        program: "writing /proc/sys/net/ipv4/ip_forward".into(),
        source,
    })?;
    let table = table(naming);
    let veths = format!("{}v*", naming.prefix());
    let subnet = naming.subnet();
    // `add` then `delete` makes the delete succeed whether or not the table
    // existed; the whole script is one transaction.
    let script = format!(
        "add table inet {table}\ndelete table inet {table}\n\
table inet {table} {{\n\
  chain input {{\n\
    type filter hook input priority filter; policy accept;\n\
    iifname \"{veths}\" ct state established,related accept\n\
    iifname \"{veths}\" drop\n\
  }}\n\
  chain forward {{\n\
    type filter hook forward priority filter; policy accept;\n\
    iifname \"{veths}\" oifname \"{veths}\" drop\n\
    oifname \"{veths}\" ct state established,related accept\n\
    oifname \"{veths}\" drop\n\
  }}\n\
  chain postrouting {{\n\
    type nat hook postrouting priority srcnat; policy accept;\n\
    ip saddr {subnet} oifname != \"{veths}\" masquerade\n\
  }}\n\
}}\n"
    );
    run("nft", &["-f", "-"], Some(&script)).await
}

/// Removes the host table of `naming`'s slots (forwarding stays on).
pub async fn remove(naming: &SlotNaming) -> Result<(), NetError> {
    let table = table(naming);
    run(
        "nft",
        &["-f", "-"],
        Some(&format!(
            "add table inet {table}\ndelete table inet {table}\n"
        )),
    )
    .await
}
