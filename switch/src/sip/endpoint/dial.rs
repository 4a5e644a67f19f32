//! Calls between SIP users: `dial(SIP/user)` makes the switch a back-to-back
//! user agent. The caller's INVITE waits (100 Trying, then the callee's
//! ringing relayed as 180) while the switch INVITEs the user's newest
//! registered contact; the callee's answer is ACKed and relayed as our 200,
//! and RTP is relayed between the two legs through the one media socket.
//! A user with no registration gets 480 with FreeSWITCH's reason,
//! `USER_NOT_REGISTERED`.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::{codec_name, host_port, negotiate, SipEndpoint, SipSocket, USER_AGENT};
use crate::dialplan::App;
use crate::event::Event;
use crate::sip::call::{CallMedia, Dialog, Negotiated, Outbound, SipCall};
use crate::sip::header::{Contact, Method};
use crate::sip::message::{Headers, Request, Response};
use crate::sip::sdp::SessionDescription;
use crate::sip::transaction;
use crate::sip::uri::Uri;

/// The user of a `SIP/user` dial target.
pub(super) fn sip_user(target: &str) -> Option<&str> {
    let (tech, user) = target.split_once('/')?;
    (tech.eq_ignore_ascii_case("SIP") && !user.is_empty() && !user.contains(['/', '@', ' '])).then_some(user)
}

/// The ACK for a non-2xx final response to our INVITE (RFC 3261 17.1.1.3):
/// the INVITE's Request-URI, top Via, From, Call-ID and CSeq number, and the
/// response's To (with the callee's tag).
pub(super) fn ack_for_failure(invite: &Request, response: &Response) -> Vec<u8> {
    let mut headers = Headers::default();
    for name in ["Via", "Max-Forwards", "From"] {
        if let Some(v) = invite.headers.get(name) {
            headers.push(name, v);
        }
    }
    if let Some(to) = response.headers.get("To") {
        headers.push("To", to);
    }
    if let Some(v) = invite.headers.get("Call-ID") {
        headers.push("Call-ID", v);
    }
    let seq = invite.cseq().map_or(1, |c| c.seq);
    headers.push("CSeq", format!("{seq} ACK"));
    Request { method: Method::Ack, uri: invite.uri.clone(), headers, body: Vec::new() }.encode()
}

impl SipEndpoint {
    /// `dial(SIP/user)` for the pending inbound call `a`.
    pub(super) fn dial(&mut self, now: Instant, a: u32, target: &str, chosen: &Negotiated) {
        let Some(user) = sip_user(target).map(str::to_string) else { return };
        let Some(binding) = self.registrar.bindings(now, &user).pop() else {
            return self.reject_inbound(now, a, 480, "USER_NOT_REGISTERED");
        };
        let Some(caller) = self.calls.get(&a) else { return };
        let (display, caller_user) = caller
            .pending
            .as_ref()
            .and_then(|r| r.from().ok())
            .map(|f| (f.display.clone(), f.uri.user.clone().unwrap_or_default()))
            .unwrap_or_default();
        let local_ip = match (caller.dialog.local_ip, binding.source.ip()) {
            (ours, theirs) if ours.is_ipv4() == theirs.is_ipv4() => ours,
            (_, theirs) => {
                self.settings.external_ip.filter(|ip| ip.is_ipv4() == theirs.is_ipv4()).unwrap_or(if theirs.is_ipv4() {
                    IpAddr::from([127, 0, 0, 1])
                } else {
                    IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
                })
            }
        };

        let b = self.next_call;
        self.next_call = self.next_call.wrapping_add(1).max(1);
        let host = local_ip.to_string();
        let call_id = transaction::new_call_id(&mut self.rng, &host);
        let tag = transaction::new_tag(&mut self.rng);
        let branch = transaction::new_branch(&mut self.rng);
        let port = self.settings.listen.port();
        let ours = host_port(local_ip, port);
        let bracketed = if local_ip.is_ipv6() { format!("[{local_ip}]") } else { host.clone() };
        let from_uri = match display {
            Some(d) => format!("\"{}\" <sip:{caller_user}@{bracketed}>", d.replace(['"', '\\'], "")),
            None => format!("<sip:{caller_user}@{bracketed}>"),
        };
        let to_uri = format!("<sip:{user}@{bracketed}>");
        let offer = Negotiated { remote: SocketAddr::new(binding.source.ip(), 0), ..chosen.clone() };
        let sdp = self.sdp(local_ip, &offer);

        let target = Uri::parse(&binding.contact).unwrap_or_else(|_| Uri::sip(Some(&user), binding.source.to_string()));
        let mut headers = Headers::default();
        headers.push("Via", format!("SIP/2.0/UDP {ours};branch={branch};rport"));
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("{from_uri};tag={tag}"));
        headers.push("To", to_uri.clone());
        headers.push("Call-ID", call_id.clone());
        headers.push("CSeq", "1 INVITE");
        headers.push("Contact", format!("<sip:switch@{ours}>"));
        headers.push("Allow", super::ALLOW);
        headers.push("User-Agent", USER_AGENT);
        headers.push("Content-Type", "application/sdp");
        let invite = Request { method: Method::Invite, uri: target, headers, body: sdp.clone() };

        let dialog = Dialog {
            call_id: call_id.clone(),
            local_tag: tag.clone(),
            remote_tag: String::new(),
            local_uri: from_uri,
            remote_uri: to_uri,
            remote_target: binding.contact.clone(),
            signalling: binding.source,
            local_ip,
            local_cseq: 1,
            remote_cseq: 0,
        };
        let media = CallMedia::new(now, &offer, &App::Dial { target: String::new() }, b as u16, &mut self.rng);
        let callee = SipCall {
            id: b,
            exten: user.clone(),
            dialog,
            media,
            started: now,
            answered: false,
            confirmed: false,
            invite: None,
            pending: None,
            outbound: Some(Outbound { branch: format!("{branch}|INVITE"), ack: None }),
            peer: Some(a),
            local_sdp: sdp,
        };
        self.by_dialog.insert((call_id, tag), b);
        self.calls.insert(b, callee);
        if let Some(caller) = self.calls.get_mut(&a) {
            caller.peer = Some(b);
        }
        self.events.push_back(Event::SipCallStarted {
            call: b,
            user: user.clone(),
            exten: user,
            context: String::new(),
            caller: caller_user,
        });
        self.start_client(now, invite, binding.source, Some(b));
    }

    /// A new response to our INVITE on callee leg `b`.
    pub(super) fn on_callee_response(&mut self, now: Instant, b: u32, response: &Response) {
        let Some(callee) = self.calls.get(&b) else { return };
        let a = callee.peer;
        match response.status {
            100 => {}
            101..=199 => {
                if let Some(a) = a {
                    self.ring_inbound(now, a);
                }
            }
            200..=299 => {
                let answer = SessionDescription::parse(&response.body).ok().and_then(|sdp| negotiate(&sdp));
                let Some(callee) = self.calls.get_mut(&b) else { return };
                callee.answered = true;
                callee.confirmed = true;
                if let Ok(to) = response.to() {
                    callee.dialog.remote_tag = to.tag().unwrap_or_default().to_string();
                }
                if let Ok(Some(Contact::Addrs(addrs))) = response.contact() {
                    if let Some(first) = addrs.first() {
                        callee.dialog.remote_target = first.uri.to_string();
                    }
                }
                if let Some(answer) = &answer {
                    callee.media.offered = answer.remote;
                }
                let codec = codec_name(callee.media.codec);
                let (ack, destination) = self.in_dialog_request(b, Method::Ack, false);
                if let Some(ack) = ack {
                    let bytes = ack.encode();
                    if let Some(out) = self.calls.get_mut(&b).and_then(|c| c.outbound.as_mut()) {
                        out.ack = Some(bytes.clone());
                    }
                    self.send(SipSocket::Signalling, destination, bytes);
                }
                self.events.push_back(Event::SipCallAnswered { call: b, codec: codec.into() });
                self.expect_media(b);
                match a {
                    Some(a) => self.answer_inbound(now, a),
                    None => self.hang_up(now, b, "the caller is gone"),
                }
            }
            status => self.callee_failed(now, b, status, &response.reason),
        }
    }

    /// The callee leg `b` failed before answering: the caller gets its status.
    pub(super) fn callee_failed(&mut self, now: Instant, b: u32, status: u16, reason: &str) {
        let Some(callee) = self.forget(b) else { return };
        self.events.push_back(Event::SipCallRejected {
            call: b,
            exten: callee.exten.clone(),
            status,
            reason: reason.to_string(),
        });
        if let Some(a) = callee.peer {
            if let Some(caller) = self.calls.get_mut(&a) {
                caller.peer = None;
            }
            // A timeout towards the callee is "temporarily unavailable" to the caller.
            let status = if status == 408 { 480 } else { status };
            self.reject_inbound(now, a, status, reason);
        }
    }

    /// 180 Ringing to a pending inbound call.
    fn ring_inbound(&mut self, now: Instant, a: u32) {
        let Some(caller) = self.calls.get(&a) else { return };
        let Some(request) = caller.pending.as_ref() else { return };
        let (key, tag) = (caller.invite.clone().unwrap_or_default(), caller.dialog.local_tag.clone());
        let mut ringing = self.response(request, caller.dialog.signalling, 180);
        super::set_to_tag(&mut ringing, &tag);
        self.respond(now, &key, &ringing);
    }

    /// CANCEL of our INVITE on callee leg `b` (RFC 3261 9.1).
    pub(super) fn cancel(&mut self, now: Instant, b: u32) {
        let Some(callee) = self.calls.get(&b) else { return };
        let Some(out) = &callee.outbound else { return };
        let Some(super::Client { txn: super::ClientTxn::Invite { invite, .. }, .. }) = self.clients.get(&out.branch)
        else {
            return;
        };
        let mut headers = Headers::default();
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(v) = invite.headers.get(name) {
                headers.push(name, v);
            }
        }
        headers.push("CSeq", format!("{} CANCEL", invite.cseq().map_or(1, |c| c.seq)));
        let cancel = Request { method: Method::Cancel, uri: invite.uri.clone(), headers, body: Vec::new() };
        let destination = callee.dialog.signalling;
        self.start_client(now, cancel, destination, None);
    }

    /// A retransmitted 2xx to an INVITE whose transaction is over: ACK it again.
    pub(super) fn resend_ack(&mut self, response: &Response) {
        let (Ok(call_id), Ok(from)) = (response.call_id(), response.from()) else { return };
        let Some(tag) = from.tag() else { return };
        let Some(id) = self.by_dialog.get(&(call_id.to_string(), tag.to_string())).copied() else { return };
        let Some(call) = self.calls.get(&id) else { return };
        if let Some(ack) = call.outbound.as_ref().and_then(|o| o.ack.clone()) {
            let destination = call.dialog.signalling;
            self.send(SipSocket::Signalling, destination, ack);
        }
    }
}
