//! Link layers: from a record's bytes to the IP packet it carries.

/// pcap LINKTYPE_* values this reader understands.
pub mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    /// DLT_RAW as some BSDs number it.
    pub const RAW_BSD12: u32 = 12;
    /// DLT_RAW on OpenBSD.
    pub const RAW_BSD14: u32 = 14;
    pub const RAW: u32 = 101;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

/// A link type's name, for summaries.
pub fn link_name(link: u32) -> String {
    match link {
        linktype::NULL => "null/loopback (BSD)".into(),
        linktype::ETHERNET => "Ethernet".into(),
        linktype::RAW | linktype::RAW_BSD12 | linktype::RAW_BSD14 => "raw IP".into(),
        linktype::LOOP => "OpenBSD loopback".into(),
        linktype::LINUX_SLL => "Linux cooked (SLL)".into(),
        linktype::IPV4 => "raw IPv4".into(),
        linktype::IPV6 => "raw IPv6".into(),
        linktype::LINUX_SLL2 => "Linux cooked v2 (SLL2)".into(),
        other => format!("link type {other}"),
    }
}

/// What a record's link layer holds.
pub(crate) enum Link<'a> {
    /// An IP packet (IPv4 or IPv6, by its version nibble).
    Ip(&'a [u8]),
    /// Something other than IP (ARP, STP, LLC, ...): counted, not a problem.
    NotIp,
    /// The link layer itself is broken or unknown.
    Broken(String),
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]))
}

fn by_ethertype(ethertype: u16, payload: &[u8]) -> Link<'_> {
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Link::Ip(payload),
        _ => Link::NotIp,
    }
}

/// Strips the link layer of `link` from `data`.
pub(crate) fn strip(link: u32, data: &[u8]) -> Link<'_> {
    match link {
        linktype::ETHERNET => ethernet(data),
        linktype::RAW | linktype::RAW_BSD12 | linktype::RAW_BSD14 | linktype::IPV4 | linktype::IPV6 => {
            match data.first().map(|b| b >> 4) {
                Some(4 | 6) => Link::Ip(data),
                Some(v) => Link::Broken(format!("raw IP packet with IP version {v}")),
                None => Link::Broken("empty record".into()),
            }
        }
        linktype::LINUX_SLL => match (be16(data, 14), data.get(16..)) {
            (Some(proto), Some(payload)) => by_ethertype(proto, payload),
            _ => Link::Broken(format!("Linux cooked header needs 16 bytes, record has {}", data.len())),
        },
        linktype::LINUX_SLL2 => match (be16(data, 0), data.get(20..)) {
            (Some(proto), Some(payload)) => by_ethertype(proto, payload),
            _ => Link::Broken(format!("Linux cooked v2 header needs 20 bytes, record has {}", data.len())),
        },
        linktype::NULL | linktype::LOOP => {
            let Some(fam) = data.get(..4) else {
                return Link::Broken(format!("loopback header needs 4 bytes, record has {}", data.len()));
            };
            let fam_bytes = [fam[0], fam[1], fam[2], fam[3]];
            // NULL is in the capturing host's byte order, LOOP in network order.
            let family = if link == linktype::LOOP {
                u32::from_be_bytes(fam_bytes)
            } else {
                let le = u32::from_le_bytes(fam_bytes);
                if le < 0x100 {
                    le
                } else {
                    u32::from_be_bytes(fam_bytes)
                }
            };
            match family {
                // AF_INET; AF_INET6 on Linux, the BSDs and macOS.
                2 | 10 | 24 | 28 | 30 => Link::Ip(&data[4..]),
                _ => Link::NotIp,
            }
        }
        other => Link::Broken(format!("unsupported link type {other}")),
    }
}

fn ethernet(data: &[u8]) -> Link<'_> {
    let Some(mut ethertype) = be16(data, 12) else {
        return Link::Broken(format!("Ethernet header needs 14 bytes, record has {}", data.len()));
    };
    let mut at = 14;
    // 802.1Q / QinQ tags.
    while ETHERTYPE_VLAN.contains(&ethertype) {
        match be16(data, at + 2) {
            Some(t) => {
                ethertype = t;
                at += 4;
            }
            None => return Link::Broken("VLAN tag cut short".into()),
        }
    }
    if ethertype <= 1500 {
        return Link::NotIp; // 802.3 length field: LLC (STP, CDP, ...)
    }
    by_ethertype(ethertype, &data[at..])
}
