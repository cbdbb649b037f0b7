//! CIDRs as the elements of an nftables interval set.
//!
//! The kernel keeps an interval set as boundaries: an element at each
//! range's first address, and one flagged "interval end" just past its
//! last. An address is in the set when the nearest boundary at or below it
//! starts a range. This is the encoding nft sends for the same set text.

use ipnet::Ipv4Net;
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, SetElementAttribute, SetElementFlags,
};

use super::batch::Element;

/// nft's element note "this range runs to the end of the address space"
/// (NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN), which the
/// kernel keeps for `nft list` to print such a range as a prefix.
const OPEN_INTERVAL_NOTE: [u8; 6] = [1, 4, 1, 0, 0, 0];

/// The disjoint ranges, sorted, that `nets` cover: overlapping or adjacent
/// networks merge, since the kernel refuses overlapping ranges (nft itself
/// fails on `{ 10.0.0.0/8, 10.1.0.0/16 }`) and membership is all that counts.
/// Ends are exclusive, so the last range may end at 2^32.
pub fn ranges(nets: &[Ipv4Net]) -> Vec<(u32, u64)> {
    let mut spans: Vec<(u32, u64)> = nets
        .iter()
        .map(|net| {
            let start = u32::from(net.network());
            (start, u64::from(u32::from(net.broadcast())) + 1)
        })
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u32, u64)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some((_, last_end)) if u64::from(start) <= *last_end => {
                *last_end = (*last_end).max(end);
            }
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The set elements for `nets`.
pub fn elements(nets: &[Ipv4Net]) -> Vec<Element> {
    let ranges = ranges(nets);
    let mut elements = Vec::with_capacity(ranges.len() * 2 + 1);
    // Like nft, close the space below the first range explicitly.
    if ranges.first().is_some_and(|(start, _)| *start != 0) {
        elements.push(boundary(0, true, false));
    }
    for (start, end) in ranges {
        match u32::try_from(end) {
            Ok(end) => {
                elements.push(boundary(start, false, false));
                elements.push(boundary(end, true, false));
            }
            // Up to 255.255.255.255: nothing lies past it to mark an end.
            Err(_) => elements.push(boundary(start, false, true)),
        }
    }
    elements
}

fn boundary(address: u32, end: bool, open: bool) -> Element {
    let mut attributes = vec![SetElementAttribute::Key(DataAttribute::Value(
        address.to_be_bytes().to_vec(),
    ))];
    if end {
        attributes.push(SetElementAttribute::Flags(SetElementFlags::IntervalEnd));
    }
    if open {
        attributes.push(SetElementAttribute::UserData(OPEN_INTERVAL_NOTE.to_vec()));
    }
    ListAttribute::Element(attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<Ipv4Net> {
        list.iter().filter_map(|n| n.parse().ok()).collect()
    }

    #[test]
    fn overlapping_and_adjacent_networks_merge() {
        let got = ranges(&nets(&[
            "10.1.0.0/16",
            "10.0.0.0/8",
            "11.0.0.0/8",
            "1.1.1.1/32",
        ]));
        assert_eq!(
            got,
            vec![(0x0101_0101, 0x0101_0102), (0x0a00_0000, 0x0c00_0000)]
        );
        assert_eq!(
            ranges(&nets(&["0.0.0.0/0", "8.8.8.8/32"])),
            vec![(0, 1 << 32)]
        );
        assert!(ranges(&[]).is_empty());
    }

    #[test]
    fn boundaries_are_encoded_as_nft_sends_them() {
        // { 1.1.1.1, 8.8.8.0/24 }: a closing element at 0, then start/end pairs.
        let got = elements(&nets(&["8.8.8.0/24", "1.1.1.1/32"]));
        let expected = vec![
            boundary(0, true, false),
            boundary(0x0101_0101, false, false),
            boundary(0x0101_0102, true, false),
            boundary(0x0808_0800, false, false),
            boundary(0x0808_0900, true, false),
        ];
        assert_eq!(got, expected);
        // 0.0.0.0/0: one open start element, nothing else.
        assert_eq!(
            elements(&nets(&["0.0.0.0/0"])),
            vec![boundary(0, false, true)]
        );
        // A range from 0 needs no closing element before it.
        assert_eq!(
            elements(&nets(&["0.0.0.0/8"])),
            vec![
                boundary(0, false, false),
                boundary(0x0100_0000, true, false)
            ]
        );
    }
}
