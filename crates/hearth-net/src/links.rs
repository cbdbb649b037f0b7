//! Links, addresses and routes over rtnetlink. A [`Handle`] acts in the
//! namespace its socket was opened in, whatever thread later uses it, so a
//! slot's set-up holds one handle for the host and one for the slot.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::NetError;

/// An rtnetlink handle in the calling thread's current namespace. Call it
/// inside [`crate::worker::block_on`]: the connection runs on that loop.
pub fn connect(namespace: &str) -> Result<Handle, NetError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetError::system(
        format!("opening rtnetlink in {namespace}"),
    ))?;
    tokio::spawn(connection);
    Ok(handle)
}

pub async fn index_of(handle: &Handle, name: &str) -> Result<u32, NetError> {
    let what = || format!("looking up link {name}");
    handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(NetError::netlink(what()))?
        .map(|link| link.header.index)
        .ok_or_else(|| NetError::system(what())(std::io::ErrorKind::NotFound.into()))
}

/// A veth pair: `name` where `handle` is, `peer` straight into the
/// namespace open at `peer_netns` (as `ip link add … peer name … netns …`).
pub async fn add_veth(
    handle: &Handle,
    name: &str,
    peer: &str,
    peer_netns: RawFd,
) -> Result<(), NetError> {
    let peer_message = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_owned())
        .setns_by_fd(peer_netns)
        .build();
    let message = LinkVeth::new(name, peer)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
        .build();
    handle
        .link()
        .add(message)
        .execute()
        .await
        .map_err(NetError::netlink(format!(
            "adding veth {name} with peer {peer}"
        )))
}

pub async fn add_address(
    handle: &Handle,
    link: &str,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    let index = index_of(handle, link).await?;
    let mut request = handle.address().add(index, address.into(), prefix);
    // As `ip addr add` without `brd`: no broadcast address.
    request
        .message_mut()
        .attributes
        .retain(|attribute| !matches!(attribute, AddressAttribute::Broadcast(_)));
    request.execute().await.map_err(NetError::netlink(format!(
        "adding {address}/{prefix} to {link}"
    )))
}

/// Brings `link` up, first giving it `mac` if one is given.
pub async fn set_up(handle: &Handle, link: &str, mac: Option<[u8; 6]>) -> Result<(), NetError> {
    let mut message = LinkUnspec::new_with_name(link).up();
    if let Some(mac) = mac {
        message = message.address(mac.to_vec());
    }
    handle
        .link()
        .set(message.build())
        .execute()
        .await
        .map_err(NetError::netlink(format!("bringing {link} up")))
}

pub async fn add_default_route(handle: &Handle, via: Ipv4Addr) -> Result<(), NetError> {
    // `proto boot`, as `ip route add` marks it.
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(via)
        .protocol(RouteProtocol::Boot)
        .build();
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(NetError::netlink(format!(
            "adding the default route via {via}"
        )))
}

pub async fn delete(handle: &Handle, link: &str) -> Result<(), NetError> {
    let index = index_of(handle, link).await?;
    handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(NetError::netlink(format!("deleting {link}")))
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(text: &str) -> Result<[u8; 6], NetError> {
    let invalid = || {
        NetError::system(format!("parsing MAC address {text}"))(
            std::io::ErrorKind::InvalidInput.into(),
        )
    };
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(invalid)?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
    }
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() -> Result<(), NetError> {
        assert_eq!(
            parse_mac(crate::TAP_MAC)?,
            [0x02, 0x68, 0x65, 0x61, 0x72, 0x02]
        );
        assert!(parse_mac("02:68:65:61:72").is_err());
        assert!(parse_mac("02:68:65:61:72:02:03").is_err());
        assert!(parse_mac("02:68:65:61:72:zz").is_err());
        Ok(())
    }
}
