//! What the kernel says about a process and the host's UDP sockets: CPU time
//! and resident memory from /proc/PID, receive-buffer drops from /proc/net.

use std::net::Ipv4Addr;
use std::process::Command;

/// utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of /proc/PID/status, in KiB.
pub fn rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we run on).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Kernel UDP counters (/proc/net/snmp), for the whole host: receive-buffer drops.
pub fn udp_snmp(text: &str) -> Vec<(String, u64)> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return Vec::new() };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
        .collect()
}

/// The `drops` column of /proc/net/udp for the socket bound to 127.0.0.1:`port`.
pub fn socket_drops(text: &str, port: u16) -> Option<u64> {
    socket_drops_at(text, Ipv4Addr::LOCALHOST, port)
}

/// The same for the socket bound to `ip:port` (the kernel prints the
/// address as its 32 bits in host order, little-endian here: 127.0.2.1 is
/// `0102007F`).
pub fn socket_drops_at(text: &str, ip: Ipv4Addr, port: u16) -> Option<u64> {
    let local = format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str())).then(|| f.last()?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{parse_stats, stat};

    #[test]
    fn cpu_and_rss_from_proc() {
        let stat = "4242 (switch (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 2 0 999 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(rss_kib("Name:\tswitch\nVmRSS:\t   12345 kB\nThreads: 2\n"), Some(12345));
    }

    #[test]
    fn stats_and_kernel_counters() {
        let s = parse_stats("datagrams in: 10\ndatagrams out: 12\ndropped (no such call): 3\n");
        assert_eq!(stat(&s, "datagrams out"), Some(12));
        assert_eq!(stat(&s, "dropped (no such call)"), Some(3));
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 5 0 2 7 2\n";
        assert_eq!(stat(&udp_snmp(snmp), "RcvbufErrors"), Some(2));
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                   1: 0100007F:38D1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000 17\n";
        assert_eq!(socket_drops(udp, 0x38d1), Some(17));
        assert_eq!(socket_drops(udp, 1), None);
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                   1: 0102007F:38D1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000 5\n";
        assert_eq!(socket_drops_at(udp, Ipv4Addr::new(127, 0, 2, 1), 0x38d1), Some(5));
        assert_eq!(socket_drops(udp, 0x38d1), None);
    }
}
