//! Inbound INVITEs: routing into the dialplan, the SDP answer, 200/ACK,
//! CANCEL, and requests inside an answered dialog (BYE, re-INVITE, INFO).

use super::*;
use crate::sip::nat;

impl SipEndpoint {
    pub(super) fn on_invite(&mut self, now: Instant, from: SocketAddr, key: String, request: &Request, size: usize) {
        if request.max_forwards() == Some(0) {
            let response = self.response(request, from, 483);
            return self.reply_stateless(from, &response);
        }
        let Auth::Ok(user) = self.authenticate(now, from, request, true) else { return };
        if self.calls.len() >= self.settings.max_calls
            || !self.txns.admit(now, invite_estimate(&key, size), Priority::Call, &mut self.events)
        {
            let mut response = self.response(request, from, 503);
            response.headers.push("Retry-After", "5");
            return self.reply_stateless(from, &response);
        }
        let id = self.next_call;
        self.next_call = self.next_call.wrapping_add(1).max(1);
        let exten = request.uri.user_unescaped().unwrap_or_else(|| "s".into());
        let context = user.context.clone().unwrap_or_else(|| self.settings.context.clone());
        let caller = request.from().map(|f| f.uri.user_unescaped().unwrap_or_default()).unwrap_or_default();
        self.events.push_back(Event::SipCallStarted {
            call: id,
            user: user.name.clone(),
            exten: exten.clone(),
            context: context.clone(),
            caller,
        });

        let txn = InviteServerTransaction::new(now, self.timers, Transport::Unreliable);
        self.txns.insert_server(key.clone(), Server::new(txn, from));
        let trying = self.response(request, from, 100);
        self.respond(now, &key, &trying);

        let route = self.dialplan.route(&context, &exten);
        // The dialplan's own hangup (`Wait` then `Hangup`) counts from the answer, which is now.
        let hangup = route.as_ref().and_then(|r| r.hangup);
        let (hangup_at, hangup_cause) = (hangup.map(|h| now + h.after), hangup.map(|h| h.cause));
        let app = route.map(|r| r.app);
        let refusal = match &app {
            None => Some((404, format!("no extension {exten} in context {context}"))),
            Some(App::Hangup { cause }) => Some((q850_to_sip(*cause), format!("hangup({cause})"))),
            Some(App::Dial { target }) if dial::sip_user(target).is_none() => {
                Some((501, format!("dial({target}) from SIP: only SIP/user targets are supported")))
            }
            Some(_) => None,
        };
        if let Some((status, reason)) = refusal {
            return self.reject_invite(now, from, &key, request, id, &exten, status, &reason);
        }
        let Some(app) = app else { return };
        let offer = match SessionDescription::parse(&request.body) {
            Ok(sdp) if !request.body.is_empty() => sdp,
            _ => return self.reject_invite(now, from, &key, request, id, &exten, 488, "no SDP offer"),
        };
        let Some(mut chosen) = negotiate(&offer) else {
            return self.reject_invite(now, from, &key, request, id, &exten, 488, "no PCMU or PCMA in the offer");
        };
        chosen.remote = nated_media(request, from, chosen.remote);

        let local_ip = self.advertised_ip(request, from);
        let local_tag = self.to_tag(request);
        let Ok(to) = request.to() else { return };
        let Ok(caller) = request.from() else { return };
        let remote_target = match request.contact() {
            Ok(Some(Contact::Addrs(a))) if !a.is_empty() => a[0].uri.to_string(),
            _ => caller.uri.to_string(),
        };
        let (Ok(call_id), Ok(cseq)) = (request.call_id(), request.cseq()) else { return };
        // Last of the checks, so a refused INVITE never holds a port.
        let Some(port) = self.allocate_port(now) else {
            let range = &self.settings.rtp_ports;
            let reason = format!("no free RTP port in rtp_ports {}-{}", range.start(), range.end());
            return self.reject_invite(now, from, &key, request, id, &exten, 503, &reason);
        };
        let dialog = Dialog {
            call_id: call_id.to_string(),
            local_tag: local_tag.clone(),
            remote_tag: caller.tag().unwrap_or_default().to_string(),
            local_uri: without_tag(&to),
            remote_uri: without_tag(&caller),
            remote_target,
            signalling: from,
            local_ip,
            local_cseq: self.rng.next_u32() & 0x7fff_ffff,
            remote_cseq: cseq.seq,
        };
        let strict = self.strict_rtp(now, chosen.remote, from.ip());
        let media = CallMedia::new(now, &chosen, &app, id as u16, port, strict, &mut self.rng);
        let local_sdp = self.sdp(local_ip, &chosen, port);
        self.route_port(id, port);
        if let Some(server) = self.txns.servers.get_mut(&key) {
            server.call = Some(id);
        }
        self.by_dialog.insert((dialog.call_id.clone(), local_tag), id);
        let call = SipCall {
            id,
            exten,
            dialog,
            media,
            started: now,
            answered: false,
            confirmed: false,
            invite: Some(key),
            pending: Some(request.clone()),
            outbound: None,
            peer: None,
            local_sdp,
            hangup_at,
            hangup_cause,
            // Answered once the port is bound; a bridge answers when its callee does.
            awaiting_port: !matches!(app, App::Dial { .. }),
        };
        self.calls.insert(id, call);
        if let App::Dial { target } = &app {
            self.dial(now, id, target, &chosen);
        }
    }

    /// Sends the 200 with our SDP for a pending inbound call.
    pub(super) fn answer_inbound(&mut self, now: Instant, id: u32) {
        let port = self.settings.listen.port();
        let Some(call) = self.calls.get_mut(&id) else { return };
        let Some(request) = call.pending.take() else { return };
        call.answered = true;
        call.media.last_received = now;
        call.media.strict.open_window(now);
        self.watch_media(id);
        let Some(call) = self.calls.get(&id) else { return };
        let (from, key) = (call.dialog.signalling, call.invite.clone().unwrap_or_default());
        let contact = format!("<sip:{}@{}>", exten_for_uri(&call.exten), host_port(call.dialog.local_ip, port));
        let (tag, sdp, codec) = (call.dialog.local_tag.clone(), call.local_sdp.clone(), codec_name(call.media.codec));
        let mut ok = self.response(&request, from, 200);
        set_to_tag(&mut ok, &tag);
        ok.headers.push("Contact", contact);
        ok.headers.push("Allow", ALLOW);
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = sdp;
        self.respond(now, &key, &ok);
        self.events.push_back(Event::SipCallAnswered { call: id, codec: codec.into() });
        self.media_tick_from(now);
    }

    /// Ends a pending inbound call with a final error response.
    pub(super) fn reject_inbound(&mut self, now: Instant, id: u32, status: u16, reason: &str) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let Some(request) = call.pending.take() else { return };
        let (from, key, exten) = (call.dialog.signalling, call.invite.clone().unwrap_or_default(), call.exten.clone());
        let peer = self.forget(now, id).and_then(|c| c.peer);
        self.reject_invite(now, from, &key, &request, id, &exten, status, reason);
        if let Some(peer) = peer {
            self.hang_up(now, peer, reason);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn reject_invite(
        &mut self,
        now: Instant,
        from: SocketAddr,
        key: &str,
        request: &Request,
        id: u32,
        exten: &str,
        status: u16,
        reason: &str,
    ) {
        self.events.push_back(Event::SipCallRejected {
            call: id,
            exten: exten.to_string(),
            status,
            reason: reason.to_string(),
        });
        let response = self.response(request, from, status);
        self.respond(now, key, &response);
    }

    pub(super) fn on_ack(&mut self, now: Instant, key: &str, request: &Request) {
        // The ACK of a non-2xx shares the INVITE's branch; the ACK of our 2xx
        // is a new transaction inside the dialog (RFC 3261 17.1.1.3, 13.2.2.4).
        if let Some(server) = self.txns.servers.get_mut(key) {
            if server.txn.on_ack(now) != AckOutcome::Unexpected {
                return;
            }
        }
        let Some(id) = self.dialog_of(request) else { return };
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.confirmed = true;
        if let Some(invite) = call.invite.clone() {
            if let Some(server) = self.txns.servers.get_mut(&invite) {
                server.txn.on_ack(now);
            }
        }
    }

    pub(super) fn on_cancel(&mut self, now: Instant, from: SocketAddr, invite_key: &str, request: &Request) {
        let call = self.txns.servers.get(invite_key).and_then(|s| s.call);
        let status = if self.txns.servers.contains(invite_key) { 200 } else { 481 };
        let response = self.response(request, from, status);
        self.reply_stateless(from, &response);
        // Only a call still ringing its callee can be cancelled; an answered
        // one is ended by the caller's BYE (RFC 3261 9.2).
        if let Some(id) = call.filter(|id| self.calls.get(id).is_some_and(|c| c.pending.is_some())) {
            self.reject_inbound(now, id, 487, "cancelled by the caller");
        }
    }

    pub(super) fn in_dialog(&mut self, now: Instant, from: SocketAddr, key: String, request: Request, size: usize) {
        let Some(id) = self.dialog_of(&request) else {
            let response = self.response(&request, from, 481);
            return self.reply_stateless(from, &response);
        };
        let cseq = request.cseq().map(|c| c.seq).unwrap_or(0);
        let Some(call) = self.calls.get_mut(&id) else { return };
        if cseq <= call.dialog.remote_cseq && request.method != Method::Invite {
            let response = self.response(&request, from, 500);
            return self.reply_stateless(from, &response);
        }
        call.dialog.remote_cseq = call.dialog.remote_cseq.max(cseq);
        match request.method {
            Method::Bye => {
                let response = self.response(&request, from, 200);
                self.reply_in_transaction(now, from, key, &response);
                self.end_call(now, id, "remote BYE");
            }
            Method::Invite if !self.txns.admit(now, invite_estimate(&key, size), Priority::Call, &mut self.events) => {
                // The dialog stays as it was (RFC 3261 14.2).
                let mut response = self.response(&request, from, 503);
                response.headers.push("Retry-After", "5");
                self.reply_stateless(from, &response);
            }
            Method::Invite => {
                // A re-INVITE (session refresh, hold): keep our answer. Only a
                // new address restarts learning; a refresh keeps the source.
                if let Ok(offer) = SessionDescription::parse(&request.body) {
                    if let Some(chosen) = negotiate(&offer) {
                        let remote = nated_media(&request, from, chosen.remote);
                        if remote != call.media.offered {
                            call.media.move_to(now, remote, from.ip());
                        }
                    }
                }
                let mut ok = self.response(&request, from, 200);
                if let Some(call) = self.calls.get(&id) {
                    ok.headers.push("Content-Type", "application/sdp");
                    ok.body = call.local_sdp.clone();
                }
                let txn = InviteServerTransaction::new(now, self.timers, Transport::Unreliable);
                self.txns.insert_server(key.clone(), Server::new(txn, from));
                self.respond(now, &key, &ok);
            }
            Method::Info | Method::Options => {
                let response = self.response(&request, from, 200);
                self.reply_in_transaction(now, from, key, &response);
            }
            _ => {
                let mut response = self.response(&request, from, 501);
                response.headers.push("Allow", ALLOW);
                self.reply_in_transaction(now, from, key, &response);
            }
        }
    }

    pub(super) fn dialog_of(&self, request: &Request) -> Option<u32> {
        let call_id = request.call_id().ok()?;
        let to = request.to().ok()?;
        self.by_dialog.get(&(call_id.to_string(), to.tag()?.to_string())).copied()
    }

    /// The address written into Contact and SDP: `external_ip`, else a bound
    /// address, else the one the caller used to reach us.
    pub(super) fn advertised_ip(&self, request: &Request, from: SocketAddr) -> IpAddr {
        if let Some(ip) = self.settings.external_ip {
            return ip;
        }
        for ip in [self.settings.rtp, self.settings.listen.ip()] {
            if !ip.is_unspecified() {
                return ip;
            }
        }
        let host = request.uri.host.trim_matches(|c| c == '[' || c == ']');
        match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv4() == from.is_ipv4() => ip,
            _ if from.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    }

    pub(super) fn sdp(&mut self, ip: IpAddr, chosen: &Negotiated, port: u16) -> Vec<u8> {
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let session = self.rng.next_u32();
        let mut formats = chosen.payload_type.to_string();
        let mut attributes = format!("a=rtpmap:{} {}/8000\r\n", chosen.payload_type, codec_name(chosen.codec));
        if let Some(pt) = chosen.dtmf {
            let _ = write!(formats, " {pt}");
            let _ = write!(attributes, "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n");
        }
        format!(
            "v=0\r\no=switch {session} 1 IN {family} {ip}\r\ns=switch\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {formats}\r\n{attributes}a=ptime:20\r\na=sendrecv\r\n"
        )
        .into_bytes()
    }
}

/// Where a caller's RTP should go, as Kamailio's fix_nated_sdp: a phone
/// behind NAT writes its inside address in the SDP, which cannot be reached;
/// its signalling source IP with the SDP's port can, until strict RTP learns
/// the real source. Only when the SDP shows the inside address (private
/// behind a routable source, or the Via's own address that the source
/// contradicts): a provider whose media server is elsewhere is left alone.
pub(super) fn nated_media(request: &Request, from: SocketAddr, remote: SocketAddr) -> SocketAddr {
    let (ip, source) = (remote.ip().to_canonical(), from.ip().to_canonical());
    if ip == source || remote.port() == 0 {
        return remote;
    }
    let via_ip = request
        .top_via()
        .ok()
        .and_then(|v| v.host.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical());
    if nat::private_behind_public(ip, source) || (via_ip == Some(ip) && via_ip != Some(source)) {
        SocketAddr::new(from.ip(), remote.port())
    } else {
        remote
    }
}

/// The memory an INVITE of `size` bytes is admitted with: its transaction
/// ends up holding a 200 with our SDP, about as large as the offer it answers.
fn invite_estimate(key: &str, size: usize) -> usize {
    Transactions::estimate(key, size)
}
