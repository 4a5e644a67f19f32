//! The control socket's views: `sip show registrations`, `sip show channels`, `show stats`.

use super::*;

impl SipEndpoint {
    /// `sip show registrations`.
    pub fn show_registrations(&self, now: Instant) -> String {
        let mut out = format!("{:<16} {:<40} {:<24} {:>7}\n", "User", "Contact", "Source", "Expires");
        let mut n = 0;
        for (user, bindings) in self.registrar.iter() {
            for b in bindings.iter().filter(|b| b.expires_at > now) {
                n += 1;
                let left = b.expires_at.saturating_duration_since(now).as_secs();
                let _ = writeln!(out, "{user:<16} {:<40} {:<24} {left:>7}", b.contact, b.source.to_string());
            }
        }
        let _ = writeln!(out, "{n} registration(s)");
        out
    }

    /// `sip show channels`.
    pub fn show_channels(&self, now: Instant) -> String {
        let mut out = format!(
            "{:>5} {:<16} {:<24} {:<6} {:>8} {:>8} {:>8}\n",
            "Call", "Call-ID", "Media", "Codec", "Sent", "Recv", "Secs"
        );
        for call in self.calls.values() {
            let id: String = call.dialog.call_id.chars().take(16).collect();
            let _ = writeln!(
                out,
                "{:>5} {id:<16} {:<24} {:<6} {:>8} {:>8} {:>8}",
                call.id,
                call.media.destination().to_string(),
                codec_name(call.media.codec),
                call.media.packets_sent,
                call.media.packets_received,
                now.saturating_duration_since(call.started).as_secs()
            );
        }
        let _ = writeln!(out, "{} active SIP call(s)", self.calls.len());
        out
    }

    /// `show stats`.
    pub fn show_stats(&self) -> String {
        let s = &self.stats;
        let mut out = format!(
            "sip datagrams_in={} datagrams_out={} rtp_in={} rtp_out={} challenges={} refreshes={} transactions={} calls={}\n",
            s.datagrams_in,
            s.datagrams_out,
            s.rtp_in,
            s.rtp_out,
            s.challenges,
            s.refreshes,
            self.txns.len(),
            self.calls.len()
        );
        for (reason, n) in &s.dropped {
            let _ = writeln!(out, "sip dropped {n:>8} {reason}");
        }
        out
    }
}
